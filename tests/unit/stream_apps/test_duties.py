"""The duties app's decisions without a broker or a database: what an audited change means
(control events), who each event tells (notices, their ids, escalation, adoption of the control
plane's own rows), the timers' rules, and the agent itself through faust's ``test_context``
with its inbox and producer replaced by recorders."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from govbus.core.config import Settings
from govbus.stream_apps.duties import timers
from govbus.stream_apps.duties.app import Duties, credentials, make_app
from govbus.stream_apps.duties.events import Change, ControlEvent, from_change
from govbus.stream_apps.duties.notices import CENTER, OFFICE, RULES, Notice, notice_id, notices_for

NOW = dt.datetime(2025, 11, 25, 4, 0, tzinfo=dt.UTC)
SETTINGS = Settings("127.0.0.1:9", "postgresql://unused/x", Path("schemas"), partitions=3)


def change(table: str, op: str, key: str, before: dict | None, after: dict | None) -> Change:
    return Change(1, NOW, table, op, key, before, after)


REQUEST = {"request_id": 42, "requester": "tax", "resource_id":
           "public_security.population_register", "purpose": "checks", "status": "granted",
           "share_class": "unconditional", "due_at": "2025-11-26T15:59:59+00:00"}


# --- control events from audited changes -------------------------------------------------

@pytest.mark.parametrize(("status", "kind"), [
    ("pending", "request.filed"), ("granted", "request.granted_at_once"),
    ("refused", "request.refused_at_once"), ("rejected", "request.refused_at_once")])
def test_a_filed_request_is_one_event_by_how_it_was_answered(status: str, kind: str) -> None:
    events = from_change(change("sharing_requests", "INSERT", "42", None,
                                REQUEST | {"status": status}))
    assert [(e.kind, e.subject, e.event_id) for e in events] == [
        (kind, "request:42", f"{kind}:request:42")]


def test_decisions_revocations_cases_objections_and_proposals_are_events() -> None:
    pending = REQUEST | {"status": "pending"}
    assert [e.kind for e in from_change(change(
        "sharing_requests", "UPDATE", "42", pending, pending | {"status": "rejected"}))] == [
        "request.decided"]
    assert [e.kind for e in from_change(change(
        "grants", "UPDATE", "7", {"revoked_at": None}, {"revoked_at": "2025-11-25",
                                                         "recipient": "tax"}))] == [
        "grant.revoked"]
    case = {"status": "open", "owner_agency": "market_regulation", "other_agency": "tax"}
    assert [e.kind for e in from_change(change("cases", "INSERT", "3", None, case))] == [
        "case.opened"]
    assert [e.kind for e in from_change(change("cases", "UPDATE", "3", case,
                                               case | {"status": "closed"}))] == [
        "case.resolved"]
    complaint = {"kind": "complaint", "status": "open", "against_agency": "tax"}
    assert [e.event_id for e in from_change(change("objections", "INSERT", "5", None,
                                                   complaint))] == ["complaint.filed:complaint:5"]
    assert [e.kind for e in from_change(change("objections", "UPDATE", "5", complaint,
                                               complaint | {"status": "answered"}))] == [
        "complaint.answered"]
    signed = {"withdrawn_at": None, "agency": "tax", "kind": "security"}
    assert [(e.kind, e.subject) for e in from_change(change(
        "commitments", "UPDATE", "SC-1", signed, signed | {"withdrawn_at": "2025-11-25"}))] == [
        ("commitment.withdrawn", "commitment:SC-1")]
    proposal = {"status": "pending", "agency": "tax", "resource_id": "tax.x"}
    assert [e.kind for e in from_change(change("catalogue_proposals", "UPDATE", "9", proposal,
                                               proposal | {"status": "approved"}))] == [
        "proposal.decided"]


def test_changes_that_tell_nobody_anything_are_no_events() -> None:
    case = {"status": "open"}
    assert from_change(change("cases", "UPDATE", "3", case, case | {"note": "x"})) == []
    assert from_change(change("catalogue_resources", "UPDATE", "tax.x", {}, {})) == []
    assert from_change(change("agency_keys", "INSERT", "k", None, {"agency": "tax"})) == []
    # rows that predate the ledger are history, not news
    assert from_change(change("sharing_requests", "INSERT", "42", None, REQUEST),
                       "migration 0012") == []


def test_a_control_event_survives_the_topic_and_refuses_what_is_none() -> None:
    event = ControlEvent("request.overdue", "request:42", NOW, {"requester": "tax"},
                         "2025-11-26T15:59:59+00:00")
    back = ControlEvent.from_bytes(event.to_bytes())
    assert back == event and back.event_id == "request.overdue:request:42:2025-11-26T15:59:59+00:00"
    for raw in (b"", b"{}", b'{"kind": "x"}', b"not json"):
        with pytest.raises(ValueError):
            ControlEvent.from_bytes(raw)


# --- notices -----------------------------------------------------------------------------

def event(kind: str, data: dict[str, Any], subject: str = "request:42",
          deadline: str | None = None) -> ControlEvent:
    return ControlEvent(kind, subject, NOW, data, deadline)


def told(e: ControlEvent) -> list[tuple[str, bool]]:
    return [(n.agency, n.escalated) for n in notices_for(e)]


def test_a_request_granted_at_once_tells_its_provider_adopting_the_filing_notice() -> None:
    [notice] = notices_for(event("request.granted_at_once", REQUEST))
    assert notice.agency == "public_security" and notice.article == "Art. 18"
    assert notice.adopts == ("request_granted", "request_id", "42")
    assert "tax" in notice.text and "at once" in notice.text


def test_what_is_overdue_is_escalated_to_the_center_and_the_office() -> None:
    overdue = event("request.overdue", REQUEST, deadline="2025-11-20T15:59:59+00:00")
    assert told(overdue) == [("public_security", False), (CENTER, True), (OFFICE, True)]
    case = event("case.overdue", {"owner_agency": "tax", "attribute": "company.name"},
                 "case:3", "2025-11-20T15:59:59+00:00")
    assert told(case) == [("tax", False), (CENTER, True), (OFFICE, True)]
    soon = event("case.due_soon", {"owner_agency": "tax"}, "case:3", "2025-11-26")
    assert told(soon) == [("tax", False)]
    # the handler of a complaint is the office itself: told once, as the one who answers
    complaint = event("complaint.overdue", {"handler": OFFICE, "against_agency": "tax"},
                      "complaint:5", "2025-11-20")
    assert told(complaint) == [(OFFICE, False), ("tax", False), (CENTER, True)]


def test_each_party_is_told_once_and_every_kind_has_a_rule() -> None:
    opened = event("case.opened", {"owner_agency": "tax", "other_agency": "tax"}, "case:3")
    assert told(opened) == [("tax", False)]
    assert notices_for(event("something.new", {})) == []
    kinds = {"request.filed", "request.granted_at_once", "request.refused_at_once",
             "request.decided", "request.due_soon", "request.overdue", "grant.revoked",
             "grant.expired", "commitment.expiring", "commitment.withdrawn", "case.opened",
             "case.resolved",
             "case.due_soon", "case.overdue", "objection.filed", "objection.answered",
             "objection.due_soon", "objection.overdue", "complaint.filed",
             "complaint.answered", "complaint.due_soon", "complaint.overdue",
             "proposal.filed", "proposal.decided", "review.due", "resource.stale",
             "reports.drafted"}
    assert set(RULES) == kinds
    for rule in RULES.values():
        assert rule.article.startswith("Art. ")


def test_a_notice_id_derives_from_its_cause_and_recipient_only() -> None:
    a = notices_for(event("request.overdue", REQUEST, deadline="2025-11-20"))
    b = notices_for(ControlEvent("request.overdue", "request:42", NOW + dt.timedelta(days=3),
                                 REQUEST | {"purpose": "other words"}, "2025-11-20"))
    assert [n.notice_id for n in a] == [n.notice_id for n in b]  # a timer that fires twice
    extended = notices_for(event("request.overdue", REQUEST, deadline="2025-12-01"))
    assert not {n.notice_id for n in a} & {n.notice_id for n in extended}
    assert len({n.notice_id for n in a}) == 3
    assert notice_id("x", "tax") != notice_id("x", "hrss")
    record = a[0].record(inbox_id=17)
    assert record["notice_id"] == a[0].notice_id and record["inbox_id"] == 17
    assert record["event_id"] == "request.overdue:request:42:2025-11-20"


# --- the timers' rules -------------------------------------------------------------------

def test_overdue_is_a_deadline_before_now() -> None:
    assert timers.state(NOW - dt.timedelta(seconds=1), NOW) == "overdue"
    assert timers.state(NOW, NOW) == "due_soon"


def test_approaching_is_up_to_the_end_of_the_next_working_day() -> None:
    friday = dt.datetime(2025, 11, 28, 10, 0, tzinfo=timers.SHANGHAI)
    assert timers.horizon(friday) == dt.datetime(2025, 12, 1, 23, 59, 59,
                                                 tzinfo=timers.SHANGHAI)  # Monday


def test_the_first_working_day_follows_the_state_councils_calendar() -> None:
    assert timers.first_working_day(2025) == dt.date(2025, 1, 2)
    assert timers.first_working_day(2026) == dt.date(2026, 1, 4)  # a make-up Sunday


def test_a_deadline_in_an_id_is_utc_to_the_second() -> None:
    local = dt.datetime(2025, 11, 26, 23, 59, 59, 999, tzinfo=timers.SHANGHAI)
    assert timers.stamp(local) == "2025-11-26T15:59:59+00:00"


# --- the agent, through faust's test_context --------------------------------------------

class Inbox:
    """Stands in for the app's PostgreSQL work: keeps one row per notice id."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self.failures = 0
        self.swept: list[bool] = []

    def keep(self, notice: Notice) -> int:
        if self.failures:
            self.failures -= 1
            from govbus.core.errors import DatabaseError
            raise DatabaseError("PostgreSQL away")
        return self.rows.setdefault(notice.notice_id, len(self.rows) + 1)


    def timers(self, now: dt.datetime | None = None, yearly: bool = True) -> list[str]:
        self.swept.append(yearly)
        if self.failures:
            from govbus.core.errors import BrokerError
            raise BrokerError("broker away")
        return []


