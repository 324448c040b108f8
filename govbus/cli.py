"""The ``govbus`` command. Every listing takes ``--json``; errors go to stderr with exit 1."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from govbus.core.errors import GovbusError

Handler = Callable[[argparse.Namespace], int]
#: exit status after the reader of stdout went away (``| head``): 128 + SIGPIPE, as a shell
#: reports a process killed by the signal
SIGPIPE_EXIT = 141
SCHEMAS_ENV = "GOVBUS_SCHEMAS_DIR"

# what a terminal acts on instead of showing: C0 controls (ESC, BEL, CR, LF, ...), DEL, C1
# controls (U+0080-U+009F: CSI, OSC in 8-bit form), the line and paragraph separators, and
# the bidirectional overrides and isolates that reorder what is shown around them
_CONTROLS = "\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069"
_UNSAFE = re.compile(f"[{_CONTROLS}]")
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e"
                             "\u2066-\u2069]")  # json.dumps escapes the C0 ones itself
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    c = match.group()
    return _SHORT.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def printable(text: Any) -> str:
    """Free text (a reason, a note, a complaint, a value) as a terminal may show it: every
    control character, line separator and bidi override written as an escape (``\\x1b``,
    ``\\n``, ``\\u202e``), so a note cannot recolour, retitle or rewrite the reader's
    terminal nor forge a line of output; every other character, Chinese included, unchanged."""
    return _UNSAFE.sub(_escape, str(text))


def dumps(data: Any) -> str:
    """``--json`` output: UTF-8 text as is, control characters as JSON ``\\u`` escapes (those
    json.dumps leaves raw with ensure_ascii=False too: DEL, C1, separators, bidi controls)."""
    text = json.dumps(data, ensure_ascii=False, indent=2, default=str)
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def emit(args: argparse.Namespace, data: Any, text: Callable[[], None]) -> None:
    if getattr(args, "json", False):
        print(dumps(data))
    else:
        text()


def say(message: str) -> None:
    print(message, flush=True)


def schemas_dir() -> Path:
    """The catalogue every command reads: ``--schemas``, which :func:`main` puts in
    ``GOVBUS_SCHEMAS_DIR`` for the command (and what it starts), else that variable, else the
    shipped schemas/ (the one path :class:`Settings` reads too). Every setting is checked."""
    from govbus.core.config import read_env

    return Path(read_env()["schemas_dir"])


def catalogue(strict: bool = True) -> Any:
    from govbus.core.catalogue import load_catalogue

    return load_catalogue(schemas_dir(), strict=strict)


# --- runtime ---------------------------------------------------------------------------------

def cmd_up(args: argparse.Namespace) -> int:
    from govbus import runtime

    info = runtime.up(say=say, partitions=args.partitions)
    shown = "up" if info["up"] else "DEGRADED (see `govbus status`)"
    emit(args, info, lambda: say(f"govbus is {shown}: broker {info['bootstrap_servers']}, "
                                 f"database {info['database_url']}, HTTP service "
                                 f"{info.get('api_url')} (docs at /docs)"))
    return 0 if info["up"] else 1


def cmd_down(args: argparse.Namespace) -> int:
    from govbus import runtime

    runtime.down(say=say)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from govbus import runtime

    info = runtime.status()

    def text() -> None:
        if not info.get("state_dir") or "components" not in info:
            say(f"govbus is down (state dir {info['state_dir']})")
            return
        say(f"govbus is {'up' if info['up'] else 'DEGRADED'}: broker "
            f"{info['bootstrap_servers']}, database {info['database_url']}")
        for name, comp in info["components"].items():
            shown = comp.get("state") or ("running" if comp["alive"] else "STOPPED")
            restarts = f"  restarts {comp['restarts']}" if "restarts" in comp else ""
            say(f"  {name:<12} pid {comp['pid'] or '-':<8} {shown}{restarts}")
        if info.get("api_url"):
            say(f"HTTP service {info['api_url']} (OpenAPI {info['api_url']}/openapi.json, "
                f"docs {info['api_url']}/docs)")
        if info.get("supervisor_log"):
            say(f"supervisor: restarts counted since `govbus up`; log {info['supervisor_log']}")
        if info.get("prometheus_url"):
            say(f"prometheus {info['prometheus_url']} (metrics ports: "
                + ", ".join(f"{n} {p}" for n, p in info.get("metrics_ports", {}).items()) + ")")

    emit(args, info, text)
    return 0 if info.get("up") or "components" not in info else 1


def cmd_serve(args: argparse.Namespace) -> int:
    from govbus.api.serve import serve

    serve(args.host, args.port)
    return 0


# --- catalogue -------------------------------------------------------------------------------

def _catalogue(args: argparse.Namespace, strict: bool = True) -> Any:
    return catalogue(strict=strict)


def _database_url() -> str | None:
    from govbus.core.config import database_url

    return database_url()


def cmd_catalogue_check(args: argparse.Namespace) -> int:
    from govbus.core.catalogue_check import check_catalogue, errors_only
    from govbus.core.registry import registered_contracts

    catalogue = _catalogue(args, strict=False)
    registered: dict[str, list[dict[str, Any]]] | None = None
    note: str | None = "no database configured: compatibility with registered " \
                             "versions not checked (run `govbus up` or set DATABASE_URL)"
    url = _database_url()
    if url and not args.offline:
        try:
            registered, note = registered_contracts(url), None
        except GovbusError as exc:
            note = f"registry unreachable, compatibility not checked: {exc}"
    findings = check_catalogue(catalogue, registered)
    errors = errors_only(findings)

    def text() -> None:
        for f in findings:
            say(printable(f))
        if note:
            say(f"note: {note}")
        say(f"{len(catalogue.resources)} resources checked: {len(errors)} error(s), "
            f"{len(findings) - len(errors)} warning(s)")

    emit(args, {"resources": len(catalogue.resources), "errors": len(errors),
                "findings": [f.as_dict() for f in findings], "note": note}, text)
    return 1 if errors else 0


def cmd_catalogue_sync(args: argparse.Namespace) -> int:
    """The information center's bulk import of the catalogue folder (Art. 13: the center
    revises the catalogue); agencies change entries by proposals (`catalogue propose`)."""
    from govbus.core import access, db, registry

    url = _database_url()
    if not url:
        raise GovbusError("DATABASE_URL not set and no embedded runtime is running: run "
                          "`govbus up` first, or set DATABASE_URL")
    db.migrate(url)
    access.require(url, access.INFORMATION_CENTER, args.token_file)
    results = registry.sync(url, _catalogue(args), actor=access.INFORMATION_CENTER)
    def text() -> None:
        for r in results:
            say(f"{r.resource_id:<42} v{r.version:<3} schema id {r.schema_id:<4} {r.status}")

    emit(args, [r.__dict__ for r in results], text)
    return 0


def _registered(args: argparse.Namespace) -> Any:
    """The service's client when the command line acts through it: the catalogue is then the
    registered one, not the files (only ``--schemas`` names files to read)."""
    from govbus.api.client import client

    return None if args.schemas else client(getattr(args, "token_file", None))


def cmd_catalogue_list(args: argparse.Namespace) -> int:
    if http := _registered(args):
        rows = http.get("/v1/catalogue")
    else:
        rows = [res.summary() for res in _catalogue(args)]
    for row in rows:
        row.pop("fields")
    def text() -> None:
        for r in rows:
            say(f"{r['resource']:<42} {r['share_class']:<15} {r['database_class']:<13} "
                f"every {r['update_period']:<4} {printable(r['title'])}")

    emit(args, rows, text)
    return 0


def cmd_catalogue_show(args: argparse.Namespace) -> int:
    if http := _registered(args):
        info = http.get(f"/v1/catalogue/{args.resource}")
    else:
        agency, _, name = args.resource.partition(".")
        info = _catalogue(args).get(agency, name).summary()

    def text() -> None:
        for key, value in info.items():
            if key != "fields":
                say(f"{key:<18} {printable(value)}")
        say("fields:")
        for f in info["fields"]:
            flags = [k for k in ("source_of_record", "sensitive") if f[k]]
            extra = [f"identifier={f['identifier']}"] if f["identifier"] else []
            extra += [f"canonical={f['canonical']}"] if f["canonical"] else []
            say(f"  {f['name']:<26} {json.dumps(f['type'], ensure_ascii=False):<30} "
                f"{' '.join(extra + flags)}")

    emit(args, info, text)
    return 0


# --- publishing ------------------------------------------------------------------------------

def read_jsonl(path: str) -> Iterator[tuple[int, Any, str | None]]:
    """(line number, parsed object or None, parse error) for each non-blank line."""
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    with stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line), None
            except json.JSONDecodeError as exc:
                yield number, None, f"not valid JSON: {exc}"


def _outbox(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``govbus outbox``; through the HTTP service's registry when the CLI is its client."""
    from govbus.api.client import client, client_settings, service_registry
    from govbus.producers import outbox

    http = client(None)
    if http is None:
        return outbox.run(args, parser)
    return outbox.run(args, parser, client_settings(http), service_registry(http))


