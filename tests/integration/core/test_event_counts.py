"""The gate's durable counts (migration 0005) on a real PostgreSQL: replays are not counted
twice, and a database outage keeps the counts in memory instead of stopping the gate."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from govbus.core import db
from govbus.core.event_counts import CountWriter, Judged
from tests.integration.conftest import scratch_database

TOPIC = "ingest.tax.tax_registration"


@pytest.fixture
def dsn(pg_admin: str) -> Iterator[str]:
    with scratch_database(pg_admin) as url:
        db.migrate(url)
        yield url


def batch(offsets: range, outcome: str = "accepted") -> list[Judged]:
    return [Judged(TOPIC, 0, o, "tax", "tax.tax_registration", outcome,
                   "" if outcome == "accepted" else "identifier.uscc") for o in offsets]


def totals(dsn: str) -> list[tuple[str, str, int]]:
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT outcome, rule, sum(events)::int FROM event_counts "
                    "GROUP BY 1, 2 ORDER BY 1")
        return list(cur.fetchall())


def test_a_replayed_batch_is_counted_once(dsn: str) -> None:
    writer = CountWriter(dsn)
    assert writer.write(batch(range(0, 80)) + batch(range(80, 100), "rejected")) == 100
    assert writer.write(batch(range(0, 100))) == 0  # the same batch after a crash
    assert writer.write(batch(range(50, 130))) == 30  # replay plus 30 new records
    writer.close()
    assert totals(dsn) == [("accepted", "", 110), ("rejected", "identifier.uscc", 20)]


def test_counts_wait_in_memory_while_postgresql_is_away(dsn: str) -> None:
    writer = CountWriter("postgresql://postgres@127.0.0.1:1/nowhere", max_pending=150)
    assert writer.write(batch(range(0, 100))) == 0  # no exception: the gate goes on
    assert writer.write(batch(range(100, 200))) == 0
    assert len(writer.pending) == 150 and writer.dropped == 50
    writer.db.dsn = dsn  # PostgreSQL is back
    assert writer.write(batch(range(200, 210))) == 160
    assert writer.pending == []
    writer.close()
    assert totals(dsn) == [("accepted", "", 160)]
