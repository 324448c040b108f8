"""``govbus`` commands for reconciliation cases (Art. 8, 20), objections (Art. 19) and
complaints (Art. 29). Overdue items stand out in text output; every listing takes ``--json``."""

from __future__ import annotations

import argparse
from typing import Any

from govbus.cli import catalogue, dumps, printable
from govbus.cli_access import service, token_arg
from govbus.core.access import require

OVERDUE = "  ** OVERDUE **"


def _dsn() -> str:
    from govbus.core.config import Settings

    return Settings.from_env().database_url


def _emit(args: argparse.Namespace, data: Any, lines: list[str]) -> None:
    if getattr(args, "json", False):
        print(dumps(data))
    else:
        print("\n".join(lines))


def case_lines(c: dict[str, Any]) -> list[str]:
    """A case in text: a header line, then one line per value and who holds it; the values
    and the note are the agencies' free text, escaped (:func:`govbus.cli.printable`)."""
    state = c["status"] + (f" ({printable(c['resolution'])})" if c.get("resolution") else "")
    head = (f"case {c['id']:<5} {printable(c['entity_key'])}  {printable(c['attribute'])}  "
            f"owner {c['owner_agency']}  {state}  due {str(c['deadline'])[:10]}"
            + (OVERDUE if c["overdue"] else ""))
    values = [f"    {'★' if v.get('source_of_record') else ' '} {v['agency']:<18} "
              f"{printable(repr(v['value']))}" for v in c["values"]]
    note = ([f"    note by {printable(c['resolved_by'])}: {printable(c['note'])}"]
            if c.get("note") else [])
    return [head, *values, *note]


def cmd_cases_list(args: argparse.Namespace) -> int:
    from govbus.core import cases_store

    http = service(args)
    if http:  # the caller's cases (every case for the information center and the office)
        rows = http.get("/v1/cases", agency=args.agency, status=args.status,
                        overdue=args.overdue, entity=args.entity)
    else:
        rows = cases_store.list_cases(_dsn(), args.agency, args.status, args.overdue,
                                      args.entity)
    lines = [line for c in rows for line in case_lines(c)]
    if rows and not args.json:
        n_open = sum(c["status"] == "open" for c in rows)
        lines.append(f"{len(rows)} case(s), {n_open} open, "
                     f"{sum(c['overdue'] for c in rows)} overdue")
    _emit(args, rows, lines or ["no cases"])
    return 0


def cmd_cases_resolve(args: argparse.Namespace) -> int:
    from govbus.core import cases_store

    http = service(args)
    if http:
        out = http.post(f"/v1/cases/{args.case_id}/resolve", {
            "resolution": args.resolution, "note": args.note, "agency": args.actor})
    else:
        require(_dsn(), args.actor, args.token_file)  # Art. 24: only the owner's credential
        out = cases_store.resolve(_dsn(), args.case_id, args.actor, args.resolution, args.note)
    _emit(args, out, [f"case {args.case_id}: resolved ({printable(args.resolution)}) by "
                      f"{args.actor}"])
    return 0


def objection_lines(o: dict[str, Any]) -> list[str]:
    """An objection or complaint in text; who filed it, the subject and every step's detail
    (reasons, answers) are free text, escaped (:func:`govbus.cli.printable`)."""
    subject = printable(" ".join(str(x) for x in (o.get("resource"), o.get("entity_key")) if x))
    head = (f"{o['kind']} {o['id']:<5} by {printable(o['filed_by'])} against "
            f"{printable(o['against_agency'])}"
            f"{'  ' + subject if subject else ''}  {o['status']}  due {str(o['deadline'])[:10]}"
            + (OVERDUE if o["overdue"] else ""))
    steps = [f"    {str(h['at'])[:19]}  {printable(h['actor']):<18} {h['action']:<9} "
             f"{printable(h['detail'])}"
             for h in o["history"]]
    return [head, *steps]


