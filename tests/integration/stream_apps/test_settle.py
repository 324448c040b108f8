"""The hot path's settling process on a real PostgreSQL: a batch is logged, kept in
``entity_state`` and counted; a replay logs nothing twice; a PostgreSQL refusal, a killed
child and a vanished worker each end the way the hot path relies on."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator

import pytest

from govbus import delivery_log as dl
from govbus.core import db
from govbus.core.entity_state import StateRows
from govbus.core.errors import DatabaseError
from govbus.core.event_counts import Judged
from govbus.core.serde import json_bytes
from govbus.delivery_log import LogEntry
from govbus.stream_apps.settle import Batch, Settler
from tests.integration.helpers import wait_until

RESOURCE = "tax.tax_registration"


@pytest.fixture
def settle_db(empty_database: str) -> str:
    """A database of this test's own: the log's head and the counts are this test's only."""
    db.migrate(empty_database)
    return empty_database


@pytest.fixture
def settler(settle_db: str) -> Iterator[Settler]:
    s = Settler(settle_db)
    try:
        yield s
    finally:
        s.close()


def batch(tag: str, n: int, first_offset: int = 0) -> Batch:
    """``n`` events of one partition, each delivered to two recipients (logged in that
    partition's shard)."""
    entries = [tuple(LogEntry(f"{tag}-{i}", "exchange", "tax", recipient, RESOURCE, 7,
                              ("uscc", "taxpayer_name"), (), f"deliver.{recipient}.x", 0,
                              first_offset + i, 1_795_000_000_000 + i, None,
                              f"ingest.tax.{tag}/0"))
               for i in range(n) for recipient in ("hrss", "public_security")]
    rows = [{"r": RESOURCE, "k": f"{tag}-{i}", "rec": {"uscc": f"{tag}-{i}", "n": i},
             "e": f"{tag}-{i}", "l": "360502", "ms": 1_795_000_000_000 + i} for i in range(n)]
    judged = [tuple(Judged(f"ingest.tax.{tag}", 0, first_offset + i, "tax", RESOURCE,
                           "accepted")) for i in range(n)]
    return Batch(entries, StateRows(json_bytes(rows).decode(), None), judged)


def scalar(dsn: str, sql: str, *params: object) -> int:
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return int(cur.fetchone()[0])  # type: ignore[index]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie has ended
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_batch_is_logged_kept_and_counted_once(settler: Settler, settle_db: str) -> None:
    tag = uuid.uuid4().hex[:8]
    first = settler.settle(batch(tag, 50))
    assert first[:2] == (100, 0)
    assert 0 <= first.waited_s < 5  # the log writer's wait for its shard's lock
    again = settler.settle(batch(tag, 50))  # a replay of the same batch
    assert again[:2] == (0, 100)
    assert scalar(settle_db, "SELECT count(*) FROM deliveries WHERE event_id LIKE %s",
                  f"{tag}-%") == 100
    assert scalar(settle_db, "SELECT count(*) FROM entity_state WHERE entity_key LIKE %s",
                  f"{tag}-%") == 50
    assert scalar(settle_db, "SELECT sum(events) FROM event_counts WHERE resource_id = %s",
                  RESOURCE) == 50  # the replay was not counted again
    assert dl.verify(settle_db).ok


def test_a_refusal_of_postgresql_is_a_database_error(settler: Settler, settle_db: str) -> None:
    tag = uuid.uuid4().hex[:8]
    with db.transaction(settle_db) as conn, conn.cursor() as cur:
        cur.execute("""CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
                       BEGIN RAISE EXCEPTION 'refused by test'; END $$;
                       CREATE TRIGGER refuse BEFORE INSERT ON deliveries
                       FOR EACH ROW EXECUTE FUNCTION refuse();""")
    with pytest.raises(DatabaseError, match="refused by test"):
        settler.settle(batch(tag, 5))
    with db.transaction(settle_db) as conn, conn.cursor() as cur:
        cur.execute("DROP TRIGGER refuse ON deliveries")
    assert settler.settle(batch(tag, 5))[:2] == (10, 0)  # the same child goes on


def test_a_killed_child_fails_its_batch_and_the_next_starts_a_new_one(
        settler: Settler, settle_db: str) -> None:
    tag = uuid.uuid4().hex[:8]
    settler.settle(batch(tag, 10))
    first = settler.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    with pytest.raises(DatabaseError, match="settling process ended"):
        settler.settle(batch(tag, 20))
    assert not alive(first)
    assert settler.settle(batch(tag, 20))[:2] == (20, 20)  # the first ten were logged before
    assert settler.pid not in (None, first)
    assert scalar(settle_db, "SELECT count(*) FROM deliveries") == 40
    assert dl.verify(settle_db).ok


def test_the_child_ends_with_its_worker(settler: Settler) -> None:
    settler.settle(batch(uuid.uuid4().hex[:8], 1))
    pid = settler.pid
    assert pid is not None and alive(pid)
    settler.close()
    assert not alive(pid) and settler.pid is None

    settler.settle(batch(uuid.uuid4().hex[:8], 1))  # and when the worker vanishes unasked:
    pid = settler.pid
    assert settler._conn is not None and pid is not None
    settler._conn.close()  # what the kernel does to a killed worker's end
    wait_until(lambda: not alive(pid), 10, "the child to end when its worker's end closed")


def test_a_batch_of_megabytes_crosses_to_the_child(settler: Settler, settle_db: str) -> None:
    tag = uuid.uuid4().hex[:8]
    assert settler.settle(batch(tag, 5000))[:2] == (10000, 0)  # more than a pipe's buffer
    assert scalar(settle_db, "SELECT count(*) FROM deliveries WHERE event_id LIKE %s",
                  f"{tag}-%") == 10000
