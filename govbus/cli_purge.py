"""``govbus purge``: apply the retention settings (docs/retention.md; Art. 25).

Deletes published outbox rows (in each agency database named by ``--outbox-dsn``), the
reconciler's state of entities long unseen (never of one with an open case), old quarantined
payloads and the ids of events accepted long ago, in batches; ``--dry-run`` prints what would
go and deletes nothing. The delivery log is never purged. Progress goes to stderr, the summary
to stdout.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from govbus.core.errors import GovbusError


def _dsn() -> str:
    from govbus.core.config import require_database_url

    return require_database_url()


def _line(r: dict[str, Any]) -> str:
    where = f" at {r['database']}" if r["table"].startswith("govbus_outbox") else ""
    head = f"{r['table']}{where} ({r['setting']}={r['days']}, before {r['cutoff'][:19]}Z): "
    if r["skipped"]:
        return head + f"skipped: {r['skipped']}"
    verb = "would delete" if r["dry_run"] else "deleted"
    text = f"{verb} {r['deleted']}"
    if r["table"] == "reconcile_state":
        text += (f", {'would reduce' if r['dry_run'] else 'reduced'} {r['reduced']} to "
                 f"closed-case keys, kept {r['kept_open_case']} with an open case")
    return head + text


def cmd_purge(args: argparse.Namespace) -> int:
    from govbus.core import retention
    from govbus.core.config import Retention

    section = Retention.from_env()  # needs neither broker nor database
    days = {t: getattr(section, f"{t}_retention_days") for t in retention.TABLES}
    if args.batch_size < 1:
        raise GovbusError(f"--batch-size {args.batch_size}: at least 1 row per transaction")
    outbox_dsns = list(args.outbox_dsn or [])
    outbox_dsns += list(section.outbox_dsns)

    def progress(table: str, done: int) -> None:
        print(f"purge {table}: {done} row(s) {'counted' if args.dry_run else 'done'} so far",
              file=sys.stderr, flush=True)

    results = retention.purge(_dsn(), days, outbox_dsns=outbox_dsns,
                              only=args.only or retention.TABLES, dry_run=args.dry_run,
                              batch=args.batch_size, progress=progress)
    out = [r.as_dict() for r in results]
    if args.json:
        from govbus.cli import dumps

        print(dumps({"dry_run": args.dry_run, "tables": out}))
    else:
        for r in out:
            print(_line(r))
        if args.dry_run:
            print("dry run: nothing deleted")
    return 0


def register(sub: Any, add: Any) -> None:
    """Add ``purge`` to the ``govbus`` parser."""
    from govbus.core.retention import BATCH, TABLES

    p = add("purge", cmd_purge, "delete what is kept past its retention (published outbox "
            "rows, reconciler state of entities long unseen, quarantined payloads, ids of events "
            "accepted long ago); the "
            "delivery log is never purged (docs/retention.md)")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be deleted per table, delete nothing")
    p.add_argument("--outbox-dsn", action="append", metavar="DSN",
                   help="an agency database holding govbus_outbox.events (repeatable; also "
                        "GOVBUS_OUTBOX_DSNS, separated by spaces)")
    p.add_argument("--only", action="append", choices=TABLES,
                   help="purge only this (repeatable; default: all)")
    p.add_argument("--batch-size", type=int, default=BATCH,
                   help=f"rows per transaction ({BATCH})")