def cmd_publish(args: argparse.Namespace) -> int:
    from govbus.api.client import client, client_settings, service_registry
    from govbus.producers.publisher import Change, Publisher

    try:
        lines = list(read_jsonl(args.file))
    except OSError as exc:
        raise GovbusError(f"cannot read {args.file}: {exc.strerror}") from exc
    http = client(None)
    publisher = Publisher(client_settings(http), key_file=args.key_file,
                          registry=service_registry(http) if http else None)
    good = [(n, obj) for n, obj, err in lines if err is None]
    changes = []
    for _, obj in good:
        change = Change.from_json(obj)
        change.locality = change.locality or args.locality
        changes.append(change)
    report = publisher.publish(args.agency, args.resource, changes)
    refusals: list[dict[str, Any]] = [
        {"line": n, "violations": [{"rule": "input.json", "field": "line", "article": "Art. 11",
                                    "message": err}]}
        for n, _, err in lines if err is not None]
    refusals += [{"line": good[r.index][0], "violations": [v.as_dict() for v in r.violations]}
                 for r in report.refused]
    refusals.sort(key=lambda r: r["line"])
    out = report.as_dict() | {"refused": len(refusals), "refusals": refusals,
                              "read": len(lines)}

    def text() -> None:
        for r in refusals:
            for v in r["violations"]:
                # the message may quote the input line: escaped (printable)
                say(f"line {r['line']}: refused: {v['rule']} [{v['article']}] "
                    f"{printable(v['field'])}: {printable(v['message'])}")
        for failure in report.failed:
            say(f"not acknowledged: {printable(failure)}")
        say(f"{args.agency}.{args.resource}: {len(lines)} read, {report.published} published "
            f"to ingest.{args.agency}.{args.resource}, {len(refusals)} refused, "
            f"{len(report.failed)} failed")

    emit(args, out, text)
    return 1 if report.failed else (3 if refusals else 0)


