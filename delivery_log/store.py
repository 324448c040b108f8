"""The delivery log in PostgreSQL: appending, verifying, listing and receipts.

Every delivery is logged once, in a tamper-evident hash chain. Its writers are the hot path's
settling processes (data exchange, after the broker acknowledged the delivery and before the
batch's offsets are committed) and the online query and backfill (:mod:`govbus.query`: a query
is logged before its answer is returned, a backfill chunk once the broker acknowledged it).
A replay writes nothing twice: keys (event_id, recipient, channel) already in the log are
filtered out, and duplicates within a batch dropped, under the writer's lock.

Tamper evidence: ``row_hash = sha256(prev_hash + canonical(row))``, chained from row to row
within a shard (records, hashes and checks are pure, in :mod:`govbus.delivery_log.chain`). A
shard is the ingest topic-partition a delivered event came from, ``query`` or ``backfill`` (``""``
for the rows logged before shards): each has its own chain, numbered from 1, and its own head in
``delivery_log_head`` (migrations 0003, 0015), so deleting a shard's newest rows shows. Seqs are
assigned by the writer, not by a sequence, so a rolled-back batch leaves no gap. One writer at a
time per shard (``pg_advisory_xact_lock(LOCK_KEY, hashtext(shard))``) keeps each chain linear;
writers of disjoint shards (two hot-path workers own disjoint partitions) never wait for each
other. :func:`verify` walks every shard's chain with a server-side cursor and names each broken
seq; every checkpoint covers every shard's head.

This is the evidence for supervision of use (Art. 24: use limited to duties, no passing on;
Art. 31: misuse, leaks, widened use) and for the yearly sharing report (Art. 26, 28).
"""

from __future__ import annotations

import datetime as dt
import io
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from govbus.core import db
from govbus.core.errors import DatabaseError
from govbus.delivery_log.archive import boundary
from govbus.delivery_log.chain import (
    CHANNELS,
    GENESIS,
    LEGACY,
    Head,
    Key,
    LogEntry,
    LoggedRow,
    Prepared,
    ShardedChecker,
    VerifyReport,
    dedupe,
    link,
    prepare,
)
from govbus.delivery_log.checkpoints import Binder, Checkpoint, log_chain, log_shard

#: advisory lock of a shard's writer: (LOCK_KEY, hashtext(shard)), two int4 keys
LOCK_KEY = 0x60B0DE11
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


# --- PostgreSQL -------------------------------------------------------------------------

_US = "round(extract(epoch FROM {0}) * 1000000)::bigint"
_FINITE_US = "CASE WHEN isfinite({0}) THEN " + _US + " END"
_ROW_SQL = ("SELECT seq, event_id, channel, provider, recipient, resource_id, grant_id, fields, "
            "masked_fields, topic, kafka_partition, kafka_offset, "
            f"{_FINITE_US.format('delivered_at')}, {_FINITE_US.format('logged_at')}, "
            "prev_hash, row_hash, content_sha256, shard FROM deliveries ORDER BY shard, seq")
_HEAD_SQL = (f"SELECT shard, seq, row_hash, {_FINITE_US.format('logged_at')} "
             "FROM delivery_log_head")


def _at_us(us: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=us)


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")


def _copy_value(value: Any) -> str:
    """One value in COPY's text format: ``\\N`` for null, arrays as quoted literals."""
    if value is None:
        return "\\N"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        value = "{" + ",".join('"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
                               for v in value) + "}"
    text = str(value)
    return text.translate(_COPY_ESCAPES) if _COPY_SPECIAL.search(text) else text


# a delivery rendered ahead, its COPY columns 2-13, and its content hash column (or \N)
Ready = tuple[Prepared, str, str]


