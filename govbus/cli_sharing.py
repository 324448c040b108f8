"""``govbus`` commands of the sharing workflow (Art. 15, 17, 18, 24, 25) and the delivery log."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from govbus import cli_reports
from govbus.cli import catalogue, dumps, printable
from govbus.cli_access import token_arg
from govbus.core.access import INFORMATION_CENTER, require
from govbus.core.errors import GovbusError


def _dsn() -> str:
    from govbus.core.config import Settings

    return Settings.from_env().database_url


def _emit(args: argparse.Namespace, data: Any, lines: list[str]) -> None:
    if getattr(args, "json", False):
        print(dumps(data))
    else:
        print("\n".join(lines))


def _until(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        day = dt.date.fromisoformat(text)
    except ValueError as exc:
        raise GovbusError(f"--valid-until {text!r} is not a date (YYYY-MM-DD)") from exc
    return dt.datetime.combine(day, dt.time(23, 59, 59), tzinfo=dt.UTC)


def _service(args: argparse.Namespace) -> Any:
    """The HTTP service's client when the command line acts through it, else None."""
    from govbus.api.client import client

    return client(getattr(args, "token_file", None))


def cmd_request(args: argparse.Namespace) -> int:
    fields = [f.strip() for f in args.fields.split(",")] if args.fields else None
    if http := _service(args):
        _until(args.valid_until)  # the same error for a malformed date
        out = http.post("/v1/requests", {
            "agency": args.agency, "resource": args.resource, "purpose": args.purpose,
            "fields": fields, "commitment": args.commitment,
            "confidentiality": args.confidentiality, "valid_until": args.valid_until,
            "delivery_format": args.delivery_format})
    else:
        from govbus.core import sharing_store

        agency, _, name = args.resource.partition(".")
        resource = catalogue().get(agency, name)
        require(_dsn(), args.agency, args.token_file)  # Art. 24: the agency applies for itself
        out = sharing_store.file_request(_dsn(), resource, args.agency, args.purpose, fields,
                                         args.commitment, args.confidentiality,
                                         _until(args.valid_until), args.delivery_format)
    line = f"request {out['request_id']}: {out['status']} — {printable(out['reason'])}"
    if out["status"] == "pending":
        provider = args.resource.partition('.')[0]
        line += f"\n  the provider {provider} must answer by {str(out['due_at'])[:10]}"
    if out.get("grant_id"):
        line += f"\n  grant {out['grant_id']}: fields {', '.join(out['fields'])}"
    _emit(args, out, [line])
    return 0 if out["status"] != "refused" else 4


def cmd_decide(args: argparse.Namespace) -> int:
    from govbus.core import sharing_store

    approve = args.command == "approve"
    until = getattr(args, "valid_until", None)
    if http := _service(args):
        _until(until)
        body = {"agency": args.actor, "reason": args.reason} | (
            {"valid_until": until} if approve else {})
        out = http.post(f"/v1/requests/{args.request_id}/{args.command}", body)
    else:
        require(_dsn(), args.actor, args.token_file)
        out = sharing_store.decide(_dsn(), args.request_id, args.actor, approve, args.reason,
                                   _until(until))
    _emit(args, out, [f"request {args.request_id}: {out['status']} by {args.actor}"
                      + (f", grant {out['grant_id']}" if out["grant_id"] else "")])
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from govbus.core import sharing_store

    if http := _service(args):
        out = http.post(f"/v1/grants/{args.grant_id}/revoke",
                        {"agency": args.actor, "reason": args.reason})
    else:
        require(_dsn(), args.actor, args.token_file)
        out = sharing_store.revoke(_dsn(), args.grant_id, args.actor, args.reason)
    _emit(args, out, [f"grant {args.grant_id} revoked by {printable(args.actor)}: "
                      f"{printable(args.reason)}"])
    return 0


def _provision(grant: dict[str, Any]) -> str:
    """When the data must be provided by, and whether it was (Art. 31: a delay is a fault)."""
    due = str(grant.get("provide_by") or "")[:10]
    if not due:
        return ""
    shown = {"met": f"  provided {str(grant.get('provided_at') or '')[:10]}",
             "late": f"  provided late {str(grant.get('provided_at') or '')[:10]} "
                     f"(due {due})",
             "overdue": f"  NOT PROVIDED, due {due}: OVERDUE (Art. 31)",
             "due": f"  provide by {due}"}
    return shown.get(str(grant.get("provision")), "")


