"""``govbus log``: the delivery log's evidence — verify the chain, against signed checkpoints
an agency holds; list and export the checkpoints (Art. 24, 26, 31; docs/security.md)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from govbus.core.errors import GovbusError


def _settings() -> Any:
    from govbus.core.config import Settings

    return Settings.from_env()


def read_checkpoints(path: str) -> list[Any]:
    """The checkpoints of a file `govbus log checkpoints --out` wrote (JSON lines), or
    GovbusError naming the line that is not one."""
    from govbus.delivery_log import MalformedEntry
    from govbus.delivery_log.checkpoints import parse

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GovbusError(f"--checkpoints {path}: cannot read it: {exc}") from exc
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                found.append(parse(line))
            except MalformedEntry as exc:
                raise GovbusError(f"--checkpoints {path} line {n}: {exc}") from exc
    if not found:
        raise GovbusError(f"--checkpoints {path} holds no checkpoint")
    return found


def _pinned(path: str | None) -> dict[str, Any] | None:
    """The information center's keys an agency pinned (``--checkpoint-key``, else
    ``GOVBUS_CHECKPOINT_PUBLIC_KEY_FILE``), read without a database; None when neither."""
    from govbus.core import signatures
    from govbus.core.config import read_env

    named = path or read_env()["checkpoint_public_key_file"]
    if not named:
        return None
    keys = signatures.load_public_file(named, "checkpoint public key file")
    return {signatures.key_id(k): k for k in keys}


def verify_archive(args: argparse.Namespace) -> int:
    """``log verify --archive FILE``: no database, no broker."""
    from govbus.delivery_log import archive

    found = archive.read(args.archive)
    pinned = _pinned(args.checkpoint_key)
    report = archive.verify(found, pinned)
    h = found.header
    note = (f"archive {args.archive}: {archive.describe(archive.ranges(h))}, "
            f"{len(found.checkpoints)} checkpoint(s), checked with "
            + ("the pinned keys" if pinned else "the archive's own keys (pin the information "
               "center's with --checkpoint-key)"))
    if args.json:
        print(json.dumps(report.as_dict() | {"archive": h, "pinned": bool(pinned)},
                         ensure_ascii=False, indent=2))
    else:
        first = next((p for p in report.problems if p.seq is not None), None)
        lines = [*report.lines(), f"  {note}"]
        if first is not None:
            lines.append(f"  first break at {first.where()}{first.kind}")
        print("\n".join(lines))
    return 0 if report.ok else 1


def cmd_export(args: argparse.Namespace) -> int:
    import datetime as dt

    from govbus.delivery_log import archive

    try:
        start, end = dt.date.fromisoformat(args.start), dt.date.fromisoformat(args.end)
    except ValueError as exc:
        raise GovbusError(f"--from/--to: expected YYYY-MM-DD ({exc})") from exc
    if end < start:
        raise GovbusError(f"--to {end} is before --from {start}")
    out = archive.export_dates(_settings().database_url, start, end, Path(args.out))
    print(json.dumps(out) if args.json else
          f"{out['rows']} rows ({out['span']}) written to "
          f"{out['file']}, sha256 {out['sha256']}; check it anywhere with `govbus log verify "
          f"--archive {out['file']}`")
    return 0


def cmd_archive(args: argparse.Namespace) -> int:
    from govbus.core.config import state_dir
    from govbus.delivery_log import archive

    path = Path(args.out) if args.out else state_dir() / "archives" / f"log-{args.month}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    out = archive.archive_month(_settings().database_url, args.month, path)
    print(json.dumps(out) if args.json else
          f"{args.month}: {out['span']} archived to {out['file']} "
          f"(sha256 {out['sha256']}, verified) and {out['deleted']} rows deleted from the "
          "database; keep the file: `govbus log verify --archive` checks it")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    if args.archive:
        return verify_archive(args)
    from govbus import delivery_log
    from govbus.core.keyring import checkpoint_publics
    from govbus.delivery_log import checkpoint_store
    from govbus.delivery_log.checkpoints import check_series, log_rows, log_shard

    settings = _settings()
    dsn = settings.database_url
    recorded = checkpoint_store.list_checkpoints(dsn)
    given = read_checkpoints(args.checkpoints) if args.checkpoints else recorded
    keys = checkpoint_publics(settings, dsn, args.checkpoint_key)
    valid, findings = check_series(given, keys)
    if args.checkpoints:  # the agency's copies against what the bus still records
        ours = {c.number: c for c in recorded}
        for cp in valid:
            if cp.number not in ours:
                findings.append(_finding(cp.number, "checkpoint_missing", f"checkpoint "
                                         f"{cp.number} is not in the bus's log_checkpoints "
                                         "(deleted)"))
            elif ours[cp.number].digest != cp.digest:
                findings.append(_finding(cp.number, "checkpoint_altered", f"the bus's "
                                         f"checkpoint {cp.number} differs from the one kept"))
    report = delivery_log.verify(dsn, checkpoints=valid)
    for f in findings:
        report.add_problem(f.seq, f.kind, f.message)
    latest = valid[-1] if valid else None
    against = (f"checked against {len(valid)} checkpoint(s)"
               + (f", the latest #{latest.number} covering {log_rows(latest.heads)} rows in "
                  f"{sum(log_shard(n) is not None for n in latest.heads)} shard(s)"
                  if latest else "")
               + (f" from {args.checkpoints}" if args.checkpoints else " of the bus"))
    data = report.as_dict() | {"checkpoints": len(valid),
                               "latest_checkpoint": latest.number if latest else None}
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        print("\n".join([*report.lines(), f"  {against}"]))
    return 0 if report.ok else 1


def _finding(number: int, kind: str, message: str) -> Any:
    from govbus.delivery_log.checkpoints import Finding

    return Finding(number, None, kind, message)


def cmd_checkpoints(args: argparse.Namespace) -> int:
    from govbus.delivery_log import checkpoint_store

    if args.from_dsn:
        found = checkpoint_store.kept(args.from_dsn)
    else:
        found = checkpoint_store.list_checkpoints(_settings().database_url, args.limit)
    if args.out:
        path = Path(args.out).expanduser()
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(json.dumps(c.as_dict()) + "\n" for c in found),
                       encoding="utf-8")
        os.replace(tmp, path)
        print(f"{len(found)} checkpoint(s) written to {path}; verify with `govbus log verify "
              f"--checkpoints {path}`")
    elif args.json:
        print(json.dumps([c.as_dict() for c in found], indent=2))
    else:
        for c in found:
            heads = ", ".join(f"{n} seq {h.seq} {h.row_hash[:12]}…"
                              for n, h in sorted(c.heads.items()))
            print(f"#{c.number:<6} {_when(c.at_us)}  {heads}  key {c.key_id}")
        if not found:
            print("no checkpoints" + (" kept in that database" if args.from_dsn else
                                      " yet: the checkpointer takes the first within "
                                      "GOVBUS_CHECKPOINT_INTERVAL_S"))
    return 0


def _when(at_us: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(at_us / 1e6, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def checkpoint_args(p: argparse.ArgumentParser) -> None:
    """``--checkpoints FILE --checkpoint-key FILE``, for every verify that binds a chain to
    signed checkpoints (`log verify`, `audit verify`)."""
    p.add_argument("--checkpoints", metavar="FILE", help="checkpoints an agency kept (`log "
                   "checkpoints --from-dsn DSN --out FILE`); default: the bus's own")
    p.add_argument("--checkpoint-key", metavar="FILE", help="the information center's public "
                   "key(s) to check them with; default: $GOVBUS_CHECKPOINT_PUBLIC_KEY_FILE, "
                   "else the registered ones")


def register(sub: Any, add: Any) -> None:
    log = sub.add_parser("log", help="the tamper-evident delivery log and its checkpoints")
    lsub = log.add_subparsers(dest="log", required=True, metavar="ACTION")
    p = add("verify", cmd_verify, "recompute the hash chain, against signed checkpoints; "
            "exit 1 on any alteration, truncation or rewrite", parent=lsub)
    checkpoint_args(p)
    p.add_argument("--archive", metavar="FILE", help="check an archive (`log export`, `log "
                   "archive`) alone: no database, no broker")
    p = add("export", cmd_export, "write the rows logged on some days, their checkpoints and "
            "the keys to a self-contained archive", parent=lsub)
    p.add_argument("--from", dest="start", required=True, metavar="YYYY-MM-DD")
    p.add_argument("--to", dest="end", required=True, metavar="YYYY-MM-DD",
                   help="the last day included (UTC)")
    p.add_argument("--out", required=True, metavar="FILE")
    p = add("archive", cmd_archive, "archive the oldest month to a verified file and delete "
            "its rows from the database", parent=lsub)
    p.add_argument("--month", required=True, metavar="YYYY-MM")
    p.add_argument("--out", metavar="FILE", help="default: <state dir>/archives/"
                   "log-YYYY-MM.jsonl")
    p = add("checkpoints", cmd_checkpoints, "list or export the signed checkpoints",
            parent=lsub)
    p.add_argument("--out", metavar="FILE", help="write them as JSON lines")
    p.add_argument("--from-dsn", metavar="DSN", help="those an agency's subscriber kept in "
                   "its own database, instead of the bus's")
    p.add_argument("--limit", type=int, help="only the newest N")