def _ready(deliveries: Sequence[LogEntry]) -> list[Ready]:
    """Everything of each row that does not depend on its place in the chain, rendered before
    the writer's lock: the hashed content but for seq and logged_us (:func:`prepare`), and the
    COPY text of the columns from ``event_id`` to ``delivered_at``.

    Values that repeat across a batch (field lists, timestamps) are formatted once, and a row's
    text is checked for characters COPY must escape once, not value by value; only a row that
    has one is formatted value by value."""
    text = _copy_value
    arrays: dict[Any, str] = {}  # field names: a tuple (or a list: formatted every time)
    stamps: dict[int, str] = {}
    special = _COPY_SPECIAL.search

    def array(names: Sequence[str]) -> str:
        if type(names) is not tuple:
            return text(list(names))
        found = arrays.get(names)
        if found is None:
            found = arrays[names] = text(list(names))
        return found

    out = []
    for d in deliveries:
        p = prepare(d)
        stamp = stamps.get(p.delivered_us)
        if stamp is None:
            stamp = stamps[p.delivered_us] = _at_us(p.delivered_us).isoformat()
        topic = d.topic
        plain = (d.event_id, d.channel, d.provider, d.recipient, d.resource, topic or "")
        if special("".join(plain)):
            strings = [text(v) for v in plain[:5]]
            topic = text(topic)
        else:
            strings = list(plain[:5])
            topic = "\\N" if topic is None else topic
        partition, offset = d.partition, d.offset
        out.append((p, "\t".join((*strings, str(d.grant_id), array(d.fields),
                                   array(d.masked_fields), topic,
                                   "\\N" if partition is None else str(partition),
                                   "\\N" if offset is None else str(offset), stamp)),
                    "\\N" if d.content_sha256 is None else d.content_sha256))
    return out


@dataclass(frozen=True)
class AppendResult:
    """What :func:`append` did: rows written, deliveries left out as logged already, the head
    of the last shard written (of the legacy shard when none was), every written shard's new
    head, and how long the writer waited for the shards' locks (other writers of the same
    shards; zero for shards nobody else writes)."""

    written: int
    duplicates: int
    head: Head
    heads: dict[str, Head] = field(default_factory=dict)
    waited_s: float = 0.0
    #: left out as logged, but of other bytes than the logged row: kept in log_conflicts
    conflicts: int = 0


def _heads(cur: Any, shards: list[str]) -> dict[str, Head]:
    cur.execute(_HEAD_SQL + " WHERE shard = ANY(%s) FOR UPDATE", (shards,))
    return {str(s): Head(int(seq), str(h), us) for s, seq, h, us in cur.fetchall()}


