"""``govbus access``: agency credentials (Art. 24). Only the information center issues,
rotates, revokes and lists them; ``init`` creates its own token in the state folder."""

from __future__ import annotations

import argparse
import json
from typing import Any

from govbus.core import access
from govbus.core.config import state_dir


def _dsn() -> str:
    from govbus.core.config import Settings

    return Settings.from_env().database_url


def token_arg(p: argparse.ArgumentParser) -> None:
    """``--token-file`` for every command that acts as an agency."""
    p.add_argument("--token-file", help=f"file holding the agency's token (mode 600); else "
                   f"${access.TOKEN_FILE_ENV} or ${access.TOKEN_ENV}")


def cmd_init(args: argparse.Namespace) -> int:
    path = access.init_admin(_dsn(), state_dir())
    out = {"created": str(path) if path else None}
    print(json.dumps(out) if args.json else
          f"information center token written to {path} (mode 600)" if path else
          "the information center already has a credential (rotate with `access issue "
          "--agency information_center`)")
    return 0


def cmd_issue(args: argparse.Namespace) -> int:
    dsn = _dsn()
    access.require(dsn, access.INFORMATION_CENTER, args.token_file)
    token = access.issue(dsn, args.agency, access.INFORMATION_CENTER)
    print(json.dumps({"agency": args.agency, "token": token}) if args.json else
          f"token for {args.agency} (shown once; any earlier token no longer works):\n{token}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    dsn = _dsn()
    access.require(dsn, access.INFORMATION_CENTER, args.token_file)
    had = access.revoke(dsn, args.agency)
    print(json.dumps({"agency": args.agency, "revoked": had}) if args.json else
          f"{args.agency}: credential {'revoked' if had else 'did not exist'}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    dsn = _dsn()
    access.require(dsn, access.INFORMATION_CENTER, args.token_file)
    rows = access.list_credentials(dsn)
    print(json.dumps(rows, indent=2) if args.json else "\n".join(
        f"{r['agency']:<24} issued {r['issued_at'][:19]} by {r['issued_by']}, last used "
        f"{(r['last_used_at'] or 'never')[:19]}" for r in rows) or "no credentials")
    return 0


def register(sub: Any, add: Any) -> None:
    grp = sub.add_parser("access", help="agency credentials (Art. 24)")
    asub = grp.add_subparsers(dest="access", required=True, metavar="ACTION")
    add("init", cmd_init, "create the information center's token in the state folder",
        parent=asub)
    p = add("issue", cmd_issue, "issue (or rotate) an agency's token; shown once",
            parent=asub)
    p.add_argument("--agency", required=True)
    token_arg(p)
    p = add("revoke", cmd_revoke, "revoke an agency's token", parent=asub)
    p.add_argument("--agency", required=True)
    token_arg(p)
    p = add("list", cmd_list, "who holds a credential (never the hashes)", parent=asub)
    token_arg(p)
