"""The transactional outbox against a real broker and a real PostgreSQL, no mocks.

The agency's source table lives in a schema of its own in the test database (an agency's
database in production); the test owns the broker, so it can stop it mid-stream.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from govbus.core import db
from govbus.core.catalogue import Catalogue
from govbus.core.config import Settings
from govbus.core.identifiers import resident_id_check_char
from govbus.core.kafka import consumer_config, ensure_topics
from govbus.core.registry import SchemaRegistry
from govbus.core.serde import unframe
from govbus.producers.outbox import OutboxError, OutboxRelay, install, to_record
from tests.integration.conftest import TansuBroker
from tests.integration.helpers import wait_until

AGENCY, RESOURCE = "public_security", "population_register"
TOPIC = f"ingest.{AGENCY}.{RESOURCE}"
COLUMNS = ("resident_id", "name", "gender", "birth_date", "ethnicity", "residence_address",
           "household_division", "phone")


def resident(n: int, valid: bool = True) -> dict[str, Any]:
    """Resident ``n`` with a well-formed GB 11643 number (or a wrong check character)."""
    born = dt.date(1950, 1, 1) + dt.timedelta(days=n)
    body = f"360502{born:%Y%m%d}{n % 1000:03d}"
    check = resident_id_check_char(body)
    if not valid:
        check = "0" if check != "0" else "1"
    return {"resident_id": body + check, "name": f"居民{n}", "gender": "MF"[n % 2],
            "birth_date": born, "ethnicity": None, "residence_address": f"渝水区仙来东大道{n}号",
            "household_division": "360502", "phone": None}


def insert(cur: Any, table: str, row: dict[str, Any]) -> None:
    cur.execute(f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES "
                f"({', '.join(['%s'] * len(COLUMNS))})", [row[c] for c in COLUMNS])


def execute(dsn: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """One statement in its own transaction (the agency's application at work)."""
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall() if cur.description else []


def outbox(dsn: str, table: str) -> list[tuple[Any, ...]]:
    """(id, event_id, op, txid, occurred_at, published_at, rejected_at, last_error) by id."""
    return execute(dsn, "SELECT id, event_id::text, op, txid, occurred_at, published_at, "
                   "rejected_at, last_error FROM govbus_outbox.events WHERE table_name = %s "
                   "ORDER BY id", (table,))


def published_ids(dsn: str, table: str) -> set[str]:
    return {r[1] for r in outbox(dsn, table) if r[5] is not None}


def unpublished(dsn: str, table: str) -> int:
    """The backlog: neither published nor refused."""
    return sum(1 for r in outbox(dsn, table) if r[5] is None and r[6] is None)


class Reader:
    """Reads a topic from the beginning by assignment (no group join to wait for)."""

    def __init__(self, settings: Settings, group: str) -> None:
        self.consumer = Consumer(consumer_config(settings, group))
        parts = self.consumer.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions
        self.assignment = [TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in parts]
        self.consumer.assign(self.assignment)
        self.registry = SchemaRegistry(settings.database_url)
        self.events: list[tuple[dict[str, Any], str]] = []  # (decoded event, header id)

    def poll(self) -> list[tuple[dict[str, Any], str]]:
        for msg in self.consumer.consume(500, 0.2):
            if msg.error():
                continue
            schema_id, body = unframe(msg.value())
            event = self.registry.by_id(schema_id).codec.decode(body)
            header = dict(msg.headers() or [])["event_id"]
            self.events.append((event, header.decode() if isinstance(header, bytes) else ""))
        return self.events

    def ids(self) -> set[str]:
        return {e["event_id"] for e, _ in self.poll()}

    def at_end(self) -> bool:
        """Read everything the broker holds now (positions at the high watermarks)."""
        self.poll()
        for tp in self.consumer.position([TopicPartition(t.topic, t.partition)
                                          for t in self.assignment]):
            low, high = self.consumer.get_watermark_offsets(tp, timeout=5, cached=False)
            if (tp.offset if tp.offset >= 0 else low) < high:
                return False
        return True

    def close(self) -> None:
        self.consumer.close()


class Writer(threading.Thread):
    """The agency's application: inserts residents, one transaction each, until stopped."""

    def __init__(self, dsn: str, table: str, first: int) -> None:
        super().__init__(daemon=True)
        self.dsn, self.table, self.next = dsn, table, first
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = db.connect(self.dsn, autocommit=True)
            with conn.cursor() as cur:
                while not self.halt.wait(0.02):
                    insert(cur, self.table, resident(self.next))
                    self.next += 1
            conn.close()
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def stop(self) -> None:
        self.halt.set()
        self.join(10)
        assert self.error is None, f"writer failed: {self.error!r}"


@pytest.fixture
def broker_settings(tansu: TansuBroker, database_url: str, catalogue: Catalogue) -> Settings:
    s = Settings(tansu.bootstrap, database_url, catalogue.root, session_timeout_ms=6000)
    ensure_topics(s, [TOPIC])
    return s


@pytest.fixture
def source(database_url: str) -> Iterator[str]:
    """The agency's population table, in a schema of its own; its outbox rows removed after."""
    schema = f"ps_{uuid.uuid4().hex[:8]}"
    table = f"{schema}.ps_residents"
    execute(database_url, f"CREATE SCHEMA {schema}; CREATE TABLE {table} ("
            "resident_id text PRIMARY KEY, name text NOT NULL, gender char(1) NOT NULL, "
            "birth_date date NOT NULL, ethnicity text, residence_address text NOT NULL, "
            "household_division char(6) NOT NULL, phone text, "
            "updated_at timestamptz NOT NULL DEFAULT now())")
    yield table
    execute(database_url, f"DROP SCHEMA {schema} CASCADE")
    if execute(database_url, "SELECT to_regclass('govbus_outbox.events')")[0][0]:
        execute(database_url, "DELETE FROM govbus_outbox.events WHERE table_name = %s",
                (table,))


def drain(relay: OutboxRelay) -> int:
    """Run the relay batch by batch until its backlog is empty; how many it published."""
    total = 0

    def empty() -> bool:
        nonlocal total
        total += relay.run_once()
        return relay.backlog() == 0

    wait_until(empty, 30, "the outbox to drain")
    return total


def test_install_refuses_clearly(database_url: str, catalogue: Catalogue, source: str) -> None:
    with pytest.raises(OutboxError, match="does not exist"):
        install(database_url, "nowhere.residents", AGENCY, RESOURCE, catalogue)
    execute(database_url, f"ALTER TABLE {source} DROP COLUMN household_division, "
            "DROP COLUMN residence_address, DROP COLUMN phone")
    with pytest.raises(OutboxError, match="residence_address, household_division$"):
        install(database_url, source, AGENCY, RESOURCE, catalogue)
    with pytest.raises(OutboxError, match=r"'tax' is not the provider .* \(Art. 8\)"):
        install(database_url, source, "tax", RESOURCE, catalogue)
    triggers = execute(database_url, "SELECT count(*) FROM pg_trigger WHERE tgrelid = "
                       "%s::regclass AND NOT tgisinternal", (source,))
    assert triggers == [(0,)]


def test_row_images_become_contract_records(catalogue: Catalogue) -> None:
    res = catalogue.get("hrss", "social_insurance_enrolment")
    row = {"resident_id": "x", "name": "n", "residence_address": "a", "employer_uscc": None,
           "schemes": ["pension", "medical"], "enrolled_since": dt.date(2020, 5, 1),
           "contribution_base": Decimal("4500.00"), "internal_note": "not in the contract"}
    record = to_record(res, row)
    assert record == {"resident_id": "x", "name": "n", "residence_address": "a",
                      "employer_uscc": None, "schemes": ["pension", "medical"],
                      "enrolled_since": "2020-05-01", "contribution_base": 4500}


def test_changes_published_in_order(broker_settings: Settings, database_url: str,
                                    catalogue: Catalogue, source: str) -> None:
    install(database_url, source, AGENCY, RESOURCE, catalogue)
    install(database_url, source, AGENCY, RESOURCE, catalogue)  # idempotent
    a, b, c = resident(1), resident(2), resident(3)
    with db.transaction(database_url) as conn, conn.cursor() as cur:
        insert(cur, source, a)
        insert(cur, source, b)
    with db.transaction(database_url) as conn, conn.cursor() as cur:
        insert(cur, source, c)
    rid = a["resident_id"]
    execute(database_url, f"UPDATE {source} SET name = '王芳' WHERE resident_id = %s", (rid,))
    execute(database_url, f"UPDATE {source} SET name = name WHERE resident_id = %s", (rid,))
    execute(database_url, f"UPDATE {source} SET residence_address = '新址', "
            "updated_at = now() WHERE resident_id = %s", (rid,))
    execute(database_url, f"DELETE FROM {source} WHERE resident_id = %s", (b["resident_id"],))
    rows = outbox(database_url, source)
    assert [r[2] for r in rows] == ["c", "c", "c", "u", "u", "d"]  # the no-op update: none

    relay = OutboxRelay(database_url, broker_settings, AGENCY, RESOURCE, catalogue=catalogue,
                        batch_size=4)
    assert drain(relay) == 6 and relay.refused == 0
    reader = Reader(broker_settings, f"test-outbox-order-{uuid.uuid4().hex[:8]}")
    wait_until(lambda: len(reader.poll()) >= 6, 20, "6 events")
    reader.close()
    by_seq = {r[0]: r for r in rows}
    per_key: dict[str, list[tuple[int, str]]] = {}
    schema, table = source.split(".")
    dbname = database_url.rsplit("/", 1)[1].split("?")[0]
    for event, header_id in reader.events:
        src = event["source"]
        row = by_seq[int(src["sequence"])]
        assert event["event_id"] == header_id == row[1]
        assert (src["connector"], src["db"], src["schema"], src["table"], src["txId"],
                src["snapshot"]) == ("outbox", dbname, schema, table, row[3], "false")
        assert event["occurred_ms"] == src["ts_ms"] == int(row[4].timestamp() * 1000)
        per_key.setdefault(event["key"], []).append((row[0], event["op"]))
    assert {k: [op for _, op in v] for k, v in per_key.items()} == {
        rid: ["c", "u", "u"], b["resident_id"]: ["c", "d"], c["resident_id"]: ["c"]}
    assert all(v == sorted(v) for v in per_key.values()), "an entity's changes out of order"
    assert rows[0][3] == rows[1][3] != rows[2][3]  # one transaction, one txid
    events = {int(e["source"]["sequence"]): e for e, _ in reader.events}
    # the transaction block: the first two inserts share one, each later change has its own
    assert [events[r[0]]["transaction"] for r in rows] == [
        {"id": str(r[3]), "total_order": n, "data_collection_order": n}
        for r, n in zip(rows, [1, 2, 1, 1, 1, 1], strict=True)]
    first_update, delete = events[rows[3][0]], events[rows[5][0]]
    assert (first_update["before"]["name"], first_update["after"]["name"]) == ("居民1", "王芳")
    assert first_update["after"]["birth_date"] == "1950-01-02"
    assert delete["after"] is None and delete["before"]["resident_id"] == b["resident_id"]
    assert all(r[5] is not None for r in outbox(database_url, source))


def test_contract_breach_is_refused_and_queue_moves_on(
        broker_settings: Settings, database_url: str, catalogue: Catalogue,
        source: str) -> None:
    install(database_url, source, AGENCY, RESOURCE, catalogue)
    with db.transaction(database_url) as conn, conn.cursor() as cur:
        for row in (resident(10), resident(11, valid=False), resident(12)):
            insert(cur, source, row)
    relay = OutboxRelay(database_url, broker_settings, AGENCY, RESOURCE, catalogue=catalogue)
    assert relay.run_once() == 2
    assert relay.refused == 1 and relay.backlog() == 0
    good, bad, after = outbox(database_url, source)
    assert bad[5] is None and bad[6] is not None
    assert bad[7].startswith("identifier.resident_id [Art. 12] resident_id: check character")
    assert good[5] is not None and after[5] is not None
    # the agency database drops the relay's connection: it reconnects, nothing is lost
    execute(database_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
            "datname = current_database() AND pid <> pg_backend_pid() "
            "AND application_name = 'govbus'")
    execute(database_url, f"UPDATE {source} SET phone = '13800000000' WHERE resident_id = %s",
            (resident(12)["resident_id"],))
    stop = threading.Event()
    worker = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    worker.start()
    wait_until(lambda: unpublished(database_url, source) == 0, 20, "the update published")
    stop.set()
    worker.join(15)
    assert not worker.is_alive() and relay.published == 3
    reader = Reader(broker_settings, f"test-outbox-refused-{uuid.uuid4().hex[:8]}")
    wait_until(lambda: len(reader.poll()) >= 3, 20, "3 events")
    reader.close()
    update = outbox(database_url, source)[3]
    assert sorted(e["event_id"] for e, _ in reader.events) == sorted(
        [good[1], after[1], update[1]])


def _relay_process(tansu: TansuBroker, dsn: str, log: Path) -> subprocess.Popen[bytes]:
    env = os.environ | {"KAFKA_BOOTSTRAP_SERVERS": tansu.bootstrap, "DATABASE_URL": dsn}
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "govbus.producers.outbox", "--dsn", dsn,
                                 "--agency", AGENCY, "--resource", RESOURCE,
                                 "--batch-size", "50"],
                                env=env, stdout=subprocess.DEVNULL, stderr=out,
                                cwd=Path(__file__).resolve().parents[3])


