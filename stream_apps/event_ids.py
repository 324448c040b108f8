"""An event id names one event (Art. 19: the provider's data is accurate and consistent).

The hot path accepts an event only if its id was never accepted for a *different* record: the
same record again (a producer's retry, a batch replayed after a crash, the same change
published again with a new ``ts_ms``, which says when it was published) passes and is
de-duplicated downstream, another record under an accepted id is rejected with
``envelope.event_id_reused``, since delivering both would give recipients two events under one
id, one log row and one receipt for the two.

What was accepted is the ``accepted_events`` table (id, a 16-byte BLAKE2b digest of the framed
record, resource), written when the batch settles; ids of batches judged but not settled yet,
and of recent ones, are held in memory, so a reuse within the batches in flight is caught too.
One query per batch looks up the ids its records' ``event_id`` headers name, on a thread of
its own while the batch is judged (the first check waits for it); an event whose header is
missing or differs from its body is looked up on its own. A database error fails the batch
(it is retried), never accepts unchecked.

The window is the table's retention (``GOVBUS_ACCEPTED_EVENTS_RETENTION_DAYS``). Two workers that
take the same id on different partitions within the same second are not told apart: the
second row is not inserted, both events are delivered; a provider's ids are unique per event
by contract (the envelope), and this is the check of that contract, not its guarantee.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from typing import Any

import psycopg2

from govbus.core import db
from govbus.core.errors import Violation

#: ids of recent batches kept in memory (their digests), about 100 bytes each
RECENT = 100_000
RULE = "envelope.event_id_reused"


def _varint_length(value: int) -> int:
    """Bytes of ``value`` as Avro writes a long (zig-zag, then 7 bits a byte)."""
    return max(1, (((value << 1) ^ (value >> 63)).bit_length() + 6) // 7)


def digest(payload: bytes | None, ts_ms: int | None = None) -> bytes:
    """A 16-byte digest of an event's framed record, without its ``ts_ms``: the envelope's
    last field is when the record was *published*, which a retry of the same event (the
    outbox relay after a crash, say) sets anew, while everything else it carries is the
    same. ``ts_ms`` is the decoded value, whose encoding ends the record."""
    body = payload or b""
    if ts_ms is not None:
        body = body[:len(body) - _varint_length(ts_ms)]
    return hashlib.blake2b(body, digest_size=16).digest()


def reused(event_id: str) -> Violation:
    return Violation(RULE, "event_id", "Art. 19",
                     f"event id {event_id[:200]!r} was accepted before for a different record; "
                     "an event id names one event: publish this change under a new id")


def _header(msg: Any) -> str | None:
    for name, value in msg.headers() or ():
        if name == "event_id" and isinstance(value, bytes):
            return value.decode("utf-8", "replace")
    return None


class EventIds:
    """The hot path's memory of accepted event ids; one per worker."""

    LOOKUP = "SELECT event_id, digest FROM accepted_events WHERE event_id = ANY(%s)"

    def __init__(self, dsn: str | None, recent: int = RECENT) -> None:
        self.db = db.Reused(dsn) if dsn else None  # None: memory only (bench.inprocess)
        self.cap = recent
        self.recent: OrderedDict[str, bytes] = OrderedDict()
        self._looked_up: dict[str, bytes | None] = {}
        self._pending: Future[dict[str, bytes]] | None = None
        self._lookups = ThreadPoolExecutor(1, thread_name_prefix="event-ids")

    def prefetch(self, msgs: Iterable[Any]) -> None:
        """Start looking up, in one query on the lookup thread, the ids the batch's headers
        name and memory lacks; the first :meth:`check` waits for the answer."""
        if self._pending is not None:  # an earlier batch's, which no check waited for
            with suppress(Exception):
                self._pending.result()
            self._pending = None
        wanted = {h for m in msgs if (h := _header(m)) is not None and h not in self.recent}
        self._looked_up = dict.fromkeys(wanted)
        if wanted and self.db is not None:
            self._pending = self._lookups.submit(self._lookup, wanted)

    def _answered(self) -> None:
        """The batch's lookup, waited for (its DatabaseError fails the batch)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self._looked_up.update(pending.result())

    def check(self, event_id: str, payload: bytes | None,
              ts_ms: int | None = None) -> bytes | None:
        """The record's digest if ``event_id`` may be accepted for ``payload`` (remembered
        then), ``None`` if the id was accepted for another record (``ts_ms``: the decoded
        event's, left out of the comparison: see :func:`digest`)."""
        if self._pending is not None:
            self._answered()
        mine = digest(payload, ts_ms)
        prior = self.recent.get(event_id)
        if prior is None:
            if event_id in self._looked_up:
                prior = self._looked_up[event_id]
            else:  # no header, or one that is not the body's id: look it up alone
                prior = self._lookup([event_id]).get(event_id)
        if prior is not None and prior != mine:
            return None
        self.recent[event_id] = mine
        self.recent.move_to_end(event_id)
        while len(self.recent) > self.cap:
            self.recent.popitem(last=False)
        return mine

    def _lookup(self, ids: Iterable[str]) -> dict[str, bytes]:
        ids = list(ids)
        if not ids or self.db is None:
            return {}
        with self.db.use("cannot look up accepted event ids") as conn, conn, \
                conn.cursor() as cur:
            cur.execute(self.LOOKUP, (ids,))
            return {e: bytes(d) for e, d in cur.fetchall()}

    def close(self) -> None:
        self._lookups.shutdown()
        if self.db is not None:
            self.db.close()


Row = tuple[str, bytes, str]  # event id, digest, resource id


class Writer:
    """Files a settled batch's accepted ids (the settling process); replays insert nothing."""

    INSERT = """INSERT INTO accepted_events (event_id, digest, resource_id)
                SELECT * FROM unnest(%s::text[], %s::bytea[], %s::text[])
                ON CONFLICT (event_id) DO NOTHING"""

    def __init__(self, dsn: str) -> None:
        self.db = db.Reused(dsn)

    def write(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        ids, digests, resources = zip(*rows, strict=True)
        with self.db.use("cannot record accepted event ids") as conn, conn, \
                conn.cursor() as cur:
            cur.execute(self.INSERT, (list(ids), [psycopg2.Binary(d) for d in digests],
                                      list(resources)))

    def close(self) -> None:
        self.db.close()