def append(conn: psycopg2.extensions.connection, deliveries: Sequence[LogEntry]
           ) -> AppendResult:
    """Append ``deliveries`` not logged yet, each to its shard's chain, inside the caller's
    transaction.

    Takes the advisory lock of every shard the batch writes (released at commit/rollback),
    in the order of their lock keys, so that two writers never wait for each other in a
    circle; between taking them and committing, no other writer reads or moves those shards'
    heads. A shard's head row is created on its first use. Optimistic: a batch is first copied
    as it is (after dropping keys it repeats), which the unique key (event_id, recipient,
    channel) refuses if any was logged before, in whatever shard; only then, after a replay,
    are the logged keys looked up and left out.
    """
    fresh = _ready(dedupe(deliveries, set()))  # before the locks: they serialise a shard
    shards = sorted({r[0].delivery.shard for r in fresh})
    with conn.cursor() as cur:
        if not shards:
            cur.execute(_HEAD_SQL + " WHERE shard = %s", (LEGACY,))
            found = cur.fetchone()
            head = Head(int(found[1]), str(found[2]), found[3]) if found else Head(0, GENESIS)
            return AppendResult(0, len(deliveries), head)
        cur.execute("SET LOCAL lock_timeout = '30s'")
        started = time.perf_counter()
        # one statement, the locks taken row by row in the order of their keys: a lock a
        # statement per shard cost a round trip each (a dozen shards per batch in `make bench`)
        cur.execute("SELECT count(pg_advisory_xact_lock(%s, k)) FROM (SELECT DISTINCT "
                    "hashtext(s) AS k FROM unnest(%s::text[]) s ORDER BY k) keys",
                    (LOCK_KEY, shards))
        waited = time.perf_counter() - started
        cur.execute("INSERT INTO delivery_log_head (shard, seq, row_hash) SELECT s, 0, %s "
                    "FROM unnest(%s::text[]) s ON CONFLICT DO NOTHING", (GENESIS, shards))
        heads = _heads(cur, shards)
        if len(heads) != len(shards):
            raise DatabaseError("delivery_log_head lacks a shard's row just written: the log "
                                "was tampered with; run `govbus log verify`")
        cur.execute(f"SELECT {_US.format('clock_timestamp()')}")
        logged_us = max([int(cur.fetchone()[0]),  # type: ignore[index]
                         *(h.logged_us or 0 for h in heads.values())])
        cur.execute("SAVEPOINT optimistic")
        try:
            rows = _copy(cur, fresh, heads, logged_us)
        except psycopg2.errors.UniqueViolation:  # a replay: some are logged already
            cur.execute("ROLLBACK TO SAVEPOINT optimistic")
            logged = _logged(cur, [p.delivery.key for p, _, _ in fresh])
            conflicts = _conflicts(cur, [r[0].delivery for r in fresh
                                         if r[0].delivery.key in logged], logged)
            fresh = [r for r in fresh if r[0].delivery.key not in logged]
            rows = _copy(cur, fresh, heads, logged_us)
        else:
            conflicts = 0
        moved: dict[str, Head] = {}
        for shard, written in rows.items():
            last = written[-1]
            moved[shard] = Head(last.seq, last.row_hash, last.logged_us)
            cur.execute("UPDATE delivery_log_head SET seq = %s, row_hash = %s, logged_at = %s "
                        "WHERE shard = %s",
                        (last.seq, last.row_hash, _at_us(int(last.logged_us or 0)), shard))
        count = sum(len(r) for r in rows.values())
        head = moved[max(moved)] if moved else heads[shards[-1]]
        return AppendResult(count, len(deliveries) - count, head, moved, waited, conflicts)


def _logged(cur: Any, keys: list[Key]) -> dict[Key, str | None]:
    """Which of ``keys`` the log holds, each with the hash of what its row says was
    delivered."""
    cur.execute("SELECT event_id, recipient, channel, content_sha256 FROM deliveries "
                "WHERE (event_id, recipient, channel) IN (SELECT * FROM "
                "unnest(%s::text[], %s::text[], %s::text[]))",
                ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]))
    return {(str(e), str(r), str(c)): h for e, r, c, h in cur.fetchall()}


def _conflicts(cur: Any, repeated: list[LogEntry], logged: dict[Key, str | None]) -> int:
    """Keep in ``log_conflicts`` every repeated delivery whose bytes differ from its logged
    row's: an event id reused for other content is then on record, not deduplicated away (a
    true replay has the same bytes). How many were new."""
    odd = [(d.event_id, d.recipient, d.channel, d.shard, logged[d.key], d.content_sha256)
           for d in repeated if d.content_sha256 is not None
           and logged.get(d.key) is not None and logged[d.key] != d.content_sha256]
    if not odd:
        return 0
    new = psycopg2.extras.execute_values(
        cur, "INSERT INTO log_conflicts (event_id, recipient, channel, shard, logged_sha256, "
             "delivered_sha256) VALUES %s ON CONFLICT DO NOTHING RETURNING 1", odd, fetch=True)
    return len(new)


_EMPTY = Head(0, GENESIS)


