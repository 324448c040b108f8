"""The duties app on the embedded broker and a real PostgreSQL: the app runs as its own process
(``python -m govbus.duties``, as under ``govbus up``), so that ``kill -9`` is a real crash;
the timers are driven in the test's process with a clock it sets, as the app's crontabs drive
them with the real one.

- an unconditional request granted at once tells its provider within seconds (Art. 18);
- a request left unanswered past its deadline is escalated once (Art. 18, 31), however often
  the timer fires;
- a case past its deadline is escalated once (Art. 20, 31);
- a clock set to the first working day of the year drafts the annual report and the
  evaluation once and tells the information center (Art. 26, 28);
- killed between receiving a control event and committing its offset, the app replays the
  event after a restart and the inbox and the topic's key still hold one notice;
- a relay that publishes ledger rows again (its position not recorded) tells nobody twice,
  and the sharing store's own notice is adopted rather than repeated.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from govbus import duties as duties_entry
from govbus.core import db, registry, sharing_store, topics
from govbus.core.catalogue import Catalogue, load_catalogue
from govbus.core.config import Settings
from govbus.core.kafka import consumer_config, producer_config
from govbus.stream_apps.duties import notices as rules
from govbus.stream_apps.duties.app import APP_ID, prepare
from govbus.stream_apps.duties.events import ControlEvent
from govbus.stream_apps.duties.timers import SHANGHAI
from govbus.stream_apps.duties.work import Work
from tests.integration.conftest import register_sample_keys, scratch_database
from tests.integration.helpers import commitment, wait_until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
POPULATION = "public_security.population_register"  # unconditional (Art. 15)
HRSS = "hrss.social_insurance_enrolment"  # on application


@pytest.fixture
def dsn(pg_admin: str) -> Iterator[str]:
    """A database of the test's own: its ledger, inbox and relay position are the test's."""
    with scratch_database(pg_admin) as url:
        db.migrate(url)
        registry.sync(url, load_catalogue())
        register_sample_keys(url)
        yield url


@pytest.fixture
def duty_settings(bootstrap: str, dsn: str, catalogue: Catalogue) -> Settings:
    s = Settings(bootstrap, dsn, catalogue.root, session_timeout_ms=6000, partitions=3)
    prepare(s, sorted(catalogue.agencies))
    return s


class App:
    """``python -m govbus.duties`` as a child process: started, killed with SIGKILL."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.env = os.environ | {"KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
                                 "DATABASE_URL": settings.database_url}
        self.env.pop("GOVBUS_METRICS_PORT", None)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "govbus.duties"], env=self.env,
                                         stdout=out, stderr=out, cwd=ROOT)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def tail(self) -> str:
        return self.log.read_text()[-3000:]


@pytest.fixture
def app(duty_settings: Settings, tmp_path: Path) -> Iterator[App]:
    proc = App(duty_settings, tmp_path / "duties.log")
    proc.start()
    yield proc
    proc.kill()
    print(proc.tail())  # shown when the test failed


class Notices:
    """Reads ``notices.<agency>`` topics from the start: the records, by notice id."""

    def __init__(self, settings: Settings, agencies: list[str]) -> None:
        self.consumer = Consumer(consumer_config(settings, f"test-{uuid.uuid4().hex[:8]}"))
        self.consumer.subscribe([topics.notices(a) for a in agencies])
        self.records: list[tuple[str, dict]] = []

    def poll(self) -> list[tuple[str, dict]]:
        for msg in self.consumer.consume(500, 0.2):
            if not msg.error():
                self.records.append((msg.key().decode(), orjson.loads(msg.value())))
        return self.records

    def of(self, kind: str, subject: str) -> list[dict]:
        return [r for _, r in self.poll() if r["kind"] == kind and r["subject"] == subject]

    def close(self) -> None:
        self.consumer.close()


def notice_rows(dsn: str, subject: str) -> list[tuple[str, str]]:
    """(agency, control event kind) of every inbox row the duties app wrote for ``subject``."""
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT agency, body ->> 'kind' FROM notifications "
                    "WHERE body ->> 'subject' = %s ORDER BY agency, 2", (subject,))
        return [tuple(r) for r in cur.fetchall()]