def cmd_grants(args: argparse.Namespace) -> int:
    from govbus.core import sharing_store

    if http := _service(args):
        rows = http.get("/v1/grants", agency=args.agency, resource=args.resource,
                        active=args.active)
    else:
        rows = sharing_store.list_grants(_dsn(), args.agency, args.resource, args.active)
    _emit(args, rows, [
        f"grant {g['grant_id']:<5} {g['recipient']:<18} {g['resource']:<40} {g['state']:<9} "
        f"fields {','.join(g['fields'])}"
        + (f" masked {','.join(g['masked_fields'])}" if g["masked_fields"] else "")
        + (" as JSON" if g.get("delivery_format") == "json" else "")
        + _provision(g) for g in rows] or ["no grants"])
    return 0


def cmd_requests(args: argparse.Namespace) -> int:
    from govbus.core import sharing_store

    if http := _service(args):
        rows = http.get("/v1/requests", agency=args.agency, status=args.status,
                        overdue=args.overdue)
    else:
        rows = sharing_store.list_requests(_dsn(), args.agency, args.status, args.overdue)
    _emit(args, rows, [
        f"request {r['request_id']:<5} {r['requester']:<18} {r['resource_id']:<40} "
        f"{r['status']:<8} due {str(r['due_at'])[:10]}" + ("  OVERDUE (Art. 31)"
                                                         if r["overdue"] else "")
        for r in rows] or ["no requests"])
    return 0


def cmd_report_filings(args: argparse.Namespace) -> int:
    from govbus.cli_access import service
    from govbus.core import sharing_store

    http = service(args)  # the office and the center read every filing; an agency its own
    rows = (http.get("/v1/reports/filings", year=args.year) if http
            else sharing_store.list_filings(_dsn(), args.year))
    _emit(args, rows, [
        f"{str(r['decided_at'])[:16]}  {r['decision']:<8} {r['requester']:<18} "
        f"{r['resource_id']:<40} by {r['decided_by']}: {printable(r['reason'])}" for r in rows]
        or ["no filings"])
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from govbus import query
    from govbus.core.config import Settings

    if http := _service(args):
        out = http.post("/v1/query", {"agency": args.agency, "resource": args.resource,
                                      "key": args.key})
    else:
        require(_dsn(), args.agency, args.token_file)
        out = query.query(Settings.from_env(), args.agency, args.resource, args.key)
    _emit(args, out, [printable(json.dumps(out, ensure_ascii=False, default=str))])
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    from govbus import query
    from govbus.core.config import Settings

    if http := _service(args):
        count = http.post("/v1/backfill", {"agency": args.agency,
                                           "resource": args.resource})["sent"]
    else:
        require(_dsn(), args.agency, args.token_file)
        count = query.backfill(Settings.from_env(), args.agency, args.resource)
    _emit(args, {"sent": count}, [f"backfill: {count} current records sent to {args.agency}"])
    return 0


def cmd_deliveries(args: argparse.Namespace) -> int:
    from govbus import delivery_log

    if http := _service(args):
        rows = http.get("/v1/deliveries", recipient=args.recipient, provider=args.provider,
                        resource=args.resource, limit=args.limit)
    else:
        # an agency reads its own rows (as recipient or provider); the whole log is the IC's
        require(_dsn(), args.recipient or args.provider or INFORMATION_CENTER,
                args.token_file)
        rows = delivery_log.list_deliveries(_dsn(), recipient=args.recipient,
                                            provider=args.provider, resource=args.resource,
                                            limit=args.limit)
    _emit(args, rows, [printable(json.dumps(r, ensure_ascii=False, default=str)) for r in rows]
          or ["no deliveries"])
    return 0