def _copy(cur: Any, ready: list[Ready], heads: dict[str, Head], logged_us: int
          ) -> dict[str, list[LoggedRow]]:
    """Chain ``ready`` rows, each after its shard's head, and COPY them (never before a head's
    time); the rows written, per shard."""
    by_shard: dict[str, list[Ready]] = {}
    for r in ready:
        by_shard.setdefault(r[0].delivery.shard, []).append(r)
    if not by_shard:
        return {}
    logged_at = _at_us(logged_us).isoformat()
    lines, written = [], {}
    for shard, mine in by_shard.items():
        rows = written[shard] = link([p for p, _, _ in mine], heads.get(shard, _EMPTY), logged_us)
        text = shard.translate(_COPY_ESCAPES)
        lines += [f"{text}\t{r.seq}\t{columns}\t{logged_at}\t{r.prev_hash}\t{r.row_hash}\t"
                  f"{content}" for r, (_, columns, content) in zip(rows, mine, strict=True)]
    lines.append("")
    # COPY rather than INSERT ... VALUES: no per-row statement text to build and parse
    cur.copy_expert(
        "COPY deliveries (shard, seq, event_id, channel, provider, recipient, resource_id, "
        "grant_id, fields, masked_fields, topic, kafka_partition, kafka_offset, "
        "delivered_at, logged_at, prev_hash, row_hash, content_sha256) FROM STDIN",
        io.StringIO("\n".join(lines)))
    return written


