"""A truncate (op ``t``) through every rule that reads an event: the gate's ``row_image``
(no image, empty key; refused otherwise with its rule, Art. 7), the compiled acceptor (never
the fast path, so the rules decide), ``entity_state`` (removes the resource's state not newer
than it) and the reconciler's feed (no values)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from govbus.core.catalogue import Catalogue, load_catalogue
from govbus.core.entity_state import state_rows
from govbus.core.envelope import make_event
from govbus.core.validation import check_event, compile_acceptor
from govbus.stream_apps.feed import ValueFeed, owners

CATALOGUE: Catalogue = load_catalogue()
POP = CATALOGUE.resources["public_security.population_register"]
AGENCY = "public_security"
NOW = 1_795_000_000_000
PERSON: dict[str, Any] = {
    "resident_id": "11010519491231002X", "name": "王芳", "gender": "F",
    "birth_date": "1949-12-31", "ethnicity": None, "residence_address": "渝水区仙来东大道1号",
    "household_division": "360502", "phone": None}
OTHER = {**PERSON, "resident_id": "110105194912310021"}


def truncate(at: int = NOW - 1000, tx: dict[str, Any] | None = None) -> dict[str, Any]:
    return make_event(POP, version=1, op="t", record=None, agency=AGENCY, locality="360502",
                      occurred_ms=at, connector="logical", transaction=tx)


def change(record: dict[str, Any], at: int, op: str = "c",
           tx: dict[str, Any] | None = None) -> dict[str, Any]:
    return make_event(POP, version=1, op=op, record=record, agency=AGENCY, locality="360502",
                      before=record if op == "d" else None, occurred_ms=at, transaction=tx)


def rules(event: dict[str, Any]) -> list[str]:
    return [v.rule for v in check_event(POP, event, AGENCY, now_ms=NOW, max_skew_ms=0)]


def test_a_truncate_has_no_image_and_an_empty_key_and_passes_the_gate() -> None:
    event = truncate()
    assert (event["before"], event["after"], event["key"], event["op"]) == (None, None, "", "t")
    assert rules(event) == []


@pytest.mark.parametrize("part", ["before", "after"])
def test_a_truncate_with_an_image_is_refused_by_its_rule(part: str) -> None:
    event = {**truncate(), part: dict(PERSON)}
    found = check_event(POP, event, AGENCY, now_ms=NOW)
    assert [(v.rule, v.field, v.article) for v in found
            if v.rule.startswith("envelope.truncate")] == [
        ("envelope.truncate_image", part, "Art. 7")]


def test_a_truncate_with_a_key_is_refused_by_its_rule() -> None:
    found = check_event(POP, {**truncate(), "key": PERSON["resident_id"]}, AGENCY, now_ms=NOW)
    assert [(v.rule, v.article) for v in found] == [("envelope.truncate_key", "Art. 7")]
    assert "must be empty" in found[0].message


def test_an_empty_key_is_still_refused_for_a_change() -> None:
    assert rules({**change(PERSON, NOW - 1000), "key": ""}) == ["envelope.key_mismatch"]


@pytest.mark.parametrize("event", [truncate(), {**truncate(), "after": dict(PERSON)},
                                   {**truncate(), "after": dict(PERSON),
                                    "key": PERSON["resident_id"]}])
def test_the_fast_path_leaves_a_truncate_to_the_rules(event: dict[str, Any]) -> None:
    assert compile_acceptor(POP)(event, AGENCY, NOW) is False


def decoded(*events: dict[str, Any]) -> list[tuple[None, Any, dict[str, Any]]]:
    return [(None, POP, e) for e in events]


def rows(text: str | None) -> list[dict[str, Any]]:
    return json.loads(text) if text else []


def test_a_truncate_removes_the_state_not_newer_than_it() -> None:
    rows_of = state_rows(decoded(change(PERSON, NOW - 3000), truncate(NOW - 2000),
                                 change(OTHER, NOW - 1000)))
    assert rows(rows_of.truncates) == [{"r": POP.id, "ms": NOW - 2000}]
    assert [u["k"] for u in rows(rows_of.upserts)] == [OTHER["resident_id"]]
    assert rows_of.deletes is None


def test_an_older_delete_before_a_truncate_is_left_to_it() -> None:
    rows_of = state_rows(decoded(change(PERSON, NOW - 3000, "d"), truncate(NOW - 2000)))
    assert rows_of.deletes is None and rows_of.upserts is None
    assert rows(rows_of.truncates) == [{"r": POP.id, "ms": NOW - 2000}]


def test_the_newest_truncate_of_a_batch_counts() -> None:
    rows_of = state_rows(decoded(truncate(NOW - 2000), truncate(NOW - 500),
                                 truncate(NOW - 900)))
    assert rows(rows_of.truncates) == [{"r": POP.id, "ms": NOW - 500}]


def tx(order: int) -> dict[str, Any]:
    return {"id": "7", "total_order": order, "data_collection_order": order}


def test_at_the_same_instant_the_transaction_order_decides() -> None:
    at = NOW - 1000  # logical capture: a transaction's events share its commit time
    reload = state_rows(decoded(change(PERSON, at, tx=tx(1)), change(OTHER, at, tx=tx(3)),
                                truncate(at, tx(2))))
    assert [u["k"] for u in rows(reload.upserts)] == [OTHER["resident_id"]]
    no_block = state_rows(decoded(change(PERSON, at), truncate(at), change(OTHER, at)))
    assert [u["k"] for u in rows(no_block.upserts)] == [OTHER["resident_id"]]


def test_a_batch_without_a_truncate_renders_as_before() -> None:
    rows_of = state_rows(decoded(change(PERSON, NOW - 3000), change(PERSON, NOW - 2000, "u")))
    assert rows_of.truncates is None and rows_of.deletes is None
    assert [u["ms"] for u in rows(rows_of.upserts)] == [NOW - 2000]


def test_a_truncate_feeds_no_values() -> None:
    feed = ValueFeed(POP, owners(CATALOGUE))
    assert feed.canon, "the population register has canonical attributes"
    assert feed(change(PERSON, NOW - 1000)) is not None
    assert feed(truncate()) is None
    assert feed({**truncate(), "key": PERSON["resident_id"]}) is None