def test_a_request_granted_at_once_tells_its_provider_within_seconds(
        duty_settings: Settings, app: App, catalogue: Catalogue) -> None:
    dsn = duty_settings.database_url
    reader = Notices(duty_settings, ["public_security"])
    try:
        filed = time.monotonic()
        granted = sharing_store.file_request(dsn, catalogue.resources[POPULATION], "tax",
                                             "tax registration checks", None,
                                             commitment(dsn, "tax", POPULATION))
        assert granted["status"] == "granted"
        subject = f"request:{granted['request_id']}"
        found = wait_until(lambda: reader.of("request.granted_at_once", subject), 25,
                           "the provider's notice")
        took = time.monotonic() - filed
        assert took < 20, took  # the app's first group join included (~4 s on Tansu)
        notice = found[0]
        assert notice["agency"] == "public_security" and notice["article"] == "Art. 18"
        assert notice["notice_id"] == rules.notice_id(
            f"request.granted_at_once:{subject}", "public_security")
        # the inbox row the sharing store wrote in the filing transaction is the notice
        with db.transaction(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT notification_id, notice_id FROM notifications WHERE agency = "
                        "'public_security' AND body ->> 'request_id' = %s",
                        (str(granted["request_id"]),))
            rows = cur.fetchall()
        assert rows == [(notice["inbox_id"], notice["notice_id"])]
    finally:
        reader.close()


def test_a_relay_that_publishes_the_ledger_again_tells_nobody_twice(
        duty_settings: Settings, app: App, catalogue: Catalogue) -> None:
    """As if the relay died after the broker acknowledged its events and before it recorded
    its position: the same ledger rows are published again, under the same keys."""
    dsn = duty_settings.database_url
    reader = Notices(duty_settings, ["hrss"])
    try:
        pending = sharing_store.file_request(dsn, catalogue.resources[HRSS], "tax",
                                             "contribution checks", None,
                                             commitment(dsn, "tax", HRSS))
        request_id = pending["request_id"]
        nid = rules.notice_id(f"request.filed:request:{request_id}", "hrss")
        wait_until(lambda: [k for k, _ in reader.poll() if k == nid], 25, "the notice")
        with db.transaction(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT seq FROM audit_ledger WHERE table_name = 'sharing_requests' "
                        "AND op = 'INSERT' AND row_key = %s", (str(request_id),))
            seq = cur.fetchone()[0]
            cur.execute("UPDATE duty_relay_position SET seq = %s", (seq - 1,))
        wait_until(lambda: len([k for k, _ in reader.poll() if k == nid]) >= 2, 25,
                   "the notice sent again")
        with db.transaction(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT kind, notice_id FROM notifications WHERE agency = 'hrss' "
                        "AND body ->> 'request_id' = %s", (str(request_id),))
            assert cur.fetchall() == [("request_pending", nid)], \
                "the sharing store's own notice, adopted, and no second one"
    finally:
        reader.close()


def test_a_request_unanswered_past_its_deadline_is_escalated_once(
        duty_settings: Settings, app: App, catalogue: Catalogue) -> None:
    dsn = duty_settings.database_url
    pending = sharing_store.file_request(dsn, catalogue.resources[HRSS], "tax",
                                         "contribution checks", None,
                                         commitment(dsn, "tax", HRSS))
    assert pending["status"] == "pending"
    subject = f"request:{pending['request_id']}"
    due = dt.datetime.fromisoformat(pending["due_at"])
    work = Work(duty_settings)
    reader = Notices(duty_settings, ["hrss", rules.CENTER, rules.OFFICE])
    try:
        assert work.timers(due - dt.timedelta(days=30)) == [], "not due yet: nothing"
        first = work.timers(due + dt.timedelta(hours=1))
        event_id = f"request.overdue:{subject}:{due.astimezone(dt.UTC).isoformat()}"
        assert event_id in first
        assert event_id not in work.timers(due + dt.timedelta(hours=2)), "fired twice: once"
        told = wait_until(lambda: {r["agency"] for r in reader.of("request.overdue", subject)}
                          >= {"hrss", rules.CENTER, rules.OFFICE}, 25,
                          "the escalation")
        assert told
        overdue = [r for r in notice_rows(dsn, subject) if r[1] == "request.overdue"]
        assert overdue == [("hrss", "request.overdue"), (rules.CENTER, "request.overdue"),
                           (rules.OFFICE, "request.overdue")]
        escalated = {r["agency"]: r["escalated"] for r in reader.of("request.overdue", subject)}
        assert escalated == {"hrss": False, rules.CENTER: True, rules.OFFICE: True}
    finally:
        reader.close()
        work.close()


def test_a_case_past_its_deadline_is_escalated_once(duty_settings: Settings,
                                                    app: App) -> None:
    dsn = duty_settings.database_url
    deadline = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("""INSERT INTO cases (case_key, entity_key, attribute, owner_agency, status,
                           values, opened_at, deadline, other_agency)
                       VALUES (%s, 'company:91360500MA35XXXX0X', 'company.name',
                               'market_regulation', 'open', '[]', now(), %s, 'tax')
                       RETURNING id""", (f"case-{uuid.uuid4().hex[:8]}", deadline))
        case_id = cur.fetchone()[0]
    subject = f"case:{case_id}"
    work = Work(duty_settings)
    reader = Notices(duty_settings, ["market_regulation", "tax", rules.CENTER, rules.OFFICE])
    try:
        wait_until(lambda: {r["agency"] for r in reader.of("case.opened", subject)}
                   == {"market_regulation", "tax"}, 25, "the case's notices")
        later = deadline + dt.timedelta(hours=1)
        assert any(e.startswith("case.overdue:") for e in work.timers(later))
        assert work.timers(later) == [], "the timer fired again: nothing new"
        wait_until(lambda: {r["agency"] for r in reader.of("case.overdue", subject)}
                   == {"market_regulation", rules.CENTER, rules.OFFICE}, 25, "the escalation")
        assert [r for r in notice_rows(dsn, subject) if r[1] == "case.overdue"] == [
            ("information_center", "case.overdue"), ("market_regulation", "case.overdue"),
            ("municipal_office", "case.overdue")]
    finally:
        reader.close()
        work.close()


