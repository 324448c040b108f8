"""The registered public keys (``agency_keys``): which key speaks for which agency, and for
the bus (docs/security.md; Art. 8, 24).

The information center registers the public half an agency hands over, and revokes it; the
hot path reads the whole set with its grants (:func:`read_keys`), so a registration or a
revocation takes effect within ``GOVBUS_GRANT_REFRESH_S`` without a restart. The bus's keys,
that sign deliveries, are held under :data:`BUS`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.errors

from govbus.core import db
from govbus.core.errors import DatabaseError, GovbusError
from govbus.core.signatures import (
    Ed25519PublicKey,
    PublicKey,
    key_id,
    public_from_raw,
    public_pem,
    raw_public,
)

#: the name the bus's own keys are registered under: no agency of a catalogue is called so
BUS = "govbus"


class KeyRegistryError(GovbusError):
    """A key cannot be registered or revoked as asked."""

    rule = "keys.refused"
    article = "Art. 8"


@dataclass(frozen=True)
class KeyRow:
    key_id: str
    agency: str
    public_key: bytes  # 32 raw bytes
    registered_at: dt.datetime
    registered_by: str
    revoked_at: dt.datetime | None
    revoked_by: str | None

    @property
    def valid(self) -> bool:
        return self.revoked_at is None

    def as_public(self) -> PublicKey:
        return PublicKey(self.key_id, self.agency, public_from_raw(self.public_key),
                         self.revoked_at is not None)

    def as_dict(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "agency": self.agency,
                "public_key_pem": public_pem(public_from_raw(self.public_key)).decode(),
                "registered_at": self.registered_at.isoformat(),
                "registered_by": self.registered_by,
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
                "revoked_by": self.revoked_by, "valid": self.valid}


_COLUMNS = ("key_id, agency, public_key, registered_at, registered_by, revoked_at, revoked_by")


def _row(r: tuple[Any, ...]) -> KeyRow:
    return KeyRow(r[0], r[1], bytes(r[2]), r[3], r[4], r[5], r[6])


def read_keys(cur: Any) -> list[KeyRow]:
    """Every registered key, revoked ones included (a revoked key is refused by name)."""
    cur.execute(f"SELECT {_COLUMNS} FROM agency_keys ORDER BY agency, registered_at, key_id")
    return [_row(r) for r in cur.fetchall()]


def list_keys(dsn: str, agency: str | None = None) -> list[KeyRow]:
    try:
        with db.transaction(dsn) as conn, conn.cursor() as cur:
            rows = read_keys(cur)
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot read the registered keys: {exc}") from exc
    return [r for r in rows if agency is None or r.agency == agency]


def register(dsn: str, agency: str, key: Ed25519PublicKey, registered_by: str) -> KeyRow:
    """Register ``key`` for ``agency``; the same key registered again for the same agency is
    a no-op returning its row. A key already registered for another agency, or revoked, is
    refused: a key speaks for one agency only, and a revoked key stays revoked."""
    raw, kid = raw_public(key), key_id(key)
    try:
        with db.transaction(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT set_config('govbus.actor', %s, true)", (registered_by,))
            cur.execute(f"SELECT {_COLUMNS} FROM agency_keys WHERE key_id = %s OR "
                        "public_key = %s", (kid, raw))
            found = cur.fetchone()
            if found is None:
                cur.execute(f"INSERT INTO agency_keys (key_id, agency, public_key, "
                            f"registered_by) VALUES (%s, %s, %s, %s) RETURNING {_COLUMNS}",
                            (kid, agency, raw, registered_by))
                found = cur.fetchone()
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot register key {kid} of {agency}: {exc}") from exc
    row = _row(found)
    if row.agency != agency:
        raise KeyRegistryError(f"key {kid} is registered for {row.agency}: a key speaks for "
                               "one agency only (Art. 8); the agency generates a pair of its "
                               "own")
    if not row.valid:
        raise KeyRegistryError(f"key {kid} of {agency} was revoked on "
                               f"{row.revoked_at:%Y-%m-%d %H:%M} by {row.revoked_by}: a revoked "
                               "key is never valid again; generate a new pair")
    return row


def revoke(dsn: str, agency: str, kid: str, revoked_by: str) -> KeyRow:
    """Revoke ``agency``'s key ``kid`` (from now on, what it signed is refused); KeyRegistryError
    when the agency has no such key. Revoking a revoked key changes nothing."""
    try:
        with db.transaction(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT set_config('govbus.actor', %s, true)", (revoked_by,))
            cur.execute("UPDATE agency_keys SET revoked_at = now(), revoked_by = %s "
                        "WHERE key_id = %s AND agency = %s AND revoked_at IS NULL",
                        (revoked_by, kid, agency))
            cur.execute(f"SELECT {_COLUMNS} FROM agency_keys WHERE key_id = %s AND agency = %s",
                        (kid, agency))
            found = cur.fetchone()
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot revoke key {kid} of {agency}: {exc}") from exc
    if found is None:
        held = [r.key_id for r in list_keys(dsn, agency)]
        raise KeyRegistryError(f"{agency} has no key {kid!r}; its keys: "
                               f"{', '.join(held) if held else 'none registered'}")
    return _row(found)
