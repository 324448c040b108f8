"""``govbus purge`` against a real PostgreSQL (Art. 20, 25; docs/retention.md).

Each test has a database of its own, migrated, so that the counts are exact: the session
database holds other tests' rows.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from govbus import cli
from govbus.core import db, retention
from govbus.core.retention import RetentionError
from govbus.producers.outbox import DDL as OUTBOX_DDL
from govbus.stream_apps.reconciler import read_states, write_states
from tests.integration.conftest import scratch_database

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DAY = dt.timedelta(days=1)
DAYS = {"outbox": 30, "reconcile_state": 400, "quarantine": 30}


@pytest.fixture
def bus(empty_database: str) -> str:
    db.migrate(empty_database)
    return empty_database


@pytest.fixture
def agency(pg_admin: str) -> Iterator[str]:
    with scratch_database(pg_admin) as url:
        with db.transaction(url) as conn, conn.cursor() as cur:
            cur.execute(OUTBOX_DDL)
        yield url


def sql(dsn: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall() if cur.description else []


# --- outbox ----------------------------------------------------------------------------------

def outbox_row(dsn: str, name: str, *, published: dt.datetime | None = None,
               rejected: dt.datetime | None = None, occurred: dt.datetime = NOW) -> None:
    sql(dsn, "INSERT INTO govbus_outbox.events (table_name, agency, resource, op, after, "
             "occurred_at, published_at, rejected_at) VALUES ('public.residents', "
             "'public_security', 'population_register', 'c', %s, %s, %s, %s)",
        (json.dumps({"name": name}), occurred, published, rejected))


def outbox_names(dsn: str) -> set[str]:
    return {r[0] for r in sql(dsn, "SELECT after->>'name' FROM govbus_outbox.events")}


def test_outbox_published_rows_past_retention_go_unpublished_rows_never(agency: str) -> None:
    for i in range(5):
        outbox_row(agency, f"old-{i}", published=NOW - 31 * DAY, occurred=NOW - 31 * DAY)
    outbox_row(agency, "at-cutoff", published=NOW - 30 * DAY)   # exactly 30 days: kept
    outbox_row(agency, "recent", published=NOW - 29 * DAY)
    outbox_row(agency, "waiting", occurred=NOW - 900 * DAY)   # never published
    outbox_row(agency, "refused", rejected=NOW - 900 * DAY, occurred=NOW - 900 * DAY)
    kept = {"at-cutoff", "recent", "waiting", "refused"}

    dry = retention.purge_outbox(agency, 30, now=NOW, dry_run=True)
    assert (dry.deleted, dry.dry_run) == (5, True)
    assert len(outbox_names(agency)) == 9  # a dry run deletes nothing

    seen: list[tuple[str, int]] = []
    done = retention.purge_outbox(agency, 30, now=NOW, batch=2,
                                  progress=lambda t, n: seen.append((t, n)))
    assert done.deleted == 5
    assert outbox_names(agency) == kept
    assert seen == [("govbus_outbox.events", 2), ("govbus_outbox.events", 4),
                    ("govbus_outbox.events", 5)]  # three transactions of at most 2 rows
    assert retention.purge_outbox(agency, 30, now=NOW).deleted == 0
    assert outbox_names(agency) == kept


def test_outbox_dsn_without_an_outbox_is_refused_clearly(bus: str) -> None:
    with pytest.raises(RetentionError, match="no outbox at .*govbus_outbox.events does not "
                                             "exist.*--outbox-dsn"):
        retention.purge_outbox(bus, 30, now=NOW)


# --- reconcile_state -------------------------------------------------------------------------

GROUP = "govbus-reconciler"


def state(values: bool = True, open_case: bool = False, closed_key: bool = False
          ) -> dict[str, Any]:
    s: dict[str, Any] = {}
    if values:
        s["v"] = ["market_regulation", "Yushui Steel", 1, "e1", "market_regulation.register",
                  "tax", "Yushui Iron", 2, "e2", "tax.register"]
    if open_case:
        s["o"] = {"abc123": ["tax", 2]}
    if closed_key:
        s["r"] = {"tax": ["def456", 0]}
    return {"company.name": s}


def put_state(dsn: str, entity: str, s: dict[str, Any], last_seen: dt.datetime) -> None:
    sql(dsn, "INSERT INTO reconcile_state (reconciler, entity, state, last_seen) "
             "VALUES (%s, %s, %s, %s)", (GROUP, entity, orjson.dumps(s).decode(), last_seen))


def put_case(dsn: str, entity: str, status: str) -> None:
    sql(dsn, "INSERT INTO cases (case_key, entity_key, attribute, owner_agency, status, "
             "values, opened_at, deadline) VALUES (%s, %s, 'company.name', "
             "'market_regulation', %s, '[]', now(), now())",
        (uuid.uuid4().hex, entity, status))


def states(dsn: str) -> dict[str, dict[str, Any]]:
    return {e: orjson.loads(s) for e, s in sql(
        dsn, "SELECT entity, state FROM reconcile_state WHERE reconciler = %s", (GROUP,))}


def test_reconcile_state_of_entities_long_unseen_goes_open_cases_stay(bus: str) -> None:
    old, cut = NOW - 401 * DAY, NOW - 400 * DAY
    put_state(bus, "company:gone", state(), old)
    put_state(bus, "company:open-in-state", state(open_case=True), old)
    put_state(bus, "company:open-in-table", state(), old)     # the sink has it open
    put_case(bus, "company:open-in-table", "open")
    put_state(bus, "company:closed-in-table", state(), old)   # closed cases keep nothing
    put_case(bus, "company:closed-in-table", "closed")
    put_state(bus, "company:closed-key", state(closed_key=True), old)
    put_state(bus, "company:at-cutoff", state(), cut)
    put_state(bus, "company:recent", state(), NOW - 10 * DAY)
    before = states(bus)

    dry = retention.purge_reconcile_state(bus, 400, now=NOW, dry_run=True)
    assert (dry.deleted, dry.reduced, dry.kept_open_case) == (2, 1, 2)
    assert states(bus) == before

    done = retention.purge_reconcile_state(bus, 400, now=NOW, batch=2)
    assert (done.deleted, done.reduced, done.kept_open_case) == (2, 1, 2)
    after = states(bus)
    assert set(after) == set(before) - {"company:gone", "company:closed-in-table"}
    for entity in ("company:open-in-state", "company:open-in-table", "company:at-cutoff",
                   "company:recent"):
        assert after[entity] == before[entity]  # untouched
    assert after["company:closed-key"] == {"company.name": {"r": {"tax": ["def456", 0]}}}

    again = retention.purge_reconcile_state(bus, 400, now=NOW)
    assert (again.deleted, again.reduced, again.kept_open_case) == (0, 0, 2)
    assert states(bus) == after


def test_a_state_the_reconciler_writes_is_seen_again(bus: str) -> None:
    put_state(bus, "company:back", state(), NOW - 500 * DAY)
    with db.transaction(bus) as conn, conn.cursor() as cur:  # the reconciler's own writes
        held = read_states(cur, GROUP, ["company:back"])
        write_states(cur, GROUP, {"company:back": {**held["company:back"], "x": {"v": []}}})
    (seen,), = sql(bus, "SELECT last_seen FROM reconcile_state WHERE entity = 'company:back'")
    assert seen > NOW - DAY
    assert retention.purge_reconcile_state(bus, 400, now=NOW).deleted == 0
    assert "company:back" in states(bus)


def test_a_row_being_written_is_skipped_not_waited_for(bus: str) -> None:
    put_state(bus, "company:busy", state(), NOW - 500 * DAY)
    put_state(bus, "company:idle", state(), NOW - 500 * DAY)
    writer = db.connect(bus)
    try:
        with writer.cursor() as cur:  # a reconciler in the middle of its transaction
            cur.execute("SELECT 1 FROM reconcile_state WHERE entity = 'company:busy' "
                        "FOR UPDATE")
        results: list[retention.Result] = []
        purger = threading.Thread(target=lambda: results.append(
            retention.purge_reconcile_state(bus, 400, now=NOW)))
        purger.start()
        purger.join(30)
        assert not purger.is_alive(), "the purge waited for a row lock"
        assert results[0].deleted == 1
        assert set(states(bus)) == {"company:busy"}
    finally:
        writer.rollback()
        writer.close()
    assert retention.purge_reconcile_state(bus, 400, now=NOW).deleted == 1  # the next run
    assert states(bus) == {}


# --- quarantine ------------------------------------------------------------------------------

def quarantined(dsn: str, offset: int, at: dt.datetime) -> None:
    sql(dsn, "INSERT INTO quarantine (agency, stage, rule, reason, topic, kafka_partition, "
             "kafka_offset, payload, payload_bytes, payload_sha256, quarantined_at) VALUES "
             "('tax', 'gate', 'schema.decode', 'not Avro', 'ingest.tax.tax_registration', 0, "
             "%s, 'a resident''s record', 20, %s, %s)", (offset, f"{offset:064x}", at))


def offsets(dsn: str) -> list[int]:
    return [r[0] for r in sql(dsn, "SELECT kafka_offset FROM quarantine ORDER BY 1")]


def test_quarantine_past_retention_goes_and_an_interrupted_purge_resumes(bus: str) -> None:
    for offset in range(7):
        quarantined(bus, offset, NOW - (40 + offset) * DAY)
    quarantined(bus, 100, NOW - 30 * DAY)  # exactly at the cut-off: kept
    quarantined(bus, 101, NOW - DAY)

    assert retention.purge_quarantine(bus, 30, now=NOW, dry_run=True).deleted == 7
    assert len(offsets(bus)) == 9

    def interrupt(_table: str, _done: int) -> None:
        raise KeyboardInterrupt  # Ctrl-C after the first batch committed

    with pytest.raises(KeyboardInterrupt):
        retention.purge_quarantine(bus, 30, now=NOW, batch=3, progress=interrupt)
    assert offsets(bus) == [3, 4, 5, 6, 100, 101]  # one whole batch, in id order
    assert retention.purge_quarantine(bus, 30, now=NOW, batch=3).deleted == 4
    assert offsets(bus) == [100, 101]
    assert retention.purge_quarantine(bus, 30, now=NOW).deleted == 0


# --- the command -----------------------------------------------------------------------------

def test_govbus_purge_dry_run_then_run(bus: str, agency: str, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", bus)
    monkeypatch.delenv("GOVBUS_OUTBOX_DSNS", raising=False)
    monkeypatch.setenv("GOVBUS_QUARANTINE_RETENTION_DAYS", "10")
    quarantined(bus, 1, NOW - 11 * DAY)
    quarantined(bus, 2, NOW - 9 * DAY)
    outbox_row(agency, "old", published=NOW - 31 * DAY)
    put_state(bus, "company:gone", state(), NOW - 401 * DAY)

    assert cli.main(["purge", "--dry-run", "--json", "--outbox-dsn", agency]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dry_run"] is True
    got = {t["table"]: (t["deleted"], t["days"], t["setting"]) for t in out["tables"]}
    assert got == {"govbus_outbox.events": (1, 30, "GOVBUS_OUTBOX_RETENTION_DAYS"),
                   "reconcile_state": (1, 400, "GOVBUS_RECONCILE_STATE_RETENTION_DAYS"),
                   "quarantine": (1, 10, "GOVBUS_QUARANTINE_RETENTION_DAYS"),
                   "accepted_events": (0, 400, "GOVBUS_ACCEPTED_EVENTS_RETENTION_DAYS")}
    assert offsets(bus) == [1, 2] and outbox_names(agency) == {"old"}
    assert set(states(bus)) == {"company:gone"}

    assert cli.main(["purge", "--only", "quarantine", "--only", "reconcile_state"]) == 0
    text = capsys.readouterr().out
    assert "quarantine (GOVBUS_QUARANTINE_RETENTION_DAYS=10, before " in text
    assert "deleted 1" in text and "would" not in text
    assert offsets(bus) == [2] and states(bus) == {}
    assert outbox_names(agency) == {"old"}  # not asked for

    assert cli.main(["purge"]) == 0
    assert "govbus_outbox.events" in (line := capsys.readouterr().out) and \
        "skipped: in the agencies' databases: name each with --outbox-dsn" in line
    assert outbox_names(agency) == {"old"}

    monkeypatch.setenv("GOVBUS_OUTBOX_DSNS", agency)
    assert cli.main(["purge", "--only", "outbox", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tables"][0]["deleted"] == 1
    assert outbox_names(agency) == set()


def test_govbus_purge_refuses_a_bad_setting(bus: str, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", bus)
    monkeypatch.setenv("GOVBUS_RECONCILE_STATE_RETENTION_DAYS", "0")
    quarantined(bus, 1, NOW - 400 * DAY)
    assert cli.main(["purge"]) == 1
    assert "GOVBUS_RECONCILE_STATE_RETENTION_DAYS=0 is out of range [1, 36500]" in \
        capsys.readouterr().err
    assert offsets(bus) == [1]  # nothing purged when a setting is wrong


def test_a_database_without_the_migrations_is_refused_clearly(empty_database: str) -> None:
    from govbus.core.errors import DatabaseError

    with pytest.raises(DatabaseError, match="reconcile_state.*does not exist.*run the "
                                            "migrations"):
        retention.purge(empty_database, DAYS, only=["reconcile_state"], now=NOW)
    (skipped,) = retention.purge(empty_database, DAYS, only=["quarantine"], now=NOW)
    assert skipped.skipped is not None and "no quarantine table" in skipped.skipped