def test_the_first_working_day_drafts_the_annual_report_once(duty_settings: Settings,
                                                             app: App) -> None:
    dsn = duty_settings.database_url
    work = Work(duty_settings, duties_entry.drafter(dsn))
    reader = Notices(duty_settings, [rules.CENTER])
    try:
        # 2026: 1-3 January are the New Year holiday, Sunday 4 January a make-up working day
        holiday = dt.datetime(2026, 1, 2, 9, 0, tzinfo=SHANGHAI)
        assert not [e for e in work.timers(holiday) if e.startswith("reports.")]
        first = dt.datetime(2026, 1, 4, 9, 0, tzinfo=SHANGHAI)
        assert "reports.drafted:reports:2025" in work.timers(first)
        assert not [e for e in work.timers(first + dt.timedelta(hours=1))
                    if e.startswith("reports.")], "fired twice: drafted once"
        with db.transaction(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT year, kind, body ->> 'year' FROM duty_report_drafts "
                        "ORDER BY kind")
            assert cur.fetchall() == [(2025, "annual", "2025"), (2025, "evaluation", "2025")]
        wait_until(lambda: reader.of("reports.drafted", "reports:2025"), 25,
                   "the information center's notice")
        assert notice_rows(dsn, "reports:2025") == [(rules.CENTER, "reports.drafted")]
    finally:
        reader.close()
        work.close()


def committed(settings: Settings, partition: int) -> int:
    """The duties app's committed offset on ``govbus.control``'s ``partition`` (-1001: none)."""
    consumer = Consumer(consumer_config(settings, APP_ID))
    try:
        return consumer.committed([TopicPartition(topics.CONTROL, partition)], 10)[0].offset
    finally:
        consumer.close()


def test_killed_before_committing_the_app_replays_and_tells_once(
        duty_settings: Settings, app: App) -> None:
    dsn = duty_settings.database_url
    producer = Producer(producer_config(duty_settings))
    reader = Notices(duty_settings, ["civil_affairs"])
    placed: dict[str, tuple[int, int]] = {}

    def put(event: ControlEvent) -> None:
        def answered(err: object, msg: object) -> None:
            assert err is None, err
            placed[event.event_id] = (msg.partition(), msg.offset())  # type: ignore[attr-defined]
        producer.produce(topics.CONTROL, key=event.event_id.encode(), value=event.to_bytes(),
                         on_delivery=answered)
        producer.flush(10)

    try:
        # the app's first join, then one event: the kill must hit a running consumer
        warm = ControlEvent("proposal.decided", f"proposal:{uuid.uuid4().hex[:6]}",
                            dt.datetime.now(dt.UTC), {"agency": "civil_affairs",
                                                      "status": "approved"})
        put(warm)
        wait_until(lambda: notice_rows(dsn, warm.subject), 25, "the warm-up")
        for _attempt in range(3):
            event = ControlEvent("proposal.decided", f"proposal:{uuid.uuid4().hex[:6]}",
                                 dt.datetime.now(dt.UTC), {"agency": "civil_affairs",
                                                           "status": "rejected",
                                                           "reason": "no legal basis"})
            put(event)
            wait_until(lambda s=event.subject: notice_rows(dsn, s), 15, "the notice kept",
                       step=0.02)
            app.kill()  # kill -9: no flush, no commit
            partition, offset = placed[event.event_id]
            if committed(duty_settings, partition) <= offset:
                break  # the event's offset was not committed: a restart replays it
            app.start()
            wait_until(lambda p=partition, o=offset: committed(duty_settings, p) > o, 20,
                       "a commit")
        else:
            pytest.fail("the app committed before every kill: no replay to test")
        app.start()
        nid = rules.notice_id(event.event_id, "civil_affairs")
        sent = wait_until(lambda: len([k for k, _ in reader.poll() if k == nid]) >= 2, 25,
                          "the replayed notice")
        assert sent
        assert notice_rows(dsn, event.subject) == [("civil_affairs", "proposal.decided")]
        records = {r["inbox_id"] for k, r in reader.poll() if k == nid}
        assert len(records) == 1, "the replay named the same inbox row"
    finally:
        reader.close()
        producer.flush(5)

