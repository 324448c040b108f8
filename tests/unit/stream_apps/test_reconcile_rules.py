"""The reconciler's conflict rules, without a broker (Art. 8, 19, 20)."""

from __future__ import annotations

import datetime as dt
import itertools
import random

import pytest

from govbus.stream_apps.reconcile_rules import (
    CHINA,
    ValueChange,
    apply,
    case_key,
    deadline_ms,
    held_values,
    normalise,
)

ENTITY, ATTR, OWNER = "company:91360502MA35X0000X", "company.legal_representative", "mr"
ADDR = "company.registered_address"


@pytest.mark.parametrize(("a", "b", "attribute"), [
    ("李强", " 李 强 ", ATTR),                                   # white space
    ("ＬＩ　Ｑｉａｎｇ", "li qiang", ATTR),                       # full-width letters and space
    ("Li Qiang", "LI QIANG", ATTR),                              # case
    ("阿依古丽•买买提", "阿依古丽·买买提", ATTR),                 # middle-dot variants
    ("渝水区劳动北路１号", "渝水区劳动北路1號", ADDR),            # full-width digit, 號/号
    ("12 Main Road.", "12 main rd", ADDR),                        # Road / Rd.
    ("Room 3, 5 Park Avenue", "rm 3 5 park ave", ADDR),
])
def test_formatting_alone_is_no_difference(a: str, b: str, attribute: str) -> None:
    assert normalise(a, attribute) == normalise(b, attribute)


@pytest.mark.parametrize(("a", "b", "attribute"), [
    ("李强", "李刚", ATTR),
    ("渝水区劳动北路1号", "渝水区劳动北路2号", ADDR),
    ("12 Main Road", "12 Main Street", ADDR),
    ("St. John", "Street John", ATTR),   # abbreviations apply to addresses only
])
def test_real_differences_remain(a: str, b: str, attribute: str) -> None:
    assert normalise(a, attribute) != normalise(b, attribute)


def change(agency: str, value: str | None, at: int, eid: str | None = None,
           attribute: str = ATTR) -> ValueChange:
    return ValueChange(ENTITY, attribute, agency, OWNER, value, at, eid or f"{agency}-{at}",
                       f"{agency}.register")


def run(changes: list[ValueChange], now: int = 1_700_000_000_000) -> tuple[dict, list[dict]]:
    state: dict | None = None
    out: list[dict] = []
    for c in changes:
        state, emitted = apply(state, c, now)
        out += emitted
    return state or {}, out


def latest_cases(emitted: list[dict]) -> dict[str, dict]:
    """What an idempotent sink ends with: per key, closed wins over open."""
    cases: dict[str, dict] = {}
    for case in emitted:
        if cases.get(case["case_key"], {}).get("status") != "closed":
            cases[case["case_key"]] = case
    return cases


def test_a_conflict_opens_one_case_owned_by_the_source_of_record() -> None:
    state, emitted = run([change(OWNER, "李强", 1), change("tax", "李刚", 2)])
    cases = latest_cases(emitted)
    assert len(cases) == 1
    (case,) = cases.values()
    assert case["status"] == "open" and case["owner_agency"] == OWNER
    assert case["other_agency"] == "tax"
    assert {(v["agency"], v["value"]) for v in case["values"]} == {(OWNER, "李强"),
                                                                   ("tax", "李刚")}
    assert list(state["o"]) == [case["case_key"]]
    assert held_values(state) == {OWNER: ["李强", 1, f"{OWNER}-1", f"{OWNER}.register"],
                                  "tax": ["李刚", 2, "tax-2", "tax.register"]}


def test_values_agreeing_after_normalisation_open_nothing() -> None:
    _, emitted = run([change(OWNER, "李强", 1), change("tax", " 李　强", 2)])
    assert emitted == []


def test_no_source_value_no_case() -> None:
    _, emitted = run([change("tax", "李刚", 1), change("hrss", "李强", 2)])
    assert emitted == []


def test_a_correction_closes_the_case() -> None:
    state, emitted = run([change(OWNER, "李强", 1), change("tax", "李刚", 2),
                          change("tax", "李强", 3)])
    cases = latest_cases(emitted)
    assert [c["status"] for c in cases.values()] == ["closed"]
    assert next(iter(cases.values()))["resolution"] == "agreed"
    assert "o" not in state


