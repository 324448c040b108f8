"""Snapshots of the trigger mode: the rows that exist at install, and again on request, as
op ``r``, through the outbox like any change (real broker, real PostgreSQL)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

from govbus.core import db
from govbus.core.catalogue import Catalogue
from govbus.core.config import Settings
from govbus.producers.outbox import OutboxRelay, install, snapshot
from tests.integration.conftest import TansuBroker
from tests.integration.helpers import wait_until
from tests.integration.producers import test_outbox as base
from tests.integration.producers.test_outbox import (
    AGENCY,
    RESOURCE,
    Reader,
    drain,
    execute,
    insert,
    outbox,
    resident,
)

broker_settings, source = base.broker_settings, base.source  # the outbox tests' fixtures

ROOT = Path(__file__).resolve().parents[3]


def test_install_snapshots_existing_rows_once(broker_settings: Settings, database_url: str,
                                              catalogue: Catalogue, source: str) -> None:
    with db.transaction(database_url) as conn, conn.cursor() as cur:
        for n in range(20, 25):
            insert(cur, source, resident(n))
    assert install(database_url, source, AGENCY, RESOURCE, catalogue) == 5
    assert install(database_url, source, AGENCY, RESOURCE, catalogue) == 0  # not again
    rid = resident(20)["resident_id"]
    execute(database_url, f"UPDATE {source} SET name = '李雷' WHERE resident_id = %s", (rid,))
    rows = outbox(database_url, source)
    assert [r[2] for r in rows] == ["r"] * 5 + ["u"]

    relay = OutboxRelay(database_url, broker_settings, AGENCY, RESOURCE, catalogue=catalogue)
    assert drain(relay) == 6 and relay.refused == 0
    reader = Reader(broker_settings, f"test-snapshot-{uuid.uuid4().hex[:8]}")
    wait_until(lambda: len(reader.poll()) >= 6, 20, "6 events")
    reader.close()
    events = {e["event_id"]: e for e, _ in reader.events}
    assert set(events) == {r[1] for r in rows}
    snap = [events[r[1]] for r in rows[:5]]
    assert {e["op"] for e in snap} == {"r"}
    assert sorted(e["after"]["resident_id"] for e in snap) == sorted(
        resident(n)["resident_id"] for n in range(20, 25))
    assert all(e["before"] is None for e in snap)
    # Debezium's source.snapshot: the snapshot's last row says so; no transaction block
    assert [e["source"]["snapshot"] for e in snap] == ["true"] * 4 + ["last"]
    assert all(e["transaction"] is None for e in snap)
    assert events[rows[5][1]]["source"]["snapshot"] == "false"
    first = next(e for e in snap if e["key"] == rid)
    assert first["after"]["name"] == "居民20" and first["after"]["birth_date"] == "1950-01-21"
    order = [e["op"] for e, _ in reader.events if e["key"] == rid]
    assert order == ["r", "u"], "the update overtook the snapshot of its row"


def test_snapshot_on_request_sends_current_state_again(
        broker_settings: Settings, database_url: str, catalogue: Catalogue,
        source: str) -> None:
    install(database_url, source, AGENCY, RESOURCE, catalogue, snapshot=False)
    with db.transaction(database_url) as conn, conn.cursor() as cur:
        for n in range(30, 33):
            insert(cur, source, resident(n))
    assert [r[2] for r in outbox(database_url, source)] == ["c"] * 3
    rid = resident(31)["resident_id"]
    execute(database_url, f"DELETE FROM {source} WHERE resident_id = %s", (rid,))
    assert snapshot(database_url, source, AGENCY, RESOURCE, catalogue, chunk=2) == 2
    assert snapshot(database_url, source, AGENCY, RESOURCE, catalogue) == 2  # twice: 2 events
    rows = outbox(database_url, source)
    assert [r[2] for r in rows] == ["c", "c", "c", "d", "r", "r", "r", "r"]
    assert len({r[1] for r in rows}) == 8  # every snapshot row an event of its own

    relay = OutboxRelay(database_url, broker_settings, AGENCY, RESOURCE, catalogue=catalogue,
                        batch_size=3)
    assert drain(relay) == 8
    reader = Reader(broker_settings, f"test-snapshot-again-{uuid.uuid4().hex[:8]}")
    wait_until(lambda: len(reader.poll()) >= 8, 20, "8 events")
    reader.close()
    snaps = [e for e, _ in reader.events if e["op"] == "r"]
    assert sorted(e["key"] for e in snaps) == sorted(
        [resident(30)["resident_id"], resident(32)["resident_id"]] * 2)
    assert rid not in {e["key"] for e in snaps}  # a deleted row is not in a snapshot
    # each snapshot ends with one 'last', also when its last chunk is full (chunk=2, 2 rows)
    by_id = {e["event_id"]: e for e in snaps}
    assert [by_id[r[1]]["source"]["snapshot"] for r in rows if r[2] == "r"] == [
        "true", "last"] * 2


def test_cli_snapshot_flag(tansu: TansuBroker, broker_settings: Settings, database_url: str,
                           catalogue: Catalogue, source: str) -> None:
    with db.transaction(database_url) as conn, conn.cursor() as cur:
        insert(cur, source, resident(40))
    env = os.environ | {"KAFKA_BOOTSTRAP_SERVERS": tansu.bootstrap,
                        "DATABASE_URL": database_url}
    base = [sys.executable, "-m", "govbus.cli", "outbox", "--dsn", database_url, "--agency",
            AGENCY, "--resource", RESOURCE, "--table", source, "--once"]
    first = subprocess.run([*base, "--install"], env=env, cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "1 rows snapshotted" in first.stderr and "published 1" in first.stderr
    again = subprocess.run([*base, "--snapshot"], env=env, cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "snapshot of" in again.stderr and "published 1" in again.stderr
    rows = outbox(database_url, source)
    assert [(r[2], r[5] is not None) for r in rows] == [("r", True), ("r", True)]
    assert rows[0][1] != rows[1][1]


class Churn(threading.Thread):
    """The agency's application updating its residents' phones, one transaction each."""

    def __init__(self, dsn: str, table: str, ids: list[str]) -> None:
        super().__init__(daemon=True)
        self.dsn, self.table, self.ids = dsn, table, ids
        self.halt = threading.Event()
        self.updates = 0

    def run(self) -> None:
        conn = db.connect(self.dsn, autocommit=True)
        with conn.cursor() as cur:
            while not self.halt.is_set():
                rid = self.ids[self.updates * 7 % len(self.ids)]
                cur.execute(f"UPDATE {self.table} SET phone = %s WHERE resident_id = %s",
                            (f"139{self.updates:08d}", rid))
                self.updates += 1
        conn.close()


def last_state_matches(events: list[dict[str, Any]], dsn: str, table: str) -> None:
    """Every entity's last event is its row as it is now: no snapshot overtook a change."""
    final = dict(execute(dsn, f"SELECT resident_id, phone FROM {table}"))
    last = {e["key"]: e["after"]["phone"] for e in events}
    stale = {k: (v, final[k]) for k, v in last.items() if v != final[k]}
    assert not stale, f"{len(stale)} entities end on an older state: {list(stale.items())[:3]}"
    assert set(last) == set(final)


