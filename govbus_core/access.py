"""Who is asking: per-agency credentials for the control plane and the CLI (Art. 24).

An agency proves who it is with a bearer token issued by the information center: 32 random
bytes, shown once, stored only as a salted scrypt hash (``agency_credentials``). Every command
that acts as an agency — apply, approve, reject, revoke, query, backfill, subscribe, read the
delivery log — calls :func:`require` with the agency it acts as; a missing, wrong, revoked or
other agency's token is refused naming the agency and Art. 24. The information center's own
token is created by ``govbus up`` (or ``govbus access init``) into the state folder, mode 0600.

Why tokens, not client certificates: the bus's control plane is a CLI over PostgreSQL, with no
TLS endpoint of its own to verify certificates at; a hashed bearer token needs no PKI, can be
rotated by the information center in one command, and leaks nothing if the table leaks. On real
Kafka the data plane uses SASL principals ``User:<agency>`` with the ACL plan (infra/acl.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Any

import psycopg2

from govbus.core import db
from govbus.core.errors import DatabaseError, GovbusError
from govbus.core.settings_spec import Access

TOKEN_ENV, TOKEN_FILE_ENV = "GOVBUS_TOKEN", "GOVBUS_TOKEN_FILE"
INFORMATION_CENTER = "information_center"
ADMIN_TOKEN_FILE = "information_center.token"
KDF = "scrypt:n=16384,r=8,p=1"
PREFIX = "gbt_"
AGENCY = re.compile(r"^[a-z0-9_]+$")


class AccessError(GovbusError):
    """The caller did not prove it is the agency it acts as (Art. 24)."""

    rule = "access.bad_token"
    article = "Art. 24"


def _hash(token: str, salt: bytes) -> bytes:
    return hashlib.scrypt(token.encode(), salt=salt, n=16384, r=8, p=1, dklen=32)


def _check_name(agency: str) -> str:
    if not AGENCY.match(agency or ""):
        raise AccessError(f"agency {agency!r} is not a plain name (a-z, 0-9, _)")
    return agency


def issue(dsn: str, agency: str, issued_by: str) -> str:
    """A new token for ``agency`` (replacing any earlier one); returned once, never stored.
    It names its agency (``gbt_<agency>.<secret>``), so that a bearer token alone says whom
    to check it against; the secret is 32 random bytes."""
    token = f"{PREFIX}{_check_name(agency)}.{secrets.token_urlsafe(32)}"
    salt = secrets.token_bytes(16)
    try:
        with db.transaction(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT set_config('govbus.actor', %s, true)", (issued_by,))
            cur.execute("INSERT INTO agency_credentials (agency, salt, token_hash, kdf, "
                        "issued_by) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (agency) DO UPDATE "
                        "SET salt = EXCLUDED.salt, token_hash = EXCLUDED.token_hash, "
                        "kdf = EXCLUDED.kdf, issued_at = now(), issued_by = EXCLUDED.issued_by,"
                        " last_used_at = NULL",
                        (_check_name(agency), salt, _hash(token, salt), KDF, issued_by))
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot issue a credential for {agency}: {exc}") from exc
    return token


def revoke(dsn: str, agency: str) -> bool:
    """Delete ``agency``'s credential; True if it had one."""
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM agency_credentials WHERE agency = %s", (agency,))
        return bool(cur.rowcount)


def list_credentials(dsn: str) -> list[dict[str, Any]]:
    """Who holds a credential, issued when and by whom (never a hash or salt)."""
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT agency, kdf, issued_at, issued_by, last_used_at "
                    "FROM agency_credentials ORDER BY agency")
        return [{"agency": r[0], "kdf": r[1], "issued_at": r[2].isoformat(),
                 "issued_by": r[3], "last_used_at": r[4].isoformat() if r[4] else None}
                for r in cur.fetchall()]


