"""``govbus quarantine``: the payloads the bus set aside, for the agency that provided them.

Each DLQ record is bounded; the whole payload it names is here (Art. 19: the provider
corrects its data). An agency sees its own rows only, with its token (Art. 24); the
information center sees every agency's.
"""

from __future__ import annotations

import argparse
import base64
import os
from typing import Any

from govbus.cli import dumps
from govbus.cli import printable as _printable
from govbus.cli_access import service, token_arg
from govbus.core import quarantine
from govbus.core.access import INFORMATION_CENTER, require
from govbus.core.errors import GovbusError


def _dsn() -> str:
    from govbus.core.config import Settings

    return Settings.from_env().database_url


def cmd_list(args: argparse.Namespace) -> int:
    http = service(args)
    if http:  # the caller's own rows; every agency's for the information center
        rows = http.get("/v1/quarantine", agency=args.agency, limit=args.limit)
    else:
        require(_dsn(), args.agency or INFORMATION_CENTER, args.token_file)
        rows = quarantine.listing(_dsn(), args.agency, args.limit)
    if args.json:
        print(dumps(rows))
        return 0
    if not rows:
        print(f"nothing quarantined{' for ' + args.agency if args.agency else ''}")
    for r in rows:
        print(f"{r['id']:>8}  {r['quarantined_at'][:19]}  {r['agency']}  {r['stage']}  "
              f"{_printable(r['rule'])}  {r['payload_bytes']} bytes  {r['topic']}"
              f"[{r['kafka_partition']}]@{r['kafka_offset']}")
        print(f"          {_printable(r['reason'])[:300]}")
    return 0


def _fetched(args: argparse.Namespace) -> tuple[dict[str, Any], bytes | None, bytes | None]:
    """Through the service: the record, its key and its payload, as :func:`_direct` has them."""
    http = service(args)
    if http is None:
        return _direct(args)
    meta = http.get(f"/v1/quarantine/{args.id}", agency=args.agency)
    key = str(meta.pop("key")).encode()
    payload = base64.b64decode(meta.pop("payload_base64"))
    return meta, key, payload


def _direct(args: argparse.Namespace) -> tuple[dict[str, Any], bytes | None, bytes | None]:
    actor = args.agency or INFORMATION_CENTER
    require(_dsn(), actor, args.token_file)
    found = quarantine.fetch(_dsn(), args.id)
    if found is None or (actor != INFORMATION_CENTER and found[0]["agency"] != actor):
        # another agency's row is as absent as a missing one (Art. 24)
        raise GovbusError(f"no quarantined record {args.id}"
                          + (f" of {actor}" if actor != INFORMATION_CENTER else ""))
    meta, key, payload = found
    if args.agency and meta["agency"] != args.agency:
        require(_dsn(), args.agency, args.token_file)
        raise GovbusError(f"quarantined record {args.id} is not {args.agency}'s (Art. 24)")
    require(_dsn(), args.agency or INFORMATION_CENTER, args.token_file)
    return meta, key, payload


def cmd_show(args: argparse.Namespace) -> int:
    meta, key, payload = _fetched(args)
    if args.out:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(payload or b"")
        meta["written_to"] = args.out
    if args.json:
        print(dumps({**meta, "key": (key or b"").decode("utf-8", "replace")}))
    else:
        for name, value in meta.items():
            print(f"{name:>16}: {_printable(value)}")
        print(f"{'key':>16}: {_printable((key or b'').decode('utf-8', 'replace'))[:300]}")
        if not args.out:
            print(f"{'payload':>16}: {len(payload or b'')} bytes (--out FILE writes them)")
    return 0


def register(sub: Any, add: Any) -> None:
    """Add ``quarantine list|show`` to the ``govbus`` parser."""
    q = sub.add_parser("quarantine", help="payloads set aside for their provider (Art. 19)",
                       description="Payloads the gate rejected or the broker refused, whole, "
                       "for the agency that provided them (its DLQ records are bounded).")
    qsub = q.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = add("list", cmd_list, "the newest quarantined records", parent=qsub)
    p.add_argument("--agency", help="the providing agency (default: every agency; the "
                   "information center only)")
    p.add_argument("--limit", type=int, default=100, help="at most this many (100)")
    token_arg(p)
    p = add("show", cmd_show, "one quarantined record; --out writes its payload", parent=qsub)
    p.add_argument("id", type=int)
    p.add_argument("--agency", help="the providing agency (default: the information center)")
    p.add_argument("--out", help="write the whole payload to this file (mode 600)")
    token_arg(p)
