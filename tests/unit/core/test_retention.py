"""Retention: the cut-off, the settings, and the decision on a reconciler state (Art. 20, 25)."""

from __future__ import annotations

import datetime as dt

import pytest

from govbus.core.config import RETENTION_DEFAULTS_DAYS, Settings, retention_settings
from govbus.core.errors import ConfigError
from govbus.core.retention import (
    DELETE,
    KEEP,
    REDUCE,
    RetentionError,
    check_days,
    cutoff,
    state_decision,
)
from govbus.stream_apps.reconcile_rules import ValueChange, apply_entity

NOW = dt.datetime(2026, 3, 29, 1, 30, tzinfo=dt.UTC)  # a DST change in Europe: irrelevant


# --- the cut-off ---------------------------------------------------------------------------

def test_cutoff_is_whole_days_of_24_hours_before_now() -> None:
    assert cutoff(NOW, 30) == dt.datetime(2026, 2, 27, 1, 30, tzinfo=dt.UTC)
    assert cutoff(NOW, 1) == NOW - dt.timedelta(hours=24)
    assert cutoff(NOW, 400) == dt.datetime(2025, 2, 22, 1, 30, tzinfo=dt.UTC)


def test_cutoff_of_another_zone_is_the_same_instant_in_utc() -> None:
    shanghai = NOW.astimezone(dt.timezone(dt.timedelta(hours=8)))
    got = cutoff(shanghai, 7)
    assert got == NOW - dt.timedelta(days=7)
    assert got.utcoffset() == dt.timedelta(0)


def test_cutoff_refuses_a_naive_clock() -> None:
    with pytest.raises(RetentionError, match="aware"):
        cutoff(NOW.replace(tzinfo=None), 30)


@pytest.mark.parametrize("days", [0, -1, 36501])
def test_days_out_of_range_are_refused_naming_the_setting(days: int) -> None:
    with pytest.raises(RetentionError, match=rf"GOVBUS_X={days} is out of range \[1, 36500\]"):
        check_days("GOVBUS_X", days)


@pytest.mark.parametrize("days", [True, 1.5, "30", None])
def test_days_that_are_not_whole_numbers_are_refused(days: object) -> None:
    with pytest.raises(RetentionError, match="GOVBUS_X=.* is not a whole number of days"):
        check_days("GOVBUS_X", days)


def test_the_bounds_themselves_are_accepted() -> None:
    assert check_days("GOVBUS_X", 1) == 1
    assert check_days("GOVBUS_X", 36500) == 36500


# --- the settings --------------------------------------------------------------------------

VARS = ("GOVBUS_OUTBOX_RETENTION_DAYS", "GOVBUS_RECONCILE_STATE_RETENTION_DAYS",
        "GOVBUS_QUARANTINE_RETENTION_DAYS", "GOVBUS_ACCEPTED_EVENTS_RETENTION_DAYS")


def test_defaults_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARS:
        monkeypatch.delenv(name, raising=False)
    assert retention_settings() == {"outbox_retention_days": 30,
                                    "reconcile_state_retention_days": 400,
                                    "quarantine_retention_days": 30,
                                    "accepted_events_retention_days": 400}
    assert RETENTION_DEFAULTS_DAYS == {"outbox": 30, "reconcile_state": 400, "quarantine": 30,
                                       "accepted_events": 400}


def test_settings_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("GOVBUS_OUTBOX_RETENTION_DAYS", "7")
    monkeypatch.setenv("GOVBUS_RECONCILE_STATE_RETENTION_DAYS", "730")
    monkeypatch.setenv("GOVBUS_QUARANTINE_RETENTION_DAYS", "14")
    s = Settings.from_env()
    assert (s.outbox_retention_days, s.reconcile_state_retention_days,
            s.quarantine_retention_days) == (7, 730, 14)


@pytest.mark.parametrize("name", VARS)
@pytest.mark.parametrize(("raw", "message"), [("0", r"=0 is out of range \[1, 36500\]"),
                                              ("36501", "out of range"),
                                              ("thirty", "is not an integer")])
def test_bad_settings_are_refused_by_name(monkeypatch: pytest.MonkeyPatch, name: str,
                                          raw: str, message: str) -> None:
    monkeypatch.setenv(name, raw)
    with pytest.raises(ConfigError, match=f"{name}{'' if raw.isdigit() else '='}.*{message}"):
        retention_settings()


# --- the reconciler's state ----------------------------------------------------------------

ENTITY, ATTR, OWNER, OTHER = "company:91360502MA0000000X", "company.name", "market_regulation", \
    "tax"


def value(agency: str, text: str | None, at: int) -> ValueChange:
    return ValueChange(ENTITY, ATTR, agency, OWNER, text, at, f"ev-{agency}-{at}",
                       f"{agency}.register")


def run(state: dict | None, *changes: ValueChange) -> tuple[dict | None, list[dict]]:
    cases: list[dict] = []
    for i, change in enumerate(changes):
        state, emitted = apply_entity(state, [change], 1_700_000_000_000 + i)
        cases += emitted
    return state, cases


def test_an_open_case_keeps_the_state() -> None:
    state, cases = run(None, value(OWNER, "Yushui Steel", 1), value(OTHER, "Yushui Iron", 2))
    assert [c["status"] for c in cases] == ["open"]
    assert state_decision(state) == (KEEP, None)


def test_values_alone_are_deleted() -> None:
    state, cases = run(None, value(OWNER, "Yushui Steel", 1), value(OTHER, "yushui  steel", 2))
    assert cases == []  # formatting alone is no disagreement
    assert state_decision(state) == (DELETE, None)
    assert state_decision({}) == (DELETE, None)


def test_closed_case_keys_are_kept_without_values_and_a_returning_dispute_gets_a_new_case(
        ) -> None:
    state, cases = run(None, value(OWNER, "Yushui Steel", 1), value(OTHER, "Yushui Iron", 2),
                       value(OTHER, "Yushui Steel", 3))
    closed_key = cases[-1]["case_key"]
    assert cases[-1]["status"] == "closed"
    decision, reduced = state_decision(state)
    assert decision == REDUCE and reduced is not None
    assert reduced == {ATTR: {"r": state[ATTR]["r"]}}  # no "v": no value of anyone is kept
    assert "Yushui" not in str(reduced)
    assert state_decision(reduced) == (KEEP, None)  # already as small as it gets

    _, again = run(reduced, value(OWNER, "Yushui Steel", 4), value(OTHER, "Yushui Iron", 5))
    assert [c["status"] for c in again] == ["open"]
    assert again[0]["case_key"] == f"{closed_key}.1"  # a new case: the closed one stays closed
    _, lost = run(None, value(OWNER, "Yushui Steel", 4), value(OTHER, "Yushui Iron", 5))
    assert lost[0]["case_key"] == closed_key  # what deleting it would have done


def test_one_attribute_with_an_open_case_keeps_the_whole_entity() -> None:
    state = {"company.name": {"v": ["tax", "x", 1, "e", "r"]},
             "company.address": {"v": [], "o": {"k": ["tax", 1]}}}
    assert state_decision(state) == (KEEP, None)


@pytest.mark.parametrize("state", [None, [], "text", {"company.name": "not a dict"}])
def test_an_unreadable_state_is_kept(state: object) -> None:
    assert state_decision(state) == (KEEP, None)