def cmd_demo(args: argparse.Namespace) -> int:
    from govbus import demo

    return demo.run(args)


# --- parser ----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="govbus", description="Government data-exchange bus (Yushui District Measures).")
    parser.add_argument("--version", action="version", version=f"govbus {version()}")
    parser.add_argument("--schemas", metavar="DIR", help="catalogue folder every command reads "
                        f"(default: ${SCHEMAS_ENV}, else the shipped schemas/)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help_: str, json_out: bool = True,
            parent: Any = sub) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_, description=help_)
        if json_out:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(handler=handler)
        return p

    p = add("up", cmd_up, "start (or reuse) the embedded runtime and the stream apps; "
                           "run again, it starts the stream apps that died")
    p.add_argument("--partitions", type=int, default=None,
                   help="partitions per topic created (default: GOVBUS_PARTITIONS, else 3)")
    add("down", cmd_down, "stop exactly what `up` started", json_out=False)
    add("status", cmd_status, "show what runs and where it listens")
    p = add("serve", cmd_serve, "the HTTP service agencies call (OpenAPI at /openapi.json, "
            "docs at /docs); `govbus up` runs one", json_out=False)
    p.add_argument("--host", help="interface (default: GOVBUS_API_HOST, else 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: GOVBUS_API_PORT, else 8480)")

    cat = sub.add_parser("catalogue", help="the catalogue of data contracts (Art. 7, 13)")
    csub = cat.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = add("check", cmd_catalogue_check, "check every contract; exit 1 on errors", parent=csub)
    p.add_argument("--offline", action="store_true",
                   help="do not compare with registered versions")
    p = add("sync", cmd_catalogue_sync, "the information center's bulk import: register the "
            "folder's contracts and new versions", parent=csub)
    from govbus import cli_catalogue  # proposals and the yearly review (Art. 13)
    from govbus.cli_access import token_arg

    token_arg(p)
    from govbus.cli_access import token_arg

    p = add("list", cmd_catalogue_list, "list the resources (through the service: the "
            "registered ones)", parent=csub)
    token_arg(p)
    p = add("show", cmd_catalogue_show, "show one resource", parent=csub)
    p.add_argument("resource", help="agency.resource, e.g. public_security.population_register")
    token_arg(p)
    cli_catalogue.register(csub, add)

    p = add("publish", cmd_publish, "publish JSON-lines records as Avro change events "
            "(exit 3 when some lines were refused)")
    p.add_argument("--agency", required=True)
    p.add_argument("--resource", required=True)
    p.add_argument("--file", required=True, help="JSON lines; '-' reads stdin")
    p.add_argument("--locality", default=None,
                   help="administrative division code for lines without one (360502)")
    p.add_argument("--key-file", help="the agency's Ed25519 private key the events are signed "
                   "with (default: $GOVBUS_SIGNING_KEY_FILE, else the embedded runtime's)")

    from govbus.producers import outbox

    p = sub.add_parser("outbox", help="relay an agency's transactional outbox to the bus",
                       description=outbox.DESCRIPTION)
    outbox.add_arguments(p)
    p.set_defaults(handler=lambda args, p=p: _outbox(args, p))
    from govbus import cli_sharing

    cli_sharing.register(sub, add)
    from govbus import cli_commitments  # security commitments, agreements (Art. 24, 25)

    cli_commitments.register(sub, add)
    from govbus import cli_cases  # cases, objections, complaints

    cli_cases.register(sub, add)
    from govbus import cli_access  # agency credentials (Art. 24)

    cli_access.register(sub, add)
    from govbus import cli_keys  # signing keys of agencies and of the bus (Art. 8, 24)

    cli_keys.register(sub, add)
    from govbus import cli_audit  # the control plane's audit ledger (docs/evidence.md)

    cli_audit.register(sub, add)
    from govbus import cli_quarantine

    cli_quarantine.register(sub, add)
    from govbus import cli_notices  # an agency's notices and their acknowledgement (Art. 18)

    cli_notices.register(sub, add)
    from govbus import cli_calendar  # working days of deadlines (docs/calendar.md)

    cli_calendar.register(sub, add)
    from govbus import cli_purge  # retention (Art. 25, docs/retention.md)

    cli_purge.register(sub, add)
    from govbus import cli_config  # the effective settings, the docs' table

    cli_config.register(sub, add)
    p = add("demo", cmd_demo, "start everything, publish a realistic sample, summarise, stop")
    p.add_argument("--events", type=int, default=3000, help="events to publish (3000)")
    p.add_argument("--seed", type=int, default=2018, help="random seed (2018)")
    p.add_argument("--keep", action="store_true", help="leave the runtime up afterwards")
    return parser


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("govbus")
    except PackageNotFoundError:
        return "(not installed)"


