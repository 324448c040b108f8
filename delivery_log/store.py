"""The delivery log in PostgreSQL: appending, verifying, listing and receipts.

Every delivery is logged once, in a tamper-evident hash chain. Its writers are the hot path's
settling processes (data exchange, after the broker acknowledged the delivery and before the
batch's offsets are committed) and the online query and backfill (:mod:`govbus.query`: a query
is logged before its answer is returned, a backfill chunk once the broker acknowledged it).
A replay writes nothing twice: keys (event_id, recipient, channel) already in the log are
filtered out, and duplicates within a batch dropped, under the writer's lock.

Tamper evidence: ``row_hash = sha256(prev_hash + canonical(row))``, chained from row to row
(records, hashes and checks are pure, in :mod:`govbus.delivery_log.chain`). Seqs are assigned
by the writer, not by a sequence, so a rolled-back batch leaves no gap. One writer at a time
(``pg_advisory_xact_lock``) keeps the chain linear however many write; ``delivery_log_head``
(migration 0003) records the last row, so deleting the newest rows shows. :func:`verify` walks
the log with a server-side cursor and names each broken seq.

This is the evidence for supervision of use (Art. 24: use limited to duties, no passing on;
Art. 31: misuse, leaks, widened use) and for the yearly sharing report (Art. 26, 28).
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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
    ChainChecker,
    Head,
    Key,
    LogEntry,
    LoggedRow,
    Prepared,
    VerifyReport,
    dedupe,
    link,
    prepare,
)
from govbus.delivery_log.checkpoints import DELIVERIES, Binder, Checkpoint

LOCK_KEY = 0x60B0DE11  # advisory lock of the single log writer
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


# --- PostgreSQL -------------------------------------------------------------------------

_US = "round(extract(epoch FROM {0}) * 1000000)::bigint"
_FINITE_US = "CASE WHEN isfinite({0}) THEN " + _US + " END"
_ROW_SQL = ("SELECT seq, event_id, channel, provider, recipient, resource_id, grant_id, fields, "
            "masked_fields, topic, kafka_partition, kafka_offset, "
            f"{_FINITE_US.format('delivered_at')}, {_FINITE_US.format('logged_at')}, "
            "prev_hash, row_hash, content_sha256 FROM deliveries ORDER BY seq")
_HEAD_SQL = f"SELECT seq, row_hash, {_FINITE_US.format('logged_at')} FROM delivery_log_head"


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
    written: int
    duplicates: int
    head: Head


def append(conn: psycopg2.extensions.connection, deliveries: Sequence[LogEntry]
           ) -> AppendResult:
    """Append ``deliveries`` not logged yet, inside the caller's transaction.

    Takes the writer's advisory lock (released at commit/rollback) so that reading the head,
    filtering logged keys and appending happen with no other writer in between. Optimistic:
    a batch is first copied as it is (after dropping keys it repeats), which the unique key
    (event_id, recipient, channel) refuses if any was logged before; only then, after a
    replay, are the logged keys looked up and left out.
    """
    fresh = _ready(dedupe(deliveries, set()))  # before the lock: it serialises every writer
    with conn.cursor() as cur:
        cur.execute("SET LOCAL lock_timeout = '30s'")
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        cur.execute(_HEAD_SQL + " WHERE id = 1")
        found = cur.fetchone()
        if found is None:
            raise DatabaseError("delivery_log_head has no row: migration 0003 not applied, "
                                "or the log was tampered with; run `govbus log verify`")
        head = Head(int(found[0]), str(found[1]), found[2])
        cur.execute(f"SELECT {_US.format('clock_timestamp()')}")
        logged_us = max(int(cur.fetchone()[0]), head.logged_us or 0)  # type: ignore[index]
        cur.execute("SAVEPOINT optimistic")
        try:
            rows = _copy(cur, fresh, head, logged_us)
        except psycopg2.errors.UniqueViolation:  # a replay: some are logged already
            cur.execute("ROLLBACK TO SAVEPOINT optimistic")
            logged = _logged(cur, [p.delivery.key for p, _, _ in fresh])
            fresh = [r for r in fresh if r[0].delivery.key not in logged]
            rows = _copy(cur, fresh, head, logged_us)
        if not rows:
            return AppendResult(0, len(deliveries), head)
        last = rows[-1]
        cur.execute("UPDATE delivery_log_head SET seq = %s, row_hash = %s, logged_at = %s "
                    "WHERE id = 1", (last.seq, last.row_hash, _at_us(int(last.logged_us or 0))))
        return AppendResult(len(rows), len(deliveries) - len(rows),
                            Head(last.seq, last.row_hash, last.logged_us))


def _logged(cur: Any, keys: list[Key]) -> set[Key]:
    """Which of ``keys`` the log holds."""
    cur.execute("SELECT event_id, recipient, channel FROM deliveries "
                "WHERE (event_id, recipient, channel) IN (SELECT * FROM "
                "unnest(%s::text[], %s::text[], %s::text[]))",
                ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]))
    return {(str(e), str(r), str(c)) for e, r, c in cur.fetchall()}


def _copy(cur: Any, ready: list[Ready], head: Head, logged_us: int) -> list[LoggedRow]:
    """Chain ``ready`` rows after ``head`` and COPY them (never before the head's time)."""
    if not ready:
        return []
    rows = link([p for p, _, _ in ready], head, logged_us)
    logged_at = _at_us(logged_us).isoformat()
    lines = [f"{r.seq}\t{columns}\t{logged_at}\t{r.prev_hash}\t{r.row_hash}\t{content}"
             for r, (_, columns, content) in zip(rows, ready, strict=True)]
    lines.append("")
    # COPY rather than INSERT ... VALUES: no per-row statement text to build and parse
    cur.copy_expert(
        "COPY deliveries (seq, event_id, channel, provider, recipient, resource_id, "
        "grant_id, fields, masked_fields, topic, kafka_partition, kafka_offset, "
        "delivered_at, logged_at, prev_hash, row_hash, content_sha256) FROM STDIN",
        io.StringIO("\n".join(lines)))
    return rows


def verify(dsn: str, max_problems: int = 1000, checkpoints: Sequence[Checkpoint] = ()
           ) -> VerifyReport:
    """Walk the whole log in seq order, recomputing every hash, in one consistent snapshot,
    from the last row archived out of the database (``log_archives``) when months were;
    each row at a seq that ``checkpoints`` cover must have the hash they signed (their
    signatures checked by the caller, :func:`govbus.delivery_log.checkpoints.check_series`),
    and every receipt that names what was received must match the log's hash of it."""
    conn = db.connect(dsn)
    try:
        conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ,
                         readonly=True)
        with conn.cursor() as cur:
            start, archives = boundary(cur)
            checker = ChainChecker(max_problems, start)
            checker.report.archives = archives
            binders = [Binder(DELIVERIES, checkpoints, max_problems,
                              floor=start.seq if start else 0)] if checkpoints else []
            cur.execute(_HEAD_SQL + " WHERE id = 1")
            found = cur.fetchone()
        head = Head(int(found[0]), str(found[1]), found[2]) if found else None
        with conn.cursor(name="govbus_delivery_log_verify") as cur:
            cur.itersize = 10000
            cur.execute(_ROW_SQL)
            for rec in cur:
                row = LoggedRow(*rec)
                checker.feed(row)
                for b in binders:
                    b.feed(row.seq, row.row_hash)
        with conn.cursor() as cur:  # what recipients received against what the log says
            cur.execute("SELECT d.seq, d.recipient, d.event_id FROM deliveries d JOIN receipts r "
                        "USING (event_id, recipient, channel) WHERE r.content_sha256 <> "
                        "d.content_sha256 ORDER BY d.seq LIMIT %s", (max_problems,))
            mismatched = cur.fetchall()
        conn.rollback()
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot read the delivery log: {exc}") from exc
    finally:
        conn.close()
    for seq, recipient, event_id in mismatched:
        checker.add(seq, "receipt_mismatch", f"{recipient} confirmed receiving other bytes "
                     f"for event {event_id} than the log records as delivered")
    for b in binders:
        for f in b.finish():
            checker.add(f.seq, f.kind, f.message)
    return checker.finish(head)


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
    sql = ("SELECT d.seq, d.event_id, d.channel, d.provider, d.recipient, "
           "d.resource_id AS resource, d.grant_id, d.fields, d.masked_fields, d.topic, "
           "d.kafka_partition AS partition, d.kafka_offset AS offset, "
           "floor(extract(epoch FROM d.delivered_at) * 1000)::bigint AS delivered_ms, "
           "d.logged_at, d.row_hash, r.received_at FROM deliveries d "
           "LEFT JOIN receipts r USING (event_id, recipient, channel) "
           f"WHERE {' AND '.join(where) or 'true'} ORDER BY d.seq DESC LIMIT %s")
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