def test_snapshot_under_concurrent_updates_keeps_order(
        broker_settings: Settings, database_url: str, catalogue: Catalogue,
        source: str) -> None:
    ids = [resident(n)["resident_id"] for n in range(100, 160)]
    with db.transaction(database_url) as conn, conn.cursor() as cur:
        for n in range(100, 160):
            insert(cur, source, resident(n))
    install(database_url, source, AGENCY, RESOURCE, catalogue, snapshot=False)
    churn = Churn(database_url, source, ids)
    churn.start()
    try:
        for _ in range(6):
            assert snapshot(database_url, source, AGENCY, RESOURCE, catalogue, chunk=5) == 60
    finally:
        churn.halt.set()
        churn.join(10)
    assert churn.updates > 20, "the updates did not run alongside the snapshots"
    rows = outbox(database_url, source)
    relay = OutboxRelay(database_url, broker_settings, AGENCY, RESOURCE, catalogue=catalogue)
    drain(relay)
    reader = Reader(broker_settings, f"test-snapshot-churn-{uuid.uuid4().hex[:8]}")
    wait_until(lambda: len(reader.poll()) >= len(rows), 20, f"{len(rows)} events")
    reader.close()
    assert sum(e["op"] == "r" for e, _ in reader.events) == 360
    last_state_matches([e for e, _ in reader.events], database_url, source)