def test_broker_outage_loses_nothing(tansu: TansuBroker, broker_settings: Settings,
                                     database_url: str, catalogue: Catalogue, source: str,
                                     tmp_path: Path) -> None:
    install(database_url, source, AGENCY, RESOURCE, catalogue)
    group = f"test-outbox-outage-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "relay.log"
    writer = Writer(database_url, source, first=1000)
    relay = _relay_process(tansu, database_url, log)
    writer.start()
    readers: list[Reader] = []  # closed however the test ends: a leaked client may crash a
    try:                        # later test when the garbage collector frees it
        before = Reader(broker_settings, group)
        readers.append(before)
        wait_until(lambda: len(published_ids(database_url, source)) >= 40, 30,
                   f"40 rows published (relay log: {log})")
        # Freeze the relay, then read everything the broker holds: it is memory-only, so
        # what it acknowledged must be read before it is killed.
        os.kill(relay.pid, signal.SIGSTOP)
        marked = published_ids(database_url, source)
        wait_until(lambda: before.at_end() and before.ids() >= marked, 20,
                   "the first consumer to read every acknowledged event")
        seen_before, count_before = before.ids(), len(before.events)
        readers.remove(before)
        before.close()
        tansu.stop()
        os.kill(relay.pid, signal.SIGCONT)
        backlog_at_stop = unpublished(database_url, source)
        outage_end = time.monotonic() + 4
        while time.monotonic() < outage_end:  # the whole outage: nothing unacknowledged marked
            assert published_ids(database_url, source) <= seen_before
            time.sleep(0.2)
        assert unpublished(database_url, source) > backlog_at_stop, "writer stalled"

        tansu.start()
        ensure_topics(broker_settings, [TOPIC])
        after = Reader(broker_settings, group)
        readers.append(after)
        wait_until(lambda: len(published_ids(database_url, source)) > len(marked) + 40, 40,
                   f"publishing to resume after the restart (relay log: {log})")
        writer.stop()
        wait_until(lambda: unpublished(database_url, source) == 0, 30,
                   "every outbox row to be published")
        everything = {r[1] for r in outbox(database_url, source)}
        wait_until(lambda: seen_before | after.ids() >= everything, 20,
                   "the second consumer to read the rest")
        seen = seen_before | after.ids()
        duplicates = count_before + len(after.events) - len(seen)
        print(f"\noutbox outage: {len(everything)} rows, {len(seen_before)} read before the "
              f"broker restart, {len(seen)} distinct consumed, {duplicates} duplicates")
        assert seen == everything, f"lost: {sorted(everything - seen)[:5]}"
    finally:
        for reader in readers:
            reader.close()
        writer.halt.set()
        os.kill(relay.pid, signal.SIGCONT)
        relay.terminate()
        try:
            code = relay.wait(30)
        except subprocess.TimeoutExpired:
            relay.kill()
            raise
    text = log.read_text()
    assert code == 0, text[-2000:]
    assert "broker unavailable, nothing lost" in text and "stopped: published" in text
