"""The gate's compiled acceptor against the contract rules it stands in for.

:func:`compile_acceptor` may only answer True for an event in which :func:`check_event` finds
no violation (it is the fast path; a False sends the event to the rules). These tests mutate
valid events of every catalogue resource in every way the rules look at, and feed it arbitrary
shapes (where the rules may even raise: the acceptor must then have said no, so that they
run as before), and check that soundness; and that it does answer True for the valid events, or it
would save nothing.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from govbus import sample
from govbus.core import validation
from govbus.core.catalogue import Catalogue, Resource, load_catalogue
from govbus.core.envelope import make_event
from govbus.core.validation import check_event, compile_acceptor

CATALOGUE: Catalogue = load_catalogue()
RESOURCES: list[Resource] = sorted(CATALOGUE, key=lambda r: r.id)
ROWS = sample.generate(60, 7).rows
AGENCIES = sorted({str(r.provider) for r in RESOURCES}) + ["nobody"]

# values that sit on either side of each rule's line
ODD: st.SearchStrategy[Any] = st.sampled_from([
    None, "", " ", "x" * validation.MAX_TEXT_CHARS, "x" * (validation.MAX_TEXT_CHARS + 1),
    "x" * validation.MAX_ENVELOPE_CHARS, "y" * (validation.MAX_ENVELOPE_CHARS + 1),
    "a\x00b", b"z" * (validation.MAX_TEXT_CHARS + 1), b"ok", 0, 7, 1.5, [], {}, ["360502"],
    "360502", "360000", "990101", "36050", "３６０５０２", "11010519491231002X",
    "11010519491231002x", "110105194912310021", "91360502MA35L8XG1X", "91360502MA35L8XG1Y",
    "c", "d", "u", "r", "t", "q", "\u3000", "\t\n", "e-1",
])
ENVELOPE = ["event_id", "resource", "op", "key", "before", "after", "source"]
SOURCE = ["agency", "locality", "system", "table"]
NOW = 1_795_000_000_000  # the checker's clock in every test here (epoch ms, 2026-11-18)
SKEW = 300_000
LATEST = NOW + SKEW
# occurred_ms on either side of the clock's line
WHEN = st.sampled_from([NOW, LATEST, LATEST + 1, NOW + 10**12, 253_402_300_799_999, 0, -1,
                        2**63 - 1, 1.5, None, True, "1"]) | st.integers()


def valid_event(resource: Resource, i: int, op: str = "c") -> dict[str, Any]:
    rows = ROWS[resource.id]
    row = dict(rows[i % len(rows)])
    return make_event(resource, version=1, op=op, record=row, before=row if op == "d" else None,
                      agency=str(resource.provider), locality="360502",
                      occurred_ms=NOW - 60_000)


def rules_find(resource: Resource, event: Any, sender: str) -> list[Any]:
    return check_event(resource, event, sender, now_ms=NOW, max_skew_ms=SKEW)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[Resource, dict[str, Any], str]:
    resource = draw(st.sampled_from(RESOURCES))
    event = valid_event(resource, draw(st.integers(0, 59)), draw(st.sampled_from("cudr")))
    sender = str(resource.provider)
    names = [f.name for f in resource.fields] + ["extra"]
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.sampled_from(["row", "envelope", "source", "sender", "drop", "clock",
                                      "before"]))
        if where == "clock":
            event["occurred_ms"] = draw(WHEN)
        elif where == "before":  # a before image beside the after, maybe with a bad value
            row = event["after"] if isinstance(event["after"], dict) else {}
            event["before"] = dict(row)
            if draw(st.booleans()):
                event["before"][draw(st.sampled_from(names))] = draw(ODD)
        elif where == "row":
            row = event["before"] if event["op"] == "d" else event["after"]
            if isinstance(row, dict):
                row[draw(st.sampled_from(names))] = draw(ODD)
        elif where == "envelope":
            event[draw(st.sampled_from(ENVELOPE))] = draw(ODD | st.sampled_from(
                [r.id for r in RESOURCES]))
        elif where == "source" and isinstance(event["source"], dict):
            event["source"][draw(st.sampled_from(SOURCE))] = draw(ODD | st.sampled_from(AGENCIES))
        elif where == "sender":
            sender = draw(st.sampled_from(AGENCIES))
        elif isinstance(event["source"], dict):
            event["source"].pop(draw(st.sampled_from(SOURCE)), None)
    return resource, event, sender


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8) |
                       st.binary(max_size=4),
                       lambda inner: st.lists(inner, max_size=3) |
                       st.dictionaries(st.sampled_from(ENVELOPE + SOURCE + ["name"]), inner,
                                       max_size=5), max_leaves=12)


def test_every_valid_sample_event_takes_the_fast_path() -> None:
    for resource in RESOURCES:
        accept = compile_acceptor(resource)
        for i in range(len(ROWS[resource.id])):
            for op in "cudr":
                event = valid_event(resource, i, op)
                assert rules_find(resource, event, str(resource.provider)) == []
                assert accept(event, str(resource.provider), LATEST), (resource.id, i, op)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
@example((RESOURCES[0], {**valid_event(RESOURCES[0], 0), "key": "other"},
          str(RESOURCES[0].provider)))
@example((RESOURCES[0], {**valid_event(RESOURCES[0], 0), "op": "t"},
          str(RESOURCES[0].provider)))  # a truncate with an image and a key: refused
def test_acceptor_says_yes_only_where_the_rules_find_nothing(
        case: tuple[Resource, dict[str, Any], str]) -> None:
    resource, event, sender = case
    if compile_acceptor(resource)(copy.deepcopy(event), sender, LATEST):
        assert rules_find(resource, event, sender) == []


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(RESOURCES), JSONISH, st.sampled_from(AGENCIES))
def test_acceptor_doubts_any_shape_it_does_not_know(resource: Resource, event: Any,
                                                     sender: str) -> None:
    if compile_acceptor(resource)(event, sender, LATEST):
        assert rules_find(resource, event, sender) == []


def test_a_rule_added_later_turns_the_fast_path_off(monkeypatch: pytest.MonkeyPatch) -> None:
    resource = RESOURCES[0]
    event = valid_event(resource, 0)
    assert compile_acceptor(resource)(event, str(resource.provider), LATEST)
    monkeypatch.setattr(validation, "RULES", [*validation.RULES, lambda *_: iter(())])
    assert not compile_acceptor(resource)(event, str(resource.provider), LATEST)
