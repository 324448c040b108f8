"""The control plane as the hot path reads it: grants, catalogue metadata and the registered
signing keys, cached.

They are reloaded every ``GOVBUS_GRANT_REFRESH_S`` seconds (default 1.0), so a grant, a key
registered or either revoked takes effect without a restart (Art. 15, 18, 21, 24); routing
refuses to run on grants older than that (:meth:`ControlPlane.current` raises rather than
route on stale grants).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import psycopg2

from govbus.core import db, keys_store, metrics, sharing_store
from govbus.core.errors import DatabaseError
from govbus.core.sharing import Grant
from govbus.core.signatures import EVENTS, Verifier

log = logging.getLogger("govbus.control_plane")


def load_catalogue_meta(dsn: str) -> dict[str, dict[str, Any]]:
    """The current catalogue metadata of every resource (share class, provision methods)."""
    try:
        with db.transaction(dsn) as conn, conn.cursor() as cur:
            return read_catalogue_meta(cur)
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot read the catalogue: {exc}") from exc


def read_catalogue_meta(cur: Any) -> dict[str, dict[str, Any]]:
    """:func:`load_catalogue_meta` on the caller's cursor."""
    cur.execute("SELECT resource_id, metadata FROM catalogue_resources")
    return {row[0]: row[1] for row in cur.fetchall()}


class ControlPlane:
    """Grants and catalogue metadata, cached and reloaded every ``refresh_s`` seconds."""

    def __init__(self, dsn: str, refresh_s: float, group: str = "govbus-hotpath") -> None:
        self.refresh_s = refresh_s
        # kept: a connection per reload had PostgreSQL start a backend every second
        self.db = db.Reused(dsn)
        self._gauges = (metrics.ROUTER_GRANTS.labels(group),
                        metrics.ROUTER_GRANTS_LOADED.labels(group))
        self.grants: list[Grant] = []
        self.meta: dict[str, dict[str, Any]] = {}
        #: checks events against the agencies' registered keys; a new one (its cache of
        #: verified batches empty) whenever a key is registered or revoked
        self.verifier = Verifier([], EVENTS)
        self._keys: tuple[tuple[str, str, bool], ...] = ()
        self.loaded_at: dt.datetime | None = None  # wall clock when the last load began
        self._due = 0.0

    def reload(self) -> None:
        """Load now; DatabaseError if PostgreSQL cannot answer."""
        started = dt.datetime.now(dt.UTC)
        with self.db.use("cannot read grants and the catalogue") as conn, conn, \
                conn.cursor() as cur:
            grants = sharing_store.read_grants(cur)
            meta = read_catalogue_meta(cur)
            keys = [k for k in keys_store.read_keys(cur) if k.agency != keys_store.BUS]
        self.grants, self.meta, self.loaded_at = grants, meta, started
        seen = tuple((k.key_id, k.agency, k.valid) for k in keys)
        if seen != self._keys:
            self.verifier, self._keys = Verifier([k.as_public() for k in keys], EVENTS), seen
        self._due = time.monotonic() + self.refresh_s
        self._gauges[0].set(len(grants))
        self._gauges[1].set(started.timestamp())

    def current(self) -> list[Grant]:
        """Grants no older than ``refresh_s``; raises rather than route on stale grants."""
        if time.monotonic() >= self._due:
            self.reload()
        return self.grants

    def close(self) -> None:
        self.db.close()

    def refresh_idle(self) -> None:
        """Reload if due while no events flow; a failure is logged and retried later."""
        if time.monotonic() < self._due:
            return
        try:
            self.reload()
        except DatabaseError as exc:
            self._due = time.monotonic() + self.refresh_s
            log.warning("cannot refresh grants: %s", exc)
