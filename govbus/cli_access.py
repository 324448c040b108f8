"""``govbus access``: agency credentials (Art. 24). Only the information center issues,
rotates, revokes and lists them; ``init`` creates its own token in the state folder."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from govbus.cli import catalogue, printable
from govbus.core import access
from govbus.core.config import state_dir
from govbus.core.errors import GovbusError
from govbus.core.objections import OFFICE

if TYPE_CHECKING:
    from govbus.api.client import Client

#: who holds a credential besides the agencies of the catalogue: the information center
#: (operates the bus, Art. 24) and the municipal office (answers complaints, Art. 29)
ROLES = (access.INFORMATION_CENTER, OFFICE)


def _dsn() -> str:
    from govbus.core.config import Settings

    return Settings.from_env().database_url


def token_arg(p: argparse.ArgumentParser) -> None:
    """``--token-file`` for every command that acts as an agency."""
    p.add_argument("--token-file", help=f"file holding the agency's token (mode 600); else "
                   f"${access.TOKEN_FILE_ENV} or ${access.TOKEN_ENV}")


def service(args: argparse.Namespace) -> Client | None:
    """The HTTP service's client, as the agency of ``--token-file`` (else ``GOVBUS_TOKEN_FILE``
    / ``GOVBUS_TOKEN``), when the command line acts through the service (``GOVBUS_API_URL``,
    or the embedded runtime's service); None: the command opens the database itself."""
    from govbus.api.client import client

    return client(getattr(args, "token_file", None))


def cmd_init(args: argparse.Namespace) -> int:
    path = access.init_admin(_dsn(), state_dir())
    out = {"created": str(path) if path else None}
    print(json.dumps(out) if args.json else
          f"information center token written to {path} (mode 600)" if path else
          "the information center already has a credential (rotate with `access issue "
          "--agency information_center`)")
    return 0


def holder(name: str) -> str:
    """``name`` if it may hold a credential: an agency of the catalogue or one of
    :data:`ROLES`; else an error listing the valid names (Art. 24: tokens for who exists)."""
    valid = sorted(set(catalogue().agencies) | set(ROLES))
    if name not in valid:
        shown = printable(name if len(name) <= 64 else name[:64] + "…")
        raise GovbusError(f"--agency '{shown}' is not an agency of the catalogue nor a role of "
                          f"the bus (Art. 24); valid: {', '.join(valid)}")
    return name


def _token_file(target: str) -> tuple[Path, int, str]:
    """A new file beside ``target``, created mode 0600 (never widened, then narrowed), that
    replaces ``target`` once it holds the token: (target, descriptor, temporary path)."""
    path = Path(target).expanduser()
    if path.is_dir():
        raise GovbusError(f"--out {target} is a folder: name the token file")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    except OSError as exc:
        raise GovbusError(f"--out {target}: cannot create a file in {path.parent}: "
                          f"{exc.strerror}") from exc
    return path, fd, tmp


def cmd_issue(args: argparse.Namespace) -> int:
    http = service(args)
    if http:  # the service checks the name and that the caller is the information center
        def new_token() -> str:
            return str(http.post("/v1/access/tokens", {"agency": args.agency})["token"])

        agency = str(args.agency)
    else:
        agency = holder(args.agency)
        dsn = _dsn()
        access.require(dsn, access.INFORMATION_CENTER, args.token_file)

        def new_token() -> str:
            return access.issue(dsn, agency, access.INFORMATION_CENTER)

    if not args.out:
        token = new_token()
        print(json.dumps({"agency": agency, "token": token}) if args.json else
              f"token for {agency} (shown once; any earlier token no longer works):\n{token}")
        return 0
    path, fd, tmp = _token_file(args.out)  # before issuing: a token is never lost
    try:
        with os.fdopen(fd, "w") as out:
            out.write(new_token() + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    print(json.dumps({"agency": agency, "token_file": str(path)}) if args.json else
          f"token for {agency} written to {path} (mode 600; any earlier token no longer "
          f"works); hand it over with --token-file {path}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    http = service(args)
    if http:
        if not access.AGENCY.match(args.agency or ""):
            raise GovbusError(f"--agency {printable(args.agency)!r} is not a plain name "
                              "(a-z, 0-9, _)")
        had = bool(http.post(f"/v1/access/tokens/{args.agency}/revoke")["revoked"])
    else:
        dsn = _dsn()
        access.require(dsn, access.INFORMATION_CENTER, args.token_file)
        had = access.revoke(dsn, args.agency)
    print(json.dumps({"agency": args.agency, "revoked": had}) if args.json else
          f"{printable(args.agency)}: credential {'revoked' if had else 'did not exist'}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    http = service(args)
    if http:
        rows = http.get("/v1/access/tokens")
    else:
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
    p = add("issue", cmd_issue, "issue (or rotate) an agency's token; shown once, or written "
            "to --out", parent=asub)
    p.add_argument("--agency", required=True, help="an agency of the catalogue, "
                   f"{' or '.join(ROLES)}")
    p.add_argument("--out", metavar="FILE", help="write the token to FILE (created mode 600) "
                   "instead of printing it")
    token_arg(p)
    p = add("revoke", cmd_revoke, "revoke an agency's token", parent=asub)
    p.add_argument("--agency", required=True)
    token_arg(p)
    p = add("list", cmd_list, "who holds a credential (never the hashes)", parent=asub)
    token_arg(p)