def authenticate(dsn: str, agency: str, token: str | None) -> None:
    """Return if ``token`` is ``agency``'s credential; AccessError otherwise."""
    _check_name(agency)
    if not token:
        raise AccessError(f"acting as {agency} needs {agency}'s credential (Art. 24): set "
                          f"{TOKEN_ENV} or {TOKEN_FILE_ENV}, or pass --token-file")
    try:
        with db.transaction(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT salt, token_hash FROM agency_credentials WHERE agency = %s",
                        (agency,))
            row = cur.fetchone()
            salt, stored = (bytes(row[0]), bytes(row[1])) if row else (b"\0" * 16, b"")
            ok = hmac.compare_digest(_hash(token, salt), stored)  # same cost either way
            if ok:
                cur.execute("UPDATE agency_credentials SET last_used_at = now() "
                            "WHERE agency = %s", (agency,))
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot check {agency}'s credential: {exc}") from exc
    if not ok:
        raise AccessError(f"the credential presented is not {agency}'s (Art. 24): one agency "
                          "cannot act as another; ask the information center for a token")


def agency_of(token: str) -> str:
    """The agency a bearer token names (``gbt_<agency>.<secret>``); AccessError if it names
    none (a token issued before tokens named their agency: have it issued again)."""
    name, dot, secret = token.removeprefix(PREFIX).partition(".")
    if not token.startswith(PREFIX) or not dot or not secret or not AGENCY.match(name):
        raise AccessError("the bearer token is not a govbus token (gbt_<agency>.<secret>); a "
                          "token issued before tokens named their agency must be issued again "
                          "(`govbus access issue`)", rule="access.malformed_token")
    return name


class Verified:
    """Bearer tokens checked once, for a service that checks one on every call: the scrypt
    hash is computed when a token is first seen or its credential was issued again; later
    calls cost one indexed read, which still sees a revocation or a rotation at once."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, bytes], Any] = {}

    def agency(self, dsn: str, token: str | None) -> str:
        """The agency ``token`` is the credential of; AccessError otherwise (Art. 24)."""
        if not token:
            raise AccessError("no credential: send the agency's token as `Authorization: "
                              "Bearer <token>` (Art. 24)", rule="access.no_token")
        agency = agency_of(token)
        digest = hashlib.sha256(token.encode()).digest()
        try:
            with db.transaction(dsn) as conn, conn.cursor() as cur:
                cur.execute("SELECT salt, token_hash, issued_at FROM agency_credentials "
                            "WHERE agency = %s", (agency,))
                row = cur.fetchone()
        except psycopg2.Error as exc:
            raise DatabaseError(f"cannot check {agency}'s credential: {exc}") from exc
        if row is not None and self._seen.get((agency, digest)) == row[2]:
            return agency
        salt, stored = (bytes(row[0]), bytes(row[1])) if row else (b"\0" * 16, b"")
        if not hmac.compare_digest(_hash(token, salt), stored):
            raise AccessError(f"the token is not {agency}'s credential, or it was revoked or "
                              "issued again (Art. 24); ask the information center for a token")
        if len(self._seen) > 10_000:
            self._seen.clear()
        self._seen[(agency, digest)] = row[2]
        with contextlib.suppress(psycopg2.Error), db.transaction(dsn) as conn, \
                conn.cursor() as cur:
            cur.execute("UPDATE agency_credentials SET last_used_at = now() WHERE agency = %s",
                        (agency,))
        return agency


def token_from(token_file: str | None = None) -> str | None:
    """``--token-file``, else ``GOVBUS_TOKEN_FILE``, else ``GOVBUS_TOKEN``. A token file
    readable by group or others is refused: the token is a password."""
    access = Access.from_env()
    path = token_file or access.token_file
    if path:
        try:
            mode = Path(path).stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise AccessError(f"token file {path} is readable by others "
                                  f"({stat.filemode(mode)}): chmod 600 it")
            return Path(path).read_text().strip()
        except OSError as exc:
            raise AccessError(f"cannot read token file {path}: {exc.strerror}") from exc
    return access.token


def require(dsn: str, agency: str, token_file: str | None = None) -> str:
    """The one check every command that acts as ``agency`` calls; returns the agency."""
    authenticate(dsn, agency, token_from(token_file))
    return agency


def init_admin(dsn: str, folder: Path) -> Path | None:
    """Create the information center's credential in ``folder`` (mode 0600) unless it has
    one; the token file's path when created, None when one existed."""
    if any(c["agency"] == INFORMATION_CENTER for c in list_credentials(dsn)):
        return None
    token = issue(dsn, INFORMATION_CENTER, "govbus up")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ADMIN_TOKEN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    return path