class Recording(Duties):
    """The app with its inbox and producer replaced by recorders."""

    def __init__(self) -> None:
        self.inbox = Inbox()
        super().__init__(SETTINGS, app=make_app(SETTINGS), work=self.inbox)  # type: ignore[arg-type]
        self.sent: list[tuple[str, str, int]] = []

    async def send(self, notice: Notice, inbox_id: int) -> None:
        self.sent.append((notice.agency, notice.notice_id, inbox_id))


def run_agent(duties: Recording, *records: bytes) -> list[Any]:
    async def go() -> list[Any]:
        out = []
        async with duties.tell_agencies.test_context() as agent:
            for raw in records:
                out.append(await agent.put(raw))
        return out
    return asyncio.run(go())


def test_the_agent_tells_each_recipient_and_keeps_each_notice() -> None:
    duties = Recording()
    overdue = event("request.overdue", REQUEST, deadline="2025-11-20")
    run_agent(duties, overdue.to_bytes())
    assert [(a, i) for a, _, i in duties.sent] == [
        ("public_security", 1), (CENTER, 2), (OFFICE, 3)]
    assert [nid for _, nid, _ in duties.sent] == [n.notice_id for n in notices_for(overdue)]


def test_a_replayed_event_sends_the_same_notices_and_keeps_one_each() -> None:
    duties = Recording()
    granted = event("request.granted_at_once", REQUEST)
    run_agent(duties, granted.to_bytes(), granted.to_bytes())
    assert len(duties.sent) == 2 and duties.sent[0] == duties.sent[1]
    assert len(duties.inbox.rows) == 1