#: commands whose options scripts write after a ``--`` (``govbus subscribe -- --agency B``)
DASHDASH = ("outbox", "subscribe", "acl")


def _without_dashdash(argv: list[str]) -> list[str]:
    for i, word in enumerate(argv[:-1]):
        if word in DASHDASH:
            return argv[:i + 1] + argv[i + 2:] if argv[i + 1] == "--" else argv
    return argv


@contextlib.contextmanager
def _schemas(folder: str | None) -> Iterator[None]:
    """``--schemas DIR`` as ``GOVBUS_SCHEMAS_DIR`` while the command runs: every catalogue
    read (Settings.schemas_dir, :func:`schemas_dir`, processes started) sees DIR."""
    if not folder:
        yield
        return
    path = Path(folder).expanduser().resolve()
    if not path.is_dir():
        raise GovbusError(f"--schemas {folder}: no such catalogue folder")
    before = os.environ.get(SCHEMAS_ENV)
    os.environ[SCHEMAS_ENV] = str(path)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(SCHEMAS_ENV, None)
        else:
            os.environ[SCHEMAS_ENV] = before


def _stdout_gone() -> int:
    """The reader of stdout left (``| head``): the rest of the output goes nowhere, quietly
    (the Python documentation's note on SIGPIPE), and the exit status says so."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a file (captured)
        pass
    return SIGPIPE_EXIT


def main(argv: list[str] | None = None) -> int:
    try:
        code = _run(list(sys.argv[1:] if argv is None else argv))
        sys.stdout.flush()  # a pipe closed early shows here, not at interpreter exit
    except BrokenPipeError:
        return _stdout_gone()
    return code


def _run(argv: list[str]) -> int:
    args = build_parser().parse_args(_without_dashdash(argv))
    try:
        with _schemas(args.schemas):
            return int(args.handler(args) or 0)
    except GovbusError as exc:
        print("govbus: error: " + "\n".join(printable(line) for line in str(exc).split("\n")),
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("govbus: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
