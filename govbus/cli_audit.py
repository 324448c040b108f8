"""``govbus audit``: the control plane's audit ledger (Art. 13, 18, 24, 31; docs/evidence.md).

``list`` shows what was decided, by whom and when (grants, filings, revocations, catalogue,
credential and key changes, cases, objections and complaints); ``verify`` checks the ledger's
hash chain, its triggers and every audited row against it, and exits 1 on any problem. Both
seal the rows not sealed yet first, and both are for the information center only: the ledger
shows every agency's decisions.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from govbus.cli import dumps, printable
from govbus.cli_access import token_arg
from govbus.cli_log import checkpoint_args
from govbus.core import access
from govbus.core.errors import GovbusError


def _dsn() -> str:
    from govbus.core.config import Settings

    return Settings.from_env().database_url


def _since(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        raise GovbusError(f"--since {printable(text[:40])}: expected YYYY-MM-DD or an ISO "
                          "date and time") from None
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


def cmd_list(args: argparse.Namespace) -> int:
    from govbus.delivery_log import audit

    if args.limit < 1:
        raise GovbusError(f"--limit {args.limit}: must be at least 1")
    if args.table is not None and args.table not in audit.AUDITED:
        raise GovbusError(f"--table {printable(args.table[:64])} is not audited; audited: "
                          f"{', '.join(sorted(audit.AUDITED))}")
    dsn = _dsn()
    access.require(dsn, access.INFORMATION_CENTER, args.token_file)
    audit.seal(dsn)
    rows = audit.list_entries(dsn, args.table, _since(args.since), args.limit)
    if args.json:
        print(dumps(rows))
    else:
        print("\n".join(printable(line) for line in audit.history(rows)) or "no entries")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from govbus.cli_log import read_checkpoints
    from govbus.core.config import Settings
    from govbus.core.keyring import checkpoint_publics
    from govbus.delivery_log import audit, checkpoint_store
    from govbus.delivery_log.checkpoints import check_series

    settings = Settings.from_env()
    dsn = settings.database_url
    access.require(dsn, access.INFORMATION_CENTER, args.token_file)
    given = read_checkpoints(args.checkpoints) if args.checkpoints else \
        checkpoint_store.list_checkpoints(dsn)
    keys = checkpoint_publics(settings, dsn, args.checkpoint_key) if given else {}
    valid, findings = check_series(given, keys)
    audit.seal(dsn)
    report = audit.verify(dsn, checkpoints=valid)
    for f in findings:
        report.add_problem(f.seq, f.kind, f.message)
    against = f"checked against {len(valid)} checkpoint(s)" + (
        f" from {args.checkpoints}" if args.checkpoints else " of the bus")
    if args.json:
        print(dumps(report.as_dict() | {"checkpoints": len(valid)}))
    else:
        print("\n".join(printable(line) for line in [*report.lines(), f"  {against}"]))
    return 0 if report.ok else 1


def register(sub: Any, add: Any) -> None:
    grp = sub.add_parser("audit", help="the control plane's audit ledger (Art. 18, 24, 31)")
    asub = grp.add_subparsers(dest="audit", required=True, metavar="ACTION")
    p = add("list", cmd_list, "ledger entries, newest first: what changed, by whom, when",
            parent=asub)
    p.add_argument("--table", help="only this table's entries (grants, filings, …)")
    p.add_argument("--since", metavar="DATE", help="only entries from DATE (YYYY-MM-DD, UTC) on")
    p.add_argument("--limit", type=int, default=100, help="at most N entries (100)")
    token_arg(p)
    p = add("verify", cmd_verify, "check the ledger's chain, triggers and rows, against signed "
            "checkpoints; exit 1 on a problem", parent=asub)
    checkpoint_args(p)
    token_arg(p)
