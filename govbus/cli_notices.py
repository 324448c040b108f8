"""``govbus notices``: what the control plane told an agency (a request to decide as provider,
a decision on its request, a grant of its revoked; Art. 18), newest first, and ``notices ack
ID`` to acknowledge one. The token says which agency reads (Art. 24): an agency reads its
own; the information center and the municipal office name any agency with ``--agency``, or
read every agency's."""

from __future__ import annotations

import argparse
import json
from typing import Any

from govbus.cli import dumps, printable
from govbus.cli_access import service, token_arg
from govbus.core import access
from govbus.core.errors import ForbiddenError
from govbus.core.objections import OFFICE

OVERSEERS = (access.INFORMATION_CENTER, OFFICE)


def _dsn() -> str:
    from govbus.core.config import Settings

    return Settings.from_env().database_url


def _caller(args: argparse.Namespace) -> str:
    """The agency whose token the command holds, checked against the database (Art. 24)."""
    token = access.token_from(args.token_file)
    if not token:
        raise access.AccessError(f"reading notices needs the agency's credential (Art. 24): "
                                 f"set {access.TOKEN_ENV} or {access.TOKEN_FILE_ENV}, or pass "
                                 "--token-file")
    return access.require(_dsn(), access.agency_of(token), args.token_file)


def line(n: dict[str, Any]) -> list[str]:
    """A notice in text: a header line, then its body (free text of the agencies, escaped)."""
    state = f"read {str(n['acknowledged_at'])[:16]}" if n["acknowledged_at"] else "UNREAD"
    return [f"notice {n['id']:<6} {str(n['created_at'])[:16]}  {printable(n['agency']):<18} "
            f"{printable(n['kind']):<20} {state}",
            f"    {printable(json.dumps(n['body'], ensure_ascii=False, sort_keys=True))}"]


def cmd_list(args: argparse.Namespace) -> int:
    from govbus.core import notices

    http = service(args)
    if http:
        rows = http.get("/v1/notices", agency=args.agency, unread=args.unread,
                        limit=args.limit)
    else:
        who = _caller(args)
        if args.agency and args.agency != who and who not in OVERSEERS:
            raise ForbiddenError(f"the caller is {who}; it cannot read {args.agency}'s notices "
                                 "(Art. 24)", rule="access.other_agency")
        agency = args.agency if who in OVERSEERS else who
        rows = notices.listing(_dsn(), agency, args.unread, args.limit)
    if args.json:
        print(dumps(rows))
        return 0
    print("\n".join(text for n in rows for text in line(n))
          or f"no {'unread ' if args.unread else ''}notices")
    return 0


def cmd_ack(args: argparse.Namespace) -> int:
    from govbus.core import notices

    http = service(args)
    if http:
        out = http.post(f"/v1/notices/{args.notice_id}/ack")
    else:
        out = notices.acknowledge(_dsn(), args.notice_id, _caller(args))
    print(dumps(out) if args.json else
          f"notice {out['id']}: acknowledged by {out['agency']} at "
          f"{str(out['acknowledged_at'])[:19]}")
    return 0


def register(sub: Any, add: Any) -> None:
    """Add ``notices`` (the listing) and ``notices ack ID`` to the ``govbus`` parser."""
    p = add("notices", cmd_list, "an agency's notices, newest first (Art. 18); `notices ack "
            "ID` acknowledges one")
    p.add_argument("--agency", help="whose (the information center and the office; an agency "
                   "reads its own)")
    p.add_argument("--unread", action="store_true", help="only those not acknowledged")
    p.add_argument("--limit", type=int, default=100, help="at most this many (100)")
    token_arg(p)
    nsub = p.add_subparsers(dest="notices_action", metavar="ACTION")
    a = add("ack", cmd_ack, "acknowledge a notice (its recipient only)", parent=nsub)
    a.add_argument("notice_id", type=int)
    token_arg(a)
