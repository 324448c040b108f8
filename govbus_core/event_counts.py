"""Durable daily counts of the gate's verdicts (migration 0005), for Art. 14, 28 and 31.

The gate writes its counts once per batch (:class:`CountWriter`), after every output was
acknowledged and before it commits its Kafka offsets. A crash in between replays the batch;
the per-partition guard (:func:`countable`, pure) keeps the replay from being counted twice.
While PostgreSQL is unreachable the counts wait in memory and the gate goes on validating.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from govbus.core import db
from govbus.core.errors import DatabaseError

log = logging.getLogger("govbus.event_counts")


class Judged(NamedTuple):
    """One gate verdict, reduced to what the counts keep (no event id, no record). A named
    tuple: the gate builds one per event (see :class:`govbus.delivery_log.chain.LogEntry`)."""

    topic: str
    partition: int
    offset: int
    agency: str
    resource_id: str
    outcome: str  # accepted | rejected
    rule: str = ""


Guard = tuple[int, int]  # first_offset, next_offset of the last batch counted
CountKey = tuple[str, str, str, str]  # agency, resource, outcome, rule


def countable(judged: Sequence[Judged], guards: dict[tuple[str, int], Guard]
              ) -> tuple[list[Judged], dict[tuple[str, int], Guard]]:
    """Drop the replayed part of a batch; return what to count and the new guards."""
    spans: dict[tuple[str, int], Guard] = {}
    for j in judged:
        key = (j.topic, j.partition)
        low, high = spans.get(key, (j.offset, j.offset + 1))
        spans[key] = (min(low, j.offset), max(high, j.offset + 1))
    new: dict[tuple[str, int], Guard] = {}
    replayed_below: dict[tuple[str, int], int] = {}  # offsets below this were counted
    for key, (low, high) in spans.items():
        first, nxt = guards.get(key, (-1, -1))
        if first <= low < nxt:  # starts inside the last batch counted: a replay
            new[key] = (first, max(nxt, high))
            replayed_below[key] = nxt
        else:  # the next batch, or a recreated topic (offset below the last batch)
            new[key] = (low, high)
    keep = [j for j in judged if j.offset >= replayed_below.get((j.topic, j.partition), -1)]
    return keep, new


def aggregate(judged: Iterable[Judged]) -> Counter[CountKey]:
    return Counter((j.agency, j.resource_id, j.outcome, j.rule) for j in judged)


_UPSERT = """INSERT INTO event_counts (day, agency, resource_id, outcome, rule, events, last_at)
             VALUES %s ON CONFLICT (day, agency, resource_id, outcome, rule)
             DO UPDATE SET events = event_counts.events + EXCLUDED.events,
                           last_at = GREATEST(event_counts.last_at, EXCLUDED.last_at)"""
_GUARDS = """INSERT INTO event_count_offsets (topic, kafka_partition, first_offset, next_offset)
             VALUES %s ON CONFLICT (topic, kafka_partition)
             DO UPDATE SET first_offset = EXCLUDED.first_offset,
                           next_offset = EXCLUDED.next_offset"""


def record(conn: psycopg2.extensions.connection, judged: Sequence[Judged],
           at: dt.datetime) -> int:
    """Count a batch in one transaction; returns how many verdicts were counted."""
    if not judged:
        return 0
    parts = sorted({(j.topic, j.partition) for j in judged})
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT topic, kafka_partition, first_offset, next_offset "
                        "FROM event_count_offsets WHERE (topic, kafka_partition) IN %s "
                        "FOR UPDATE", (tuple(parts),))
            guards = {(t, p): (f, n) for t, p, f, n in cur.fetchall()}
            keep, new = countable(judged, guards)
            rows = [(at.date(), a, r, o, rule, n, at)
                    for (a, r, o, rule), n in sorted(aggregate(keep).items())]
            if rows:
                psycopg2.extras.execute_values(cur, _UPSERT, rows, page_size=len(rows))
            psycopg2.extras.execute_values(cur, _GUARDS,
                                           [(t, p, f, n) for (t, p), (f, n) in new.items()])
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot record the gate's counts: {exc}") from exc
    return len(keep)


class CountWriter:
    """:func:`record` on one reused connection; keeps the counts while PostgreSQL is away.

    The gate must not stop validating because the statistics cannot be written (its schemas
    are cached, so it keeps working through a database outage): a failed write keeps the
    verdicts in memory, up to ``max_pending``, and the next batch writes them all.
    """

    def __init__(self, dsn: str, max_pending: int = 500_000) -> None:
        self.max_pending = max_pending
        self.pending: list[Judged] = []
        self.dropped = 0
        self.db = db.Reused(dsn)

    def write(self, judged: Sequence[Judged]) -> int:
        """Count ``judged`` and whatever waits; returns how many were counted now."""
        self.pending.extend(judged)
        if not self.pending:
            return 0
        try:
            with self.db.use("cannot record the gate's counts") as conn:
                counted = record(conn, self.pending, dt.datetime.now(dt.UTC))
        except DatabaseError as exc:
            excess = len(self.pending) - self.max_pending
            if excess > 0:
                self.dropped += excess
                del self.pending[:excess]
            log.warning("gate counts kept in memory (%d verdicts, %d dropped) until "
                        "PostgreSQL answers: %s", len(self.pending), self.dropped, exc)
            return 0
        self.pending = []
        return counted

    def close(self) -> None:
        self.db.close()