def verify(dsn: str, max_problems: int = 1000, checkpoints: Sequence[Checkpoint] = ()
           ) -> VerifyReport:
    """Walk every shard's chain in seq order, recomputing every hash, in one consistent
    snapshot, each from the last row of it archived out of the database (``log_archives``)
    when months were, and each against its own head; each row at a seq that ``checkpoints``
    cover for its shard must have the hash they signed (their signatures checked by the
    caller, :func:`govbus.delivery_log.checkpoints.check_series`), and every receipt that
    names what was received must match the log's hash of it."""
    conn = db.connect(dsn)
    try:
        conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ,
                         readonly=True)
        with conn.cursor() as cur:
            starts, archives = boundary(cur)
            checker = ShardedChecker(max_problems, starts)
            cur.execute(_HEAD_SQL)
            heads = {str(s): Head(int(seq), str(h), us) for s, seq, h, us in cur.fetchall()}
        named = {s for cp in checkpoints for n in cp.heads if (s := log_shard(n)) is not None}
        binders = {s: Binder(log_chain(s), checkpoints, max_problems,
                             floor=starts[s].seq if s in starts else 0)
                   for s in sorted({*heads, *named, *starts})} if checkpoints else {}
        with conn.cursor(name="govbus_delivery_log_verify") as cur:
            cur.itersize = 10000
            cur.execute(_ROW_SQL)
            for rec in cur:
                row = LoggedRow(*rec)
                checker.feed(row)
                binder = binders.get(row.shard)
                if binder is None and checkpoints:
                    binder = binders[row.shard] = Binder(log_chain(row.shard), checkpoints,
                                                         max_problems)
                if binder is not None:
                    binder.feed(row.seq, row.row_hash)
        with conn.cursor() as cur:  # what recipients received against what the log says
            cur.execute("SELECT d.shard, d.seq, d.recipient, d.event_id FROM deliveries d "
                        "JOIN receipts r USING (event_id, recipient, channel) "
                        "WHERE r.content_sha256 <> d.content_sha256 ORDER BY d.shard, d.seq "
                        "LIMIT %s", (max_problems,))
            mismatched = cur.fetchall()
            cur.execute("SELECT event_id, recipient, channel, logged_sha256, delivered_sha256 "
                        "FROM log_conflicts ORDER BY seen_at LIMIT %s", (max_problems,))
            conflicting = cur.fetchall()
        conn.rollback()
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot read the delivery log: {exc}") from exc
    finally:
        conn.close()
    report = checker.finish(heads)
    report.archives = archives
    for shard, seq, recipient, event_id in mismatched:
        report.add_problem(seq, "receipt_mismatch", f"{recipient} confirmed receiving other "
                           f"bytes for event {event_id} than the log records as delivered",
                           max_problems, shard)
    for event_id, recipient, channel, logged_sha, delivered_sha in conflicting:
        report.add_problem(None, "event_id_conflict", f"event {event_id} was delivered to "
                           f"{recipient} ({channel}) as {delivered_sha[:16]}… besides the "
                           f"logged {logged_sha[:16]}…: one event id for two contents",
                           max_problems)
    for shard, b in sorted(binders.items()):
        for f in b.finish():
            report.add_problem(f.seq, f.kind, f.message, max_problems, shard)
    return report


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def list_deliveries(dsn: str, recipient: str | None = None, provider: str | None = None,
                    resource: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Logged deliveries, newest first, each with ``received_at`` (None until confirmed)."""
    if limit < 1:
        raise ValueError(f"limit must be positive, not {limit}")
    where, params = [], []
    for column, value in (("recipient", recipient), ("provider", provider),
                          ("resource_id", resource)):
        if value is not None:
            where.append(f"d.{column} = %s")
            params.append(value)
    sql = ("SELECT d.shard, d.seq, d.event_id, d.channel, d.provider, d.recipient, "
           "d.resource_id AS resource, d.grant_id, d.fields, d.masked_fields, d.topic, "
           "d.kafka_partition AS partition, d.kafka_offset AS offset, "
           "floor(extract(epoch FROM d.delivered_at) * 1000)::bigint AS delivered_ms, "
           "d.logged_at, d.row_hash, r.received_at FROM deliveries d "
           "LEFT JOIN receipts r USING (event_id, recipient, channel) "
           f"WHERE {' AND '.join(where) or 'true'} "
           "ORDER BY d.logged_at DESC, d.shard DESC, d.seq DESC LIMIT %s")
    try:
        with db.transaction(dsn) as conn, conn.cursor(
                cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(sql, [*params, limit])
            rows = [dict(r) for r in cur.fetchall()]
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot list deliveries: {exc}") from exc
    for r in rows:
        r["logged_at"], r["received_at"] = _iso(r["logged_at"]), _iso(r["received_at"])
    return rows


def confirm_receipts(dsn: str, keys: Iterable[Key | tuple[str, str, str, str | None]]) -> int:
    """Record that recipients received deliveries; idempotent. Returns how many were new.

    A key may carry a fourth item, the hash of what the recipient received (the leaf hash of
    the delivery's signature, hex): :func:`verify` compares it with the log's."""
    wanted = list({(str(k[0]), str(k[1]), str(k[2])): (str(k[0]), str(k[1]), str(k[2]),
                                                      k[3] if len(k) > 3 else None)
                   for k in keys}.values())
    odd = sorted({w[2] for w in wanted} - set(CHANNELS))
    if odd:
        raise ValueError(f"channel(s) {', '.join(odd)} not one of {', '.join(CHANNELS)}")
    if not wanted:
        return 0
    try:
        with db.transaction(dsn) as conn, conn.cursor() as cur:
            new = psycopg2.extras.execute_values(
                cur, "INSERT INTO receipts (event_id, recipient, channel, content_sha256) "
                     "VALUES %s ON CONFLICT DO NOTHING RETURNING 1", wanted, page_size=1000,
                fetch=True)
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot record receipts: {exc}") from exc
    return len(new)


class LogWriter:
    """:func:`append` on one reused connection, one transaction per call; DatabaseError if
    PostgreSQL fails (the connection is then dropped and opened again on the next call)."""

    def __init__(self, dsn: str) -> None:
        self.db = db.Reused(dsn)

    def append(self, deliveries: Sequence[LogEntry]) -> AppendResult:
        with self.db.use("delivery log write failed") as conn, conn:
            return append(conn, deliveries)

    def close(self) -> None:
        self.db.close()