def test_a_record_that_is_no_control_event_is_skipped_and_the_next_one_is_told() -> None:
    duties = Recording()
    run_agent(duties, b"garbage", event("case.opened", {"owner_agency": "tax"},
                                        "case:1").to_bytes())
    assert [a for a, _, _ in duties.sent] == ["tax"]


def test_a_notice_not_kept_is_retried_not_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("govbus.stream_apps.duties.app.RETRY_S", 0.01)
    duties = Recording()
    duties.inbox.failures = 2
    run_agent(duties, event("case.opened", {"owner_agency": "tax"}, "case:1").to_bytes())
    assert [a for a, _, _ in duties.sent] == ["tax"]


# --- faust's settings ----------------------------------------------------------------------

def test_the_app_runs_with_the_embedded_brokers_settings_and_no_web_server() -> None:
    conf = make_app(SETTINGS).conf
    assert str(conf.broker[0]) == "kafka://127.0.0.1:9"
    assert conf.broker_session_timeout == 6.0 and conf.broker_heartbeat_interval == 0.5
    assert conf.web_enabled is False
    assert str(conf.timezone) == "Asia/Shanghai"
    assert conf.consumer_auto_offset_reset == "earliest"
    three = Settings("kafka-1:9092,kafka-2:9092,kafka-3:9092", "postgresql://unused/x",
                     Path("schemas"))
    assert [str(u) for u in make_app(three).conf.broker] == [
        "kafka://kafka-1:9092", "kafka://kafka-2:9092", "kafka://kafka-3:9092"]


def test_faust_authenticates_as_every_govbus_client_does(tmp_path: Path) -> None:
    assert credentials(SETTINGS) is None  # PLAINTEXT, the embedded broker
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    sasl = Settings("b:9092", "postgresql://unused/x", Path("schemas"),
                    kafka_security_protocol="SASL_PLAINTEXT",
                    kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="govbus",
                    kafka_sasl_password_file=secret)
    found = credentials(sasl)
    assert (found.username, found.password, str(found.mechanism.value)) == (
        "govbus", "s3cret", "SCRAM-SHA-512")
    assert found.ssl_context is None


def test_the_crontabs_sweep_the_deadlines_often_and_everything_hourly() -> None:
    duties = Recording()
    asyncio.run(duties.check_deadlines())
    asyncio.run(duties.check_yearly_duties())
    assert duties.inbox.swept == [False, True]
    duties.inbox.failures = 1
    asyncio.run(duties.check_deadlines())  # deferred to the next round, not raised
    assert duties.inbox.swept == [False, True, False]