def cmd_objection_file(args: argparse.Namespace) -> int:
    from govbus.core import objections

    http = service(args)
    if http:
        body = {"against": args.against, "resource": args.resource, "key": args.key,
                "event_id": args.event_id, "reason": args.reason, "agency": args.actor}
        path = "/v1/complaints" if args.kind == "complaint" else "/v1/objections"
        out = http.post(path, {k: v for k, v in body.items() if v is not None})
    else:
        require(_dsn(), args.actor, args.token_file)  # Art. 24: one agency cannot file as another
        out = objections.file(_dsn(), catalogue(), args.kind, args.actor,
                              args.against, args.resource, args.key, args.event_id, args.reason)
    handler = "the information center and the provider" if out["kind"] == "objection" else (
        "the municipal office")
    _emit(args, out, [f"{out['kind']} {out['id']} filed; {handler} answer by "
                      f"{str(out['deadline'])[:10]}"])
    return 0


def cmd_objection_answer(args: argparse.Namespace) -> int:
    from govbus.core import objections

    http = service(args)
    if http:
        out = http.post(f"/v1/objections/{args.objection_id}/answer",
                        {"answer": args.answer, "agency": args.actor})
    else:
        require(_dsn(), args.actor, args.token_file)
        out = objections.answer(_dsn(), args.objection_id, args.actor, args.answer)
    _emit(args, out, [f"{out['kind']} {out['id']} answered by {args.actor}"])
    return 0


def cmd_objection_list(args: argparse.Namespace) -> int:
    from govbus.core import objections

    http = service(args)
    if http:  # filed by or against the caller (every one for the center and the office)
        rows = http.get("/v1/objections", kind=args.kind, agency=args.agency,
                        status=args.status, overdue=args.overdue)
    else:
        rows = objections.list_all(_dsn(), args.kind, args.agency, args.status, args.overdue)
    _emit(args, rows, [line for o in rows for line in objection_lines(o)]
          or [f"no {args.kind or 'objection'}s"])
    return 0


def _objection_commands(sub: Any, add: Any, name: str, kind: str | None) -> None:
    group = sub.add_parser(name, help=f"{name}s (Art. {19 if name == 'objection' else 29})")
    gsub = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = add("file", cmd_objection_file, f"file a{'n' if name == 'objection' else ''} {name}",
            parent=gsub)
    p.add_argument("--as", dest="actor", required=True, help="who files it")
    p.add_argument("--against", required=True, help="the agency concerned")
    p.add_argument("--resource", help="agency.resource the objection is about")
    p.add_argument("--key", help="entity key of the record concerned")
    p.add_argument("--event-id", help="the event received (checked in the delivery log)")
    p.add_argument("--reason", required=True)
    token_arg(p)
    if kind is None:
        p.add_argument("--kind", choices=["objection", "complaint"], default="objection")
    else:
        p.set_defaults(kind=kind)
    p = add("answer", cmd_objection_answer, f"answer an open {name}", parent=gsub)
    p.add_argument("objection_id", type=int)
    p.add_argument("--as", dest="actor", required=True,
                   help="the provider or information_center; municipal_office for complaints")
    p.add_argument("--answer", required=True)
    token_arg(p)
    p = add("list", cmd_objection_list, f"list {name}s with their history", parent=gsub)
    p.add_argument("--agency", help="filed by or against this agency")
    p.add_argument("--status", choices=["open", "answered", "withdrawn"])
    p.add_argument("--overdue", action="store_true")
    token_arg(p)
    if kind is None:
        p.add_argument("--kind", choices=["objection", "complaint"])
    else:
        p.set_defaults(kind=kind)


def register(sub: Any, add: Any) -> None:
    """Add ``cases``, ``objection`` and ``complaint`` to the ``govbus`` parser."""
    cases = sub.add_parser("cases", help="reconciliation cases (Art. 8, 20)")
    csub = cases.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = add("list", cmd_cases_list, "list cases; overdue ones first and marked", parent=csub)
    p.add_argument("--agency", help="owned by or involving this agency")
    p.add_argument("--status", choices=["open", "closed", "resolved"])
    p.add_argument("--overdue", action="store_true", help="open past their deadline")
    p.add_argument("--entity", help="entity key, e.g. company:91360502…")
    token_arg(p)
    p = add("resolve", cmd_cases_resolve, "resolve an open case (the source of record only)",
            parent=csub)
    p.add_argument("case_id", type=int)
    p.add_argument("--as", dest="actor", required=True, help="the owner agency")
    p.add_argument("--resolution", required=True, help="corrected | confirmed | dismissed")
    p.add_argument("--note", required=True)
    token_arg(p)
    _objection_commands(sub, add, "objection", None)
    _objection_commands(sub, add, "complaint", "complaint")
