"""The delivery log against a real PostgreSQL: concurrent writers keep one linear chain, and
tampering with the table (UPDATE, DELETE, INSERT) is named by seq (Art. 24, 31: the log is the
evidence). That a hot path killed mid-stream logs every delivery exactly once is in
test_hotpath."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from govbus import delivery_log as dl
from govbus.core import db
from govbus.core.catalogue import Catalogue
from govbus.core.config import Settings

ROOT = Path(__file__).resolve().parents[3]
RECIPIENTS = ("hrss", "tax")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def log_db(empty_database: str) -> str:
    """A database of this test's own, so that verify() sees only this test's log."""
    db.migrate(empty_database)
    return empty_database


@pytest.fixture
def log_settings(bootstrap: str, log_db: str, catalogue: Catalogue) -> Settings:
    return Settings(bootstrap, log_db, catalogue.root, session_timeout_ms=6000, partitions=3)


def record(event_id: str, recipient: str = "hrss", channel: str = "exchange",
           **extra: Any) -> dict[str, Any]:
    query = channel == "query"
    return {"event_id": event_id, "channel": channel, "provider": "public_security",
            "recipient": recipient, "resource": "public_security.population_register",
            "grant_id": 3, "fields": ["resident_id", "name"], "masked_fields": ["phone"],
            "topic": None if query else f"deliver.{recipient}.population_register",
            "partition": None if query else 0, "offset": None if query else 1,
            "delivered_ms": 1_760_000_000_000} | extra


def logged_keys(dsn: str, prefix: str) -> list[tuple[str, ...]]:
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT event_id, recipient, channel FROM deliveries WHERE event_id LIKE %s",
                    (f"{prefix}-%",))
        return [tuple(r) for r in cur.fetchall()]


def sql(dsn: str, statement: str, params: Any = None) -> None:
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute(statement, params)


def write(dsn: str, batches: list[list[dict[str, Any]]]) -> None:
    conn = db.connect(dsn)
    try:
        for batch in batches:
            with conn:
                dl.append(conn, [dl.parse_entry(json.dumps(r)) for r in batch])
    finally:
        conn.close()


def twenty(prefix: str) -> list[list[dict[str, Any]]]:
    rows = [record(f"{prefix}-{i}", RECIPIENTS[i % 2]) for i in range(20)]
    return [rows[:7], rows[7:15], rows[15:]]


def forged_row(dsn: str, seq: int, correct_hash: bool) -> None:
    """What someone with write access but without the log writer would insert at ``seq``,
    linked to the row before it and logged at the same time (so the order looks right)."""
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT row_hash, round(extract(epoch FROM logged_at) * 1000000)::bigint "
                    "FROM deliveries WHERE seq = %s", (seq - 1,))
        prev_hash, logged_us = cur.fetchone()  # type: ignore[misc]
    d = dl.parse_entry(json.dumps(record("forged", "a_third_party")))
    row = dl.chain([d], dl.Head(seq - 1, prev_hash), int(logged_us))[0]
    sql(dsn, "INSERT INTO deliveries (seq, event_id, channel, provider, recipient, resource_id, "
             "grant_id, fields, masked_fields, topic, kafka_partition, kafka_offset, "
             "delivered_at, logged_at, prev_hash, row_hash) "
             "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (row.seq, d.event_id, d.channel, d.provider, d.recipient, d.resource, d.grant_id,
         list(d.fields), list(d.masked_fields), d.topic, d.partition, d.offset,
         EPOCH + dt.timedelta(milliseconds=d.delivered_ms),
         EPOCH + dt.timedelta(microseconds=int(logged_us)), row.prev_hash,
         row.row_hash if correct_hash else "f" * 64))


def replace_row(dsn: str, seq: int) -> None:
    sql(dsn, "DELETE FROM deliveries WHERE seq = %s", (seq,))
    forged_row(dsn, seq, correct_hash=True)


TAMPERING: dict[str, tuple[Any, list[tuple[int | None, str]]]] = {
    "update a field": (lambda dsn: sql(dsn, "UPDATE deliveries SET recipient = 'a_third_party' "
                                            "WHERE seq = 5"), [(5, "altered")]),
    "shift a timestamp by 1 µs": (
        lambda dsn: sql(dsn, "UPDATE deliveries SET delivered_at = delivered_at + "
                             "interval '1 microsecond' WHERE seq = 12"), [(12, "altered")]),
    "delete a row": (lambda dsn: sql(dsn, "DELETE FROM deliveries WHERE seq = 9"),
                     [(9, "missing")]),
    "delete the newest rows": (lambda dsn: sql(dsn, "DELETE FROM deliveries WHERE seq > 18"),
                               [(19, "missing")]),
    "insert a forged row with a made-up hash": (
        lambda dsn: forged_row(dsn, 21, correct_hash=False),
        [(21, "altered"), (21, "head_mismatch")]),
    "append a forged row hashed like the writer would": (
        lambda dsn: forged_row(dsn, 21, correct_hash=True),
        [(21, "head_mismatch")]),
    "replace a row by a forged one that links to its predecessor": (
        lambda dsn: replace_row(dsn, 7), [(8, "broken_link")]),
}


@pytest.mark.parametrize("tampering", list(TAMPERING))
def test_tampering_is_reported_by_seq(log_db: str, tampering: str) -> None:
    prefix = uuid.uuid4().hex[:12]
    write(log_db, twenty(prefix))
    clean = dl.verify(log_db)
    assert clean.ok and clean.rows == 20 and clean.head_seq == 20, clean.lines()
    change, expected = TAMPERING[tampering]
    change(log_db)
    report = dl.verify(log_db)
    assert [(p.seq, p.kind) for p in report.problems] == expected, report.lines()
    assert not report.ok and report.as_dict()["problem_counts"]


def test_concurrent_writers_keep_one_linear_chain(log_db: str) -> None:
    """Two writers, overlapping batches: the lock serialises them, the filter drops repeats."""
    prefix, per, size = uuid.uuid4().hex[:12], 40, 100
    batches = [[record(f"{prefix}-{i}") for i in range(b * size // 2, b * size // 2 + size)]
               for b in range(per)]  # each batch overlaps the next by half
    errors: list[BaseException] = []

    def writer(mine: list[list[dict[str, Any]]]) -> None:
        try:
            write(log_db, mine)
        except BaseException as exc:  # noqa: B036 - reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(batches[k::2],)) for k in range(2)]
    threads += [threading.Thread(target=writer, args=(batches[::-1],))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    distinct = (per - 1) * size // 2 + size
    assert len(logged_keys(log_db, prefix)) == distinct
    started = time.monotonic()
    report = dl.verify(log_db)
    took = time.monotonic() - started
    assert report.ok and report.rows == distinct, report.lines()
    print(f"\nconcurrent writers: {distinct} rows, verified in {took:.2f} s")


def test_list_deliveries_with_receipts(log_db: str) -> None:
    prefix = uuid.uuid4().hex[:12]
    write(log_db, twenty(prefix) + [[record(f"{prefix}-q", "tax", "query",
                                            provider="market_regulation",
                                            resource="market_regulation.legal_entity_register")]])
    keys = [(f"{prefix}-0", "hrss", "exchange"), (f"{prefix}-q", "tax", "query")]
    assert dl.confirm_receipts(log_db, keys) == 2
    assert dl.confirm_receipts(log_db, keys + keys) == 0  # idempotent
    hrss = dl.list_deliveries(log_db, recipient="hrss", limit=1000)
    assert [r["event_id"] for r in hrss] == [f"{prefix}-{i}" for i in range(18, -1, -2)]
    assert hrss[-1]["received_at"] is not None
    assert all(r["received_at"] is None for r in hrss[:-1])
    first = hrss[-1]
    assert (first["delivered_ms"], first["fields"], first["partition"]) == (
        1_760_000_000_000, ["resident_id", "name"], 0)
    json.dumps(hrss)  # the CLI prints it with --json
    query = dl.list_deliveries(log_db, provider="market_regulation")
    assert [(r["event_id"], r["channel"], r["offset"]) for r in query] == [
        (f"{prefix}-q", "query", None)]
    assert query[0]["received_at"]
    assert len(dl.list_deliveries(log_db, resource="public_security.population_register",
                                  limit=5)) == 5
    with pytest.raises(ValueError):
        dl.confirm_receipts(log_db, [("e", "hrss", "mail")])
    with pytest.raises(ValueError):
        dl.list_deliveries(log_db, limit=0)
