"""``govbus commitments``: security commitments (Art. 24) and confidentiality agreements
(Art. 25) as registered documents.

An agency registers the commitment it signed (number, kind, the resources and purpose it
covers, the day signed, the end of its validity, the SHA-256 of the signed document) before it
applies for data under it; a request names it with --commitment (or --confidentiality). Its
withdrawal, by the agency or the information center, ends every grant resting on it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from govbus.cli import catalogue, dumps, printable
from govbus.cli_access import token_arg
from govbus.core.errors import GovbusError


def _dsn() -> str:
    from govbus.core.config import Settings

    return Settings.from_env().database_url


def _service(args: argparse.Namespace) -> Any:
    from govbus.api.client import client

    return client(getattr(args, "token_file", None))


def _emit(args: argparse.Namespace, data: Any, lines: list[str]) -> None:
    print(dumps(data) if getattr(args, "json", False) else "\n".join(lines))


def _line(c: dict[str, Any]) -> str:
    return (f"{c['number']:<24} {c['kind']:<15} {c['agency']:<18} {c['state']:<14} until "
            f"{str(c['ends_at'])[:19]}  {','.join(c['resources'])}")


def _digest(args: argparse.Namespace) -> str:
    from govbus.core.commitments import document_digest

    if args.document:
        try:
            data = Path(args.document).read_bytes()
        except OSError as exc:
            raise GovbusError(f"--document {args.document}: {exc.strerror}",
                              rule="commitment.document") from exc
        return document_digest(None, data)
    return document_digest(args.sha256, None)


def cmd_register(args: argparse.Namespace) -> int:
    from govbus.core import commitments

    resources = [r.strip() for r in args.resources.split(",") if r.strip()]
    digest = _digest(args)
    signed_on = commitments.parse_day(args.signed_on)
    valid_until = commitments.parse_until(args.valid_until)
    if http := _service(args):
        out = http.post("/v1/commitments", {
            "agency": args.agency, "number": args.number, "kind": args.kind,
            "resources": resources, "purpose": args.purpose, "signed_on": args.signed_on,
            "valid_until": args.valid_until, "sha256": digest})
    else:
        from govbus.core import commitments_store
        from govbus.core.access import require

        require(_dsn(), args.agency, args.token_file)  # Art. 24: an agency signs its own
        out = commitments_store.register(_dsn(), args.number, args.kind, args.agency,
                                         resources, args.purpose, signed_on, valid_until,
                                         digest, args.agency, known=catalogue().resources)
    _emit(args, out, [f"{out['kind']} {out['number']} of {out['agency']} registered: "
                      f"{','.join(out['resources'])}, until {str(out['ends_at'])[:19]}, "
                      f"document sha256 {out['document_sha256']}"])
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    if http := _service(args):
        rows = http.get("/v1/commitments", agency=args.agency)
    else:
        from govbus.core import commitments_store

        rows = commitments_store.list_commitments(_dsn(), args.agency)
    _emit(args, rows, [_line(c) for c in rows] or ["no commitments"])
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    if http := _service(args):
        out = http.get(f"/v1/commitments/{args.number}")
    else:
        from govbus.core import commitments_store

        out = commitments_store.get(_dsn(), args.number)
    lines = [_line(out), f"  purpose: {printable(out['purpose'])}",
             f"  signed on {out['signed_on']}, document sha256 {out['document_sha256']}",
             f"  restrictions: {', '.join(out['restrictions'])} (Art. 24)",
             f"  grants resting on it: {', '.join(map(str, out['grants'])) or 'none'}"]
    if out.get("withdrawn_at"):
        lines.append(f"  withdrawn at {out['withdrawn_at'][:19]} by {out['withdrawn_by']}: "
                     f"{printable(out['withdraw_reason'])}")
    _emit(args, out, lines)
    return 0


def cmd_withdraw(args: argparse.Namespace) -> int:
    if http := _service(args):
        out = http.post(f"/v1/commitments/{args.number}/withdraw",
                        {"reason": args.reason, "agency": args.actor})
    else:
        from govbus.core import access, commitments_store

        actor = args.actor or access.agency_of(access.token_from(args.token_file) or "")
        access.require(_dsn(), actor, args.token_file)
        out = commitments_store.withdraw(_dsn(), args.number, actor, args.reason)
    ended = ", ".join(map(str, out["grants_ended"])) or "none"
    _emit(args, out, [f"{out['number']} withdrawn by {out['withdrawn_by']}; grants ended: "
                      f"{ended}"])
    return 0


def register(sub: Any, add: Any) -> None:
    """Add ``govbus commitments`` to the parser."""
    grp = sub.add_parser("commitments", help="security commitments and confidentiality "
                         "agreements (Art. 24, 25)",
                         description=__doc__.split("\n\n")[1].replace("\n", " "))
    csub = grp.add_subparsers(dest="commitments", required=True, metavar="ACTION")
    p = add("register", cmd_register, "register a signed commitment or agreement of an "
            "agency (itself)", parent=csub)
    p.add_argument("--agency", required=True, help="the agency that signed it")
    p.add_argument("--number", required=True, help="the document's number, e.g. SC-2026-017")
    p.add_argument("--kind", required=True, choices=["security", "confidentiality"],
                   help="security commitment (Art. 24) or confidentiality agreement (Art. 25)")
    p.add_argument("--resources", required=True, help="comma-separated agency.resource ids "
                   "it covers (agency.* for all of an agency's)")
    p.add_argument("--purpose", required=True, help="the duties the data serves (Art. 24)")
    p.add_argument("--signed-on", required=True, help="YYYY-MM-DD")
    p.add_argument("--valid-until", required=True, help="YYYY-MM-DD (its last second, UTC) "
                   "or an ISO 8601 instant")
    doc = p.add_mutually_exclusive_group(required=True)
    doc.add_argument("--document", metavar="FILE", help="the signed document: its SHA-256 "
                     "is registered")
    doc.add_argument("--sha256", metavar="HEX", help="the signed document's SHA-256")
    token_arg(p)
    p = add("list", cmd_list, "registered commitments and agreements, with their state",
            parent=csub)
    p.add_argument("--agency", help="only this agency's")
    token_arg(p)
    p = add("show", cmd_show, "one commitment, with the grants resting on it", parent=csub)
    p.add_argument("number")
    token_arg(p)
    p = add("withdraw", cmd_withdraw, "withdraw a commitment early (its agency or the "
            "information center): the grants resting on it lapse", parent=csub)
    p.add_argument("number")
    p.add_argument("--reason", required=True)
    p.add_argument("--as", dest="actor", help="the withdrawing agency (default: the "
                   "token's)")
    token_arg(p)