def test_a_different_wrong_value_supersedes_the_case() -> None:
    _, emitted = run([change(OWNER, "李强", 1), change("tax", "李刚", 2),
                      change("tax", "王刚", 3)])
    cases = latest_cases(emitted)
    assert sorted((c["status"], c["resolution"]) for c in cases.values()) == [
        ("closed", "superseded"), ("open", None)]


def test_a_stale_event_changes_nothing_and_re_emits() -> None:
    state, _ = run([change(OWNER, "李强", 5), change("tax", "李刚", 6)])
    again, emitted = apply(state, change("tax", "李强", 2), 0)
    assert again == state
    assert [c["status"] for c in emitted] == ["open"]   # re-sent for the idempotent sink


def test_any_arrival_order_gives_the_same_open_cases() -> None:
    events = [change(OWNER, "李强", 1), change("tax", "李刚", 2), change("hrss", "李 强", 3),
              change("civil", "王五", 4), change(OWNER, "李强 ", 5), change("tax", "张三", 7)]
    expected = None
    for perm in itertools.permutations(events):
        state, emitted = run(list(perm))
        open_cases = {k: (c["other_agency"], tuple(sorted(
            (v["agency"], v["value"]) for v in c["values"])))
            for k, c in latest_cases(emitted).items() if c["status"] == "open"}
        assert set(open_cases) == set(state.get("o", {}))
        expected = expected or open_cases
        assert open_cases == expected
    assert expected and len(expected) == 2


def test_recurring_disagreement_gets_a_new_case_not_the_closed_one() -> None:
    _, emitted = run([change(OWNER, "李强", 1), change("tax", "李刚", 2),
                      change("tax", "李强", 3), change("tax", "李刚", 4)])
    cases = latest_cases(emitted)
    keys = sorted(cases)
    assert len(keys) == 2 and keys[1] == keys[0] + ".1"
    assert cases[keys[0]]["status"] == "closed" and cases[keys[1]]["status"] == "open"


def test_a_delete_withdraws_the_value() -> None:
    _, emitted = run([change(OWNER, "李强", 1), change("tax", "李刚", 2),
                      change("tax", None, 3)])
    (case,) = latest_cases(emitted).values()
    assert (case["status"], case["resolution"]) == ("closed", "withdrawn")


def test_case_key_is_deterministic_and_content_based() -> None:
    a = case_key(ENTITY, ATTR, OWNER, "李强", "tax", "李刚")
    assert a == case_key(ENTITY, ATTR, OWNER, "李强", "tax", "李刚")
    assert a != case_key(ENTITY, ATTR, OWNER, "李强", "tax", "王刚")
    assert a != case_key(ENTITY, ATTR, OWNER, "李强", "hrss", "李刚")


def test_deadline_counts_working_days_on_the_official_calendar() -> None:
    # Thursday 2026-09-24 → Fri 25 is Mid-Autumn, 28, 29, 30 count, 1–7 October is National
    # Day, then Thu 8 and Fri 9: due at the end of 9 October, Beijing time.
    opened = dt.datetime(2026, 9, 24, 10, 0, tzinfo=CHINA)
    due = dt.datetime.fromtimestamp(deadline_ms(int(opened.timestamp() * 1000), 5) / 1000,
                                    CHINA)
    assert (due.date(), due.hour) == (dt.date(2026, 10, 9), 23)


def test_random_histories_keep_state_bounded() -> None:
    rng = random.Random(7)
    agencies = [OWNER, "tax", "hrss", "civil"]
    state, _ = run([change(rng.choice(agencies), rng.choice(["李强", "李刚", "王五", None]), t)
                    for t in range(500)])
    assert len(held_values(state)) <= 4 and len(state.get("o", {})) <= 3
    assert len(state.get("r", {})) <= 3


def test_remembered_normal_forms_keep_types_apart_and_take_any_value() -> None:
    assert normalise(1) == "1" and normalise(True) == "true" and normalise(1) == "1"
    assert normalise(["Ａ", "b"]) == normalise(["A", "b"])  # cannot be remembered: computed
    for _ in range(2):  # the second time from memory
        assert normalise("中山路 １号", "person.residence_address") == "中山路1号"