def _subscribe(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``govbus subscribe``; asking the HTTP service, not the database, when the CLI is its
    client."""
    from govbus.api.client import ServiceControlPlane, client_settings
    from govbus.consumers import subscriber

    http = _service(args)
    if http is None:
        return subscriber.run(args, parser)
    return subscriber.run(args, parser, ServiceControlPlane(http), client_settings(http))


def register(sub: Any, add: Any) -> None:
    """Add the sharing commands to the ``govbus`` parser."""
    p = add("request", cmd_request, "apply for a resource (Art. 18, 24, 25); "
            "exit 4 when refused")
    p.add_argument("--agency", required=True, help="the applying agency")
    p.add_argument("--resource", required=True, help="agency.resource")
    p.add_argument("--purpose", required=True)
    p.add_argument("--fields", help="comma-separated; default: every field")
    p.add_argument("--commitment", required=True, help="number of the agency's registered "
                   "security commitment, in force and covering the resource (`govbus "
                   "commitments register`; Art. 24)")
    p.add_argument("--confidentiality", help="number of the agency's registered "
                   "confidentiality agreement covering the resource, for sensitive fields "
                   "(Art. 25); without it they are masked")
    p.add_argument("--valid-until", help="YYYY-MM-DD: the grant expires after this day")
    p.add_argument("--delivery-format", choices=("avro", "json"), default="avro",
                   help="how the grant's deliveries are written: framed Avro under the "
                   "projection's registered schema (default), or the same envelope as JSON "
                   "for tooling without Avro")
    token_arg(p)
    for name, help_ in (("approve", "approve a pending request (the provider)"),
                        ("reject", "reject a pending request with a reason (the provider)")):
        p = add(name, cmd_decide, help_)
        p.add_argument("request_id", type=int)
        p.add_argument("--as", dest="actor", required=True, help="the deciding agency")
        p.add_argument("--reason", required=name == "reject")
        if name == "approve":
            p.add_argument("--valid-until", help="YYYY-MM-DD")
        token_arg(p)
    p = add("revoke", cmd_revoke, "revoke a grant (the provider or the information center)")
    p.add_argument("grant_id", type=int)
    p.add_argument("--as", dest="actor", required=True)
    p.add_argument("--reason", required=True)
    token_arg(p)
    p = add("grants", cmd_grants, "list grants")
    p.add_argument("--agency")
    token_arg(p)
    p.add_argument("--resource")
    p.add_argument("--active", action="store_true", help="only grants in force")
    p = add("requests", cmd_requests, "list sharing requests; overdue ones stand out (Art. 31)")
    p.add_argument("--agency")
    p.add_argument("--status", choices=["pending", "granted", "rejected", "refused"])
    p.add_argument("--overdue", action="store_true")
    token_arg(p)
    rep = sub.add_parser("report", help="reports for the municipal office")
    rsub = rep.add_subparsers(dest="report", required=True, metavar="REPORT")
    p = add("filings", cmd_report_filings, "every response to a sharing request (Art. 18)",
            parent=rsub)
    p.add_argument("--year", type=int)
    cli_reports.register(rsub, add)  # evaluation (Art. 28), annual (Art. 26)
    p = add("query", cmd_query, "online query of one entity's current record (Art. 17)")
    p.add_argument("--agency", required=True)
    p.add_argument("--resource", required=True, help="agency.resource")
    p.add_argument("--key", required=True, help="entity key (resident id, credit code)")
    token_arg(p)
    p = add("backfill", cmd_backfill, "send a newly granted agency the current state")
    p.add_argument("--agency", required=True)
    p.add_argument("--resource", required=True, help="agency.resource")
    token_arg(p)
    p = add("deliveries", cmd_deliveries, "the delivery log")
    p.add_argument("--recipient")
    p.add_argument("--provider")
    p.add_argument("--resource")
    p.add_argument("--limit", type=int, default=100)
    token_arg(p)
    from govbus import cli_log  # verify, against checkpoints; list and export them

    cli_log.register(sub, add)
    from govbus.consumers import subscriber
    from govbus.infra import acl

    p = sub.add_parser("subscribe", help="print or apply an agency's deliveries",
                       description=subscriber.DESCRIPTION)
    subscriber.add_arguments(p)
    p.set_defaults(handler=lambda args, p=p: _subscribe(args, p))
    p = sub.add_parser("acl", help="Kafka ACL plan from catalogue and grants (Art. 24)",
                       description=acl.DESCRIPTION)
    acl.add_arguments(p)
    p.set_defaults(handler=acl.run)


if __name__ == "__main__":
    sys.exit("use the govbus command")
