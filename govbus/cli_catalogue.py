"""``govbus catalogue propose|proposals|proposal|approve|reject|review|reviews-due``: catalogue
changes as proposals the information center decides, and the yearly review (Art. 13).

Through the HTTP service when the command line is its client (``GOVBUS_API_URL``, the agency's
token), else directly on the database after :func:`govbus.core.access.require`.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from govbus.cli import dumps, printable
from govbus.cli_access import token_arg
from govbus.core.access import INFORMATION_CENTER, require
from govbus.core.errors import ForbiddenError, GovbusError

#: exit status of ``propose`` when the proposal was stored but its checks found errors
CHECKS_FAILED_EXIT = 3


def _dsn() -> str:
    """The database, for the information center's administration and a command line not
    acting through the service; the catalogue needs no broker."""
    from govbus.core.config import database_url

    url = database_url()
    if not url:
        raise GovbusError("neither GOVBUS_API_URL nor DATABASE_URL is set and no embedded "
                          "runtime is running: set GOVBUS_API_URL (and the agency's token) to "
                          "act through the service, or run `govbus up`")
    return url


def _service(args: argparse.Namespace) -> Any:
    from govbus.api.client import client

    return client(getattr(args, "token_file", None))


def _emit(args: argparse.Namespace, data: Any, lines: list[str]) -> None:
    print(dumps(data) if getattr(args, "json", False) else "\n".join(lines))


def _finding_lines(findings: list[dict[str, Any]]) -> list[str]:
    return [f"  {f['severity'].upper()} {printable(f['file'])}: {printable(f['field'])}: "
            f"{printable(f['message'])} ({f['rule']}, {f['article']})" for f in findings]


def _proposal_lines(p: dict[str, Any]) -> list[str]:
    head = (f"proposal {p['proposal_id']}: {p['kind']} {p['resource']} by {p['agency']}, "
            f"{p['status']}; {p['errors']} error(s), {p['warnings']} warning(s)")
    lines = [head]
    if p.get("note"):
        lines.append(f"  note: {printable(p['note'])}")
    if p["status"] != "pending":
        lines.append(f"  {p['status']} by {p['decided_by']} on {str(p['decided_at'])[:19]}"
                     + (f": {printable(p['reason'])}" if p.get("reason") else ""))
    if p.get("amends_grants"):
        lines.append(f"  amends grants {', '.join(map(str, p['amends_grants']))}")
    if p.get("version"):
        lines.append(f"  registered as v{p['version']}, schema id {p['schema_id']}")
    for a in p.get("amended") or []:
        lines.append(f"  grant {a['grant_id']} ({a['recipient']}) amended: fields now "
                     f"{', '.join(a['fields'])}")
    return lines + _finding_lines(p.get("findings") or [])


def _acting(args: argparse.Namespace) -> str:
    """Directly on the database: the agency acting, checked by its token (Art. 24) — the
    ``--agency`` named, else the one the token names, else the information center."""
    from govbus.core.access import agency_of, token_from

    agency = getattr(args, "agency", None)
    if not agency:
        token = token_from(args.token_file)
        agency = agency_of(token) if token else INFORMATION_CENTER
    return require(_dsn(), agency, args.token_file)


def _visible(row: dict[str, Any], agency: str) -> dict[str, Any]:
    from govbus.api.auth import role_of

    if role_of(agency) == "agency" and row["agency"] != agency:
        raise ForbiddenError(f"proposal {row['proposal_id']} is {row['agency']}'s; {agency} "
                             "may not read it (Art. 24)", rule="access.not_yours")
    return row


def _whose(agency: str | None) -> str | None:
    """Whose rows a listing shows, acting as ``agency``: its own; all for the overseers."""
    from govbus.api.auth import role_of

    return None if role_of(agency or INFORMATION_CENTER) != "agency" else agency


def cmd_propose(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise GovbusError(f"cannot read {args.file}: {exc.strerror}") from exc
    resource_id = f"{args.agency}.{args.resource or path.stem}"
    http = _service(args)
    amends = args.amends_grants or []
    if http is not None:
        out = _post_avsc(http, resource_id, raw, args.note, amends)
    else:
        from govbus.core import proposals

        require(_dsn(), args.agency, args.token_file)  # Art. 24: only the provider proposes
        out = proposals.propose(_dsn(), args.agency, resource_id, raw, args.note,
                                amends_grants=amends)
    _emit(args, out, _proposal_lines(out) + [
        "  the information center decides it (`govbus catalogue approve|reject "
        f"{out['proposal_id']}`)" if not out["errors"] else
        "  it cannot be approved with these errors: propose a corrected contract"])
    return CHECKS_FAILED_EXIT if out["errors"] else 0


def _post_avsc(http: Any, resource_id: str, raw: bytes, note: str | None,
               amends: list[int]) -> Any:
    import httpx

    from govbus.api.client import ServiceError, refusal

    params: dict[str, Any] = {"resource": resource_id} | ({"note": note} if note else {})
    if amends:
        params["amends_grants"] = amends
    try:
        response = http.http.post("/v1/catalogue/proposals", content=raw, params=params,
                                  headers={"content-type": "application/json"})
    except httpx.HTTPError as exc:
        raise ServiceError(f"the HTTP service at {http.url} cannot be reached: {exc} "
                           "(GOVBUS_API_URL; `govbus status`)") from exc
    if response.is_success:
        return response.json()
    raise refusal(response)


def _grant_ids(text: str) -> list[int]:
    """``--amends-grants 12,15``."""
    try:
        return sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of grant "
                                         "ids (e.g. 12,15)") from exc


def cmd_proposals(args: argparse.Namespace) -> int:
    http = _service(args)
    if http is not None:
        rows = http.get("/v1/catalogue/proposals", status=args.status, agency=args.agency,
                        resource=args.resource)
    else:
        from govbus.core import proposals

        actor = _acting(args)
        rows = proposals.list_proposals(_dsn(), _whose(actor), args.status, args.resource)
    _emit(args, rows, [
        f"proposal {p['proposal_id']:<5} {p['kind']:<6} {p['resource']:<42} {p['status']:<8} "
        f"{p['errors']} error(s) {str(p['proposed_at'])[:16]}" for p in rows]
        or ["no proposals"])
    return 0


def cmd_proposal(args: argparse.Namespace) -> int:
    http = _service(args)
    if http is not None:
        out = http.get(f"/v1/catalogue/proposals/{args.proposal_id}")
    else:
        from govbus.core import proposals

        actor = _acting(args)
        out = _visible(proposals.get(_dsn(), args.proposal_id), actor)
    _emit(args, out, _proposal_lines(out))
    return 0


def cmd_decide(args: argparse.Namespace) -> int:
    approving = args.action == "approve"
    http = _service(args)
    if http is not None:
        out = http.post(f"/v1/catalogue/proposals/{args.proposal_id}/{args.action}",
                        {"reason": args.reason})
    else:
        from govbus.core import proposals

        require(_dsn(), INFORMATION_CENTER, args.token_file)  # Art. 13: the center confirms
        out = (proposals.approve(_dsn(), args.proposal_id, INFORMATION_CENTER, args.reason)
               if approving else
               proposals.reject(_dsn(), args.proposal_id, INFORMATION_CENTER, args.reason))
    lines = _proposal_lines(out)
    if out.get("topics", {}).get("error"):
        lines.append(f"  topics not created: {printable(out['topics']['error'])}")
    _emit(args, out, lines)
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    http = _service(args)
    agency = args.agency or args.resource.partition(".")[0]
    if http is not None:
        out = http.post(f"/v1/catalogue/{args.resource}/review",
                        {"note": args.note} | ({"agency": args.agency} if args.agency else {}))
    else:
        from govbus.core import proposals

        require(_dsn(), agency, args.token_file)
        out = proposals.review(_dsn(), args.resource, agency, args.note)
    _emit(args, out, [f"{out['resource']}: reviewed by {out['agency']} on "
                      f"{out['reviewed_at'][:19]}: {printable(out['note'])}; next review due "
                      f"by {out['next_due_at'][:10]}"])
    return 0


def _as_of(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise GovbusError(f"--as-of {text!r} is not an ISO 8601 date or time") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def cmd_reviews_due(args: argparse.Namespace) -> int:
    as_of = _as_of(args.as_of)
    http = _service(args)
    if http is not None:
        rows = http.get("/v1/catalogue/reviews/due", agency=args.agency,
                        as_of=as_of.isoformat() if as_of else None)
    else:
        from govbus.core import proposals

        actor = _acting(args)
        rows = proposals.reviews_due(_dsn(), _whose(actor), as_of)
    _emit(args, rows, [
        f"{r['resource']:<42} {r['provider']:<18} due since {r['due_at'][:10]} "
        f"({r['days_overdue']} days; last {'review ' + r['last_review']['reviewed_at'][:10] if r['last_review'] else 'registered ' + r['registered_at'][:10]})"  # noqa: E501
        for r in rows] or ["no entry is due for its yearly review (Art. 13)"])
    return 0


def register(csub: Any, add: Any) -> None:
    """Add the proposal and review commands to ``govbus catalogue``."""
    p = add("propose", cmd_propose, "propose a new or changed contract of a resource the "
            "agency provides (Art. 13); checked at once; exit 3 when the checks found errors",
            parent=csub)
    p.add_argument("file", help="the .avsc contract")
    p.add_argument("--agency", required=True, help="the proposing agency, its provider")
    p.add_argument("--resource", help="the resource's name (default: the file's stem)")
    p.add_argument("--note", help="what changes and why")
    p.add_argument("--amends-grants", type=_grant_ids, metavar="ID[,ID...]",
                   help="the grants in force whose fields the change removes, renames or "
                   "retypes: the approval amends them (Art. 24), e.g. 12,15")
    token_arg(p)
    p = add("proposals", cmd_proposals, "list proposals: the agency's own; all for the "
            "information center and the municipal office", parent=csub)
    p.add_argument("--status", choices=["pending", "approved", "rejected"])
    p.add_argument("--agency", help="whose proposals; directly on the database: the agency "
                   "acting (default: the one the token names)")
    p.add_argument("--resource", help="agency.resource")
    token_arg(p)
    p = add("proposal", cmd_proposal, "one proposal with its findings", parent=csub)
    p.add_argument("proposal_id", type=int)
    p.add_argument("--agency", help="directly on the database: the agency acting (default: "
                   "the one the token names)")
    token_arg(p)
    for name, help_ in (("approve", "approve and register a proposal (the information "
                         "center, Art. 13)"),
                        ("reject", "reject a proposal with a reason (the information center, "
                         "Art. 13)")):
        p = add(name, cmd_decide, help_, parent=csub)
        p.add_argument("proposal_id", type=int)
        p.add_argument("--reason", required=name == "reject")
        token_arg(p)
    p = add("review", cmd_review, "confirm the yearly review of an entry the agency provides "
            "(Art. 13)", parent=csub)
    p.add_argument("resource", help="agency.resource")
    p.add_argument("--note", required=True, help="what was reviewed and found")
    p.add_argument("--agency", help="the reviewing agency (default: the resource's provider)")
    token_arg(p)
    p = add("reviews-due", cmd_reviews_due, "entries not reviewed within a year (Art. 13)",
            parent=csub)
    p.add_argument("--agency", help="whose entries; directly on the database: the agency "
                   "acting (default: the one the token names)")
    p.add_argument("--as-of", help="the moment judged, ISO 8601 (default: now)")
    token_arg(p)
