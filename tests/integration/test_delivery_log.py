"""The delivery log against a real broker and a real PostgreSQL: a sink killed with SIGKILL
mid-stream and restarted logs every delivery exactly once, in an intact chain; tampering with
the table (UPDATE, DELETE, INSERT) is named by seq (Art. 24, 31: the log is the evidence)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from govbus.consumers import delivery_log as dl
from govbus.core import db
from govbus.core.catalogue import Catalogue
from govbus.core.config import Settings
from govbus.core.kafka import admin, ensure_topics, producer_config
from tests.integration.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]
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


def stream(prefix: str, n: int) -> tuple[list[dict[str, Any] | bytes], set[dl.Key]]:
    """``n`` distinct deliveries (two recipients per event), plus duplicates and 3 bad ones."""
    distinct = [record(f"{prefix}-{i // 2}", RECIPIENTS[i % 2],
                       dl.CHANNELS[(i // 2) % 3], offset=i) for i in range(n)]
    bad = iter([b"{not json", json.dumps({"event_id": f"{prefix}-bad"}).encode(),
                json.dumps(record(f"{prefix}-bad", channel="mail")).encode()])
    out: list[dict[str, Any] | bytes] = []
    for i, rec in enumerate(distinct):
        out.append(rec)
        if i % 50 == 0:
            out.append(rec)                    # a duplicate in the same batch
        if i % 7 == 0 and i > 300:
            out.append(distinct[i - 300])      # a replay from long before
        if i in (n // 4, n // 2, 3 * n // 4):  # the router's bugs
            out.append(next(bad))
    keys = {(r["event_id"], r["recipient"], r["channel"]) for r in distinct}
    return out, keys


def produce(settings: Settings, topic: str, items: list[dict[str, Any] | bytes],
            chunk: int = 0, pause: float = 0.0) -> None:
    producer = Producer(producer_config(settings))
    for i, item in enumerate(items):
        value = item if isinstance(item, bytes) else json.dumps(item).encode()
        key = None if isinstance(item, bytes) else item["event_id"]
        producer.produce(topic, key=key, value=value)
        if chunk and i % chunk == chunk - 1:
            producer.flush(10)
            time.sleep(pause)  # pace the stream so that the kill lands in its middle
    assert producer.flush(30) == 0


def logged_keys(dsn: str, prefix: str) -> list[tuple[str, ...]]:
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT event_id, recipient, channel FROM deliveries WHERE event_id LIKE %s",
                    (f"{prefix}-%",))
        return [tuple(r) for r in cur.fetchall()]


def sql(dsn: str, statement: str, params: Any = None) -> None:
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute(statement, params)


@pytest.fixture
def sinks() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def start_sink(settings: Settings, log: Path, topic: str, group: str) -> subprocess.Popen[bytes]:
    env = os.environ | {"KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
                        "DATABASE_URL": settings.database_url}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "govbus.consumers.delivery_log", "--topic",
                                 topic, "--group", group, "--batch-size", "100"],
                                env=env, stdout=subprocess.DEVNULL, stderr=out, cwd=ROOT)


def test_sink_killed_mid_stream_logs_every_delivery_once(
        log_settings: Settings, sinks: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    prefix, n = uuid.uuid4().hex[:12], 3000
    topic, group = f"test.deliveries.{prefix}", f"test-delivery-log-{prefix}"
    ensure_topics(log_settings, [topic])
    items, keys = stream(prefix, n)
    log = tmp_path / "sink.log"
    sinks.append(start_sink(log_settings, log, topic, group))
    produce(log_settings, topic, [record(f"{prefix}-warmup")])
    wait_until(lambda: logged_keys(log_settings.database_url, prefix), 60,
               f"the sink to log its first delivery (log: {log})")

    producer = threading.Thread(target=produce, args=(log_settings, topic, items, 100, 0.05))
    producer.start()
    wait_until(lambda: len(logged_keys(log_settings.database_url, prefix)) > n // 4, 60,
               "a quarter of the stream logged")
    sinks[0].send_signal(signal.SIGKILL)
    sinks[0].wait(10)
    at_kill = len(logged_keys(log_settings.database_url, prefix)) - 1
    producer.join(60)
    assert not producer.is_alive()
    assert at_kill < n, "the kill came after the end of the stream"

    restarted = start_sink(log_settings, log, topic, group)
    sinks.append(restarted)
    expected = keys | {(f"{prefix}-warmup", "hrss", "exchange")}
    wait_until(lambda: len(logged_keys(log_settings.database_url, prefix)) >= len(expected),
               90, f"all {len(expected)} deliveries logged (log: {log})")
    restarted.send_signal(signal.SIGTERM)
    assert restarted.wait(30) == 0, log.read_text()[-2000:]

    logged = logged_keys(log_settings.database_url, prefix)
    assert len(logged) == len(set(logged)) == len(expected) and set(logged) == expected
    report = dl.verify(log_settings.database_url)
    assert report.ok, report.lines()
    assert report.rows == len(expected) and report.head_seq == report.last_seq
    text = log.read_text()
    bad = set(re.findall(r"malformed delivery record \S+\[(\d+)\]@(\d+)", text))
    assert len(bad) == 3, text[-3000:]
    stats = re.search(r"delivery log stopped: (\{.*\})", text)
    assert stats, text[-2000:]
    print(f"\ndelivery log: {len(items)} records ({n} distinct, 3 malformed), killed at "
          f"{at_kill} logged; after restart {stats.group(1)}; {report.rows} rows, chain intact")


def write(dsn: str, batches: list[list[dict[str, Any]]]) -> None:
    conn = db.connect(dsn)
    try:
        for batch in batches:
            with conn:
                dl.append(conn, [dl.parse_delivery(json.dumps(r)) for r in batch])
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
    d = dl.parse_delivery(json.dumps(record("forged", "a_third_party")))
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


def test_sink_rides_out_a_database_outage_and_skips_bad_records(log_settings: Settings) -> None:
    prefix = uuid.uuid4().hex[:12]
    dsn = log_settings.database_url
    topic = f"test.deliveries.{prefix}"  # the sink creates it
    sink = dl.DeliveryLogSink(log_settings, group=f"test-delivery-log-{prefix}", topic=topic,
                              batch=50)
    worker = threading.Thread(target=sink.run, daemon=True)
    worker.start()
    try:
        wait_until(lambda: topic in admin(log_settings).list_topics(timeout=5).topics, 30,
                   "the sink to create its topic")
        produce(log_settings, topic, [record(f"{prefix}-first")])
        wait_until(lambda: logged_keys(dsn, prefix), 60, "the first delivery logged")
        sql(dsn, "ALTER TABLE delivery_log_head RENAME TO delivery_log_head_away")
        sql(dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        produce(log_settings, topic, [b"\x00garbage", *[record(f"{prefix}-{i}")
                                                           for i in range(120)],
                                         record(f"{prefix}-7"), {"event_id": "half"}])
        wait_until(lambda: sink.stats["retries"] >= 2, 30, "the sink to retry")
        assert len(logged_keys(dsn, prefix)) == 1  # nothing written while the table is away
        sql(dsn, "ALTER TABLE delivery_log_head_away RENAME TO delivery_log_head")
        wait_until(lambda: len(logged_keys(dsn, prefix)) == 121, 60, "the backlog logged")
        wait_until(lambda: sink.stats["malformed"] == 2, 10, "both bad records counted")
    finally:
        sink.stop()
        worker.join(30)
    assert not worker.is_alive()
    assert sink.stats["duplicates"] >= 1
    assert dl.verify(dsn).ok


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
