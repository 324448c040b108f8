"""The delivery log writes its rows with COPY: values that COPY's
text format or PostgreSQL array literals treat specially must arrive unchanged, and the
chain over them must verify (real PostgreSQL)."""

from __future__ import annotations

import json

import pytest

from govbus import delivery_log as dl
from govbus.core import db

AWKWARD = ["plain", 'quo"te', "back\\slash", "tab\there", "new\nline", "com,ma", "{brace}",
           "NULL", "\\N", "住址", " spaced "]


@pytest.fixture
def log_db(empty_database: str) -> str:
    db.migrate(empty_database)
    return empty_database


def test_copy_keeps_awkward_values_and_the_chain(log_db: str) -> None:
    records = [{"event_id": f"ev-{i}\t{name}", "channel": "exchange",
                "provider": "public_security", "recipient": "hrss",
                "resource": "public_security.population_register", "grant_id": 7,
                "fields": [name, "name"], "masked_fields": [name] if i % 2 else [],
                "topic": None if i % 3 == 0 else f"deliver.hrss.{name}",
                "partition": None if i % 3 == 0 else 1, "offset": None if i % 3 == 0 else i,
                "delivered_ms": 1_760_000_000_000 + i}
               for i, name in enumerate(AWKWARD)]
    conn = db.connect(log_db)
    try:
        with conn:
            result = dl.append(conn, [dl.parse_entry(json.dumps(r)) for r in records])
        with conn, conn.cursor() as cur:
            cur.execute("SELECT event_id, fields, masked_fields, topic, kafka_partition, "
                        "kafka_offset, floor(extract(epoch FROM delivered_at) * 1000)::bigint "
                        "FROM deliveries ORDER BY seq")
            stored = cur.fetchall()
    finally:
        conn.close()
    assert result.written == len(AWKWARD)
    assert [tuple(row) for row in stored] == [
        (r["event_id"], r["fields"], r["masked_fields"], r["topic"], r["partition"],
         r["offset"], r["delivered_ms"]) for r in records]
    report = dl.verify(log_db)
    assert report.ok, report
    assert report.rows == len(AWKWARD)


def _delivery(event: str, recipient: str = "hrss") -> dl.LogEntry:
    return dl.LogEntry(event, "exchange", "public_security", recipient,
                       "public_security.population_register", 7, ("name",), (),
                       f"deliver.{recipient}.public_security.population_register", 0, 1,
                       1_760_000_000_000)


def test_a_replayed_batch_logs_only_what_is_new(log_db: str) -> None:
    """The append copies optimistically; a batch holding logged keys (a replay after a
    crash) falls back to leaving those out, and drops repeats within the batch too."""
    writer = dl.LogWriter(log_db)
    try:
        first = writer.append([_delivery(f"ev-{i}") for i in range(5)])
        replay = [_delivery(f"ev-{i}") for i in range(3, 8)] + [_delivery("ev-7"),
                                                                 _delivery("ev-7", "tax")]
        second = writer.append(replay)
    finally:
        writer.close()
    assert (first.written, first.duplicates) == (5, 0)
    # ev-3, ev-4 logged before and ev-7/hrss twice in the batch: 4 of 7 written
    assert (second.written, second.duplicates) == (4, 3)
    assert second.head.seq == 9
    report = dl.verify(log_db)
    assert report.ok and report.rows == 9, report
