"""The gate rules for events that are well-formed Avro but say nothing true: a blank event id,
an ``occurred_ms`` from the future, a lowercase check character, an invalid ``before`` image,
a topic that is not ``ingest.<agency>.<resource>``. Each is named (rule, field, article) by
the exact checker (``check_event``), never accepted by the compiled fast path
(``compile_acceptor``), and the two agree exactly on events that differ only there.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from govbus import sample
from govbus.core.catalogue import Catalogue, Resource, load_catalogue
from govbus.core.config import Settings
from govbus.core.envelope import envelope_schema, make_event
from govbus.core.errors import ConfigError, RegistryError
from govbus.core.registry import RegisteredSchema
from govbus.core.serde import Codec, frame
from govbus.core.validation import check_event, compile_acceptor
from govbus.stream_apps.judge import Verdict, judge, parse_topic, split_topic

CATALOGUE: Catalogue = load_catalogue()
POP = CATALOGUE.resources["public_security.population_register"]
TAX = CATALOGUE.resources["tax.tax_registration"]
NOW = 1_795_000_000_000  # the gate's clock in these tests (2026-11-18), never the wall's
SKEW = 300_000
YEAR_9999 = 253_370_764_800_000
PERSON: dict[str, Any] = {
    "resident_id": "11010519491231002X", "name": "王芳", "gender": "F",
    "birth_date": "1949-12-31", "ethnicity": None, "residence_address": "渝水区仙来东大道1号",
    "household_division": "360502", "phone": None}
ROWS = sample.generate(40, 11).rows


def ev(resource: Resource = POP, record: dict[str, Any] | None = None, op: str = "c",
       before: dict[str, Any] | None = None, **override: Any) -> dict[str, Any]:
    row = PERSON if record is None else record
    event = make_event(resource, version=1, op=op, record=row,
                       before=before if before is not None else (row if op == "d" else None),
                       agency=str(resource.provider), locality="360502",
                       occurred_ms=NOW - 1000)
    event.update(override)
    return event


def found(event: dict[str, Any], resource: Resource = POP) -> list[tuple[str, str, str]]:
    return [(v.rule, v.field, v.article) for v in
            check_event(resource, event, str(resource.provider), now_ms=NOW, max_skew_ms=SKEW)]


def fast(event: dict[str, Any], resource: Resource = POP) -> bool:
    return compile_acceptor(resource)(copy.deepcopy(event), str(resource.provider), NOW + SKEW)


BAD = [  # (name, event, (rule, field, article))
    ("empty event id", ev(event_id=""), ("envelope.event_id_blank", "event_id", "Art. 19")),
    ("blank event id", ev(event_id="  "), ("envelope.event_id_blank", "event_id", "Art. 19")),
    ("ideographic-space event id", ev(event_id="\u3000\t"),
     ("envelope.event_id_blank", "event_id", "Art. 19")),
    ("year 9999", ev(occurred_ms=YEAR_9999),
     ("envelope.occurred_in_future", "occurred_ms", "Art. 19")),
    ("one ms past the skew", ev(occurred_ms=NOW + SKEW + 1),
     ("envelope.occurred_in_future", "occurred_ms", "Art. 19")),
    ("lowercase x", ev(record=PERSON | {"resident_id": "11010519491231002x"}),
     ("identifier.resident_id_lowercase", "resident_id", "Art. 12")),
    ("lowercase x in a delete's image", ev(op="d", record=PERSON | {
        "resident_id": "11010519491231002x"}),
     ("identifier.resident_id_lowercase", "resident_id", "Art. 12")),
    ("update, before with a bad check digit",
     ev(op="u", before=PERSON | {"resident_id": "110105194912310021"}),
     ("envelope.before_invalid", "before.resident_id", "Art. 12")),
    ("update, before with a lowercase x",
     ev(op="u", before=PERSON | {"resident_id": "11010519491231002x"}),
     ("envelope.before_invalid", "before.resident_id", "Art. 12")),
    ("update, before without the mandatory id",
     ev(op="u", before=PERSON | {"resident_id": ""}),
     ("envelope.before_invalid", "before.resident_id", "Art. 12")),
    ("update, before with a blank name", ev(op="u", before=PERSON | {"name": " "}),
     ("envelope.before_invalid", "before.name", "Art. 12")),
    ("update, before with an unknown division",
     ev(op="u", before=PERSON | {"household_division": "990000"}),
     ("envelope.before_invalid", "before.household_division", "Art. 12")),
    ("snapshot, before not a record", ev(op="r", before=["not", "a", "row"]),
     ("envelope.before_invalid", "before", "Art. 7")),
    ("tax update, before with a bad credit code", ev(
        TAX, record=ROWS[TAX.id][0], op="u",
        before=ROWS[TAX.id][0] | {"uscc": ROWS[TAX.id][0]["uscc"][:17] + "I"}),
     ("envelope.before_invalid", "before.uscc", "Art. 12")),
]


@pytest.mark.parametrize("name,event,expected", BAD, ids=[b[0] for b in BAD])
def test_each_bad_event_is_named_and_never_taken_by_the_fast_path(
        name: str, event: dict[str, Any], expected: tuple[str, str, str]) -> None:
    resource = TAX if event["resource"] == TAX.id else POP
    assert found(event, resource) == [expected]
    assert not fast(event, resource), f"the fast path accepted: {name}"


@pytest.mark.parametrize("event", [
    ev(), ev(occurred_ms=NOW + SKEW), ev(occurred_ms=0), ev(event_id="e"),
    ev(op="u", before=PERSON | {"name": "王芳芳"}), ev(op="d"),
    ev(record=PERSON | {"resident_id": "440524188001010014"},
       op="u", before=PERSON | {"resident_id": "440524188001010014"})],
    ids=["create", "at the skew's edge", "epoch", "one-character id", "update",
         "delete", "digit check character"])
def test_good_events_stay_on_the_fast_path(event: dict[str, Any]) -> None:
    assert found(event) == []
    assert fast(event)


def test_the_skew_is_the_callers() -> None:
    event = ev(occurred_ms=NOW + 60_000)
    assert check_event(POP, event, "public_security", now_ms=NOW, max_skew_ms=0)
    assert not compile_acceptor(POP)(event, "public_security", NOW)
    assert check_event(POP, event, "public_security", now_ms=NOW, max_skew_ms=60_000) == []
    assert compile_acceptor(POP)(event, "public_security", NOW + 60_000)


def test_the_future_rejection_says_when_and_by_how_much() -> None:
    (v,) = check_event(POP, ev(occurred_ms=YEAR_9999), "public_security", now_ms=NOW,
                       max_skew_ms=SKEW)
    assert "9999-01-01T00:00:00+00:00" in v.message and "at most 300000 ms" in v.message
    (v,) = check_event(POP, ev(occurred_ms=2**63 - 1), "public_security", now_ms=NOW,
                       max_skew_ms=SKEW)
    assert "not a representable time" in v.message


def test_the_lowercase_rejection_names_the_standard() -> None:
    (v,) = check_event(POP, ev(record=PERSON | {"resident_id": "11010519491231002x"}),
                       "public_security")
    assert "uppercase 'X'" in v.message and "GB 11643" in v.message


def test_the_before_rejection_names_the_rule_it_breaks() -> None:
    (v,) = check_event(POP, ev(op="u", before=PERSON | {"resident_id": "110105194912310021"}),
                       "public_security")
    assert v.message.startswith("identifier.resident_id: check character is '1'")


# -- the two paths agree exactly where only the new rules' fields vary ---------------------

EVENT_IDS = st.text(alphabet=st.sampled_from(" \t\n\u3000\u00a0\u2003ab-1\x00"), max_size=6) | \
    st.sampled_from(["", " ", "e" * 129, "e" * 128])
OCCURRED = st.integers(NOW - 10**6, NOW + 2 * SKEW) | st.sampled_from(
    [NOW + SKEW, NOW + SKEW + 1, YEAR_9999, -1, 0])
BEFORE_VALUES = st.sampled_from([
    None, "", " ", "11010519491231002X", "11010519491231002x", "110105194912310021",
    "440524188001010014", "360502", "990000", "王芳", "91360502MA35L7XK0N", "x" * 5000])


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(resource=st.sampled_from(sorted(CATALOGUE, key=lambda r: r.id)), i=st.integers(0, 39),
       op=st.sampled_from("cudr"), event_id=EVENT_IDS, occurred=OCCURRED,
       with_before=st.booleans(), changes=st.dictionaries(st.text(max_size=3) | st.just(
           "resident_id") | st.just("name") | st.just("uscc"), BEFORE_VALUES, max_size=3))
def test_fast_path_and_rules_agree_on_event_ids_clocks_and_before_images(
        resource: Resource, i: int, op: str, event_id: str, occurred: int, with_before: bool,
        changes: dict[str, Any]) -> None:
    rows = ROWS[resource.id]
    row = rows[i % len(rows)]
    before = {**row, **{k: v for k, v in changes.items() if k in row}} if with_before else None
    event = ev(resource, record=row, op=op, before=before, event_id=event_id,
               occurred_ms=occurred)
    assert fast(event, resource) == (found(event, resource) == []), found(event, resource)


# -- judge: topics, the clock passed in ------------------------------------------------------

def registry() -> dict[int, RegisteredSchema]:
    return {i: RegisteredSchema(i, r.id, 1, r.schema, Codec(envelope_schema(r)), r)
            for i, r in enumerate(sorted(CATALOGUE, key=lambda r: r.id), start=1)}


SCHEMAS = registry()


def lookup(schema_id: int) -> RegisteredSchema:
    if schema_id not in SCHEMAS:
        raise RegistryError(f"schema id {schema_id} is not registered")
    return SCHEMAS[schema_id]


def payload(event: dict[str, Any]) -> bytes:
    reg = next(r for r in SCHEMAS.values() if r.resource_id == event["resource"])
    return frame(reg.schema_id, reg.codec.encode(event))


def decide(topic: str, body: bytes, now_ms: int = NOW, skew: int = SKEW) -> Verdict:
    return judge(topic, body, lookup, now_ms=now_ms, max_skew_ms=skew)


@pytest.mark.parametrize("topic,dlq,fragment", [
    ("ingest.public_security.population_register.extra", "dlq.public_security", "4 dot"),
    ("ingest.public_security.population_register.", "dlq.public_security", "4 dot"),
    ("ingest..population_register", "dlq.unknown", "empty agency"),
    ("ingest.public_security.", "dlq.public_security", "empty resource"),
    ("ingest.public_security", "dlq.public_security", "2 dot"),
    ("ingest.", "dlq.unknown", "2 dot"),
    ("ingest", "dlq.unknown", "1 dot"),
    ("ingestx.public_security.population_register", "dlq.public_security",
     "not an ingest topic"),
])
def test_a_malformed_topic_is_rejected_to_its_agencys_dlq(topic: str, dlq: str,
                                                          fragment: str) -> None:
    v = decide(topic, payload(ev()))
    assert [(x.rule, x.field, x.article) for x in v.violations] == [
        ("topic.malformed", "topic", "Art. 7")]
    assert fragment in v.violations[0].message and v.output_topic == dlq
    assert v.event is None  # nothing of it was read as an event


def test_a_well_formed_topic_splits_as_before() -> None:
    assert parse_topic("ingest.tax.tax_registration") == ("tax", "tax.tax_registration", None)
    assert split_topic("ingest.tax.tax_registration") == ("tax", "tax.tax_registration")
    assert split_topic("ingest.tax.tax_registration.extra") == ("tax", "tax.tax_registration")


def test_judge_uses_the_clock_it_is_given() -> None:
    body = payload(ev(occurred_ms=NOW + 3_600_000))  # an hour ahead of NOW
    assert [x.rule for x in decide(POP.ingest_topic, body).violations] == [
        "envelope.occurred_in_future"]
    assert decide(POP.ingest_topic, body, now_ms=NOW + 3_600_000).accepted
    assert decide(POP.ingest_topic, body, skew=3_600_000).accepted
    assert decide(POP.ingest_topic, body).violations == decide(POP.ingest_topic,
                                                               body).violations  # pure


@pytest.mark.parametrize("event,rule", [(e, x[0]) for _, e, x in BAD
                                        if e["resource"] == POP.id
                                        and not isinstance(e["before"], list)],
                         ids=[n for n, e, _ in BAD if e["resource"] == POP.id
                              and not isinstance(e["before"], list)])
def test_judge_rejects_each_bad_event_decoded_from_the_wire(event: dict[str, Any],
                                                             rule: str) -> None:
    v = decide(POP.ingest_topic, payload(event))
    assert [x.rule for x in v.violations] == [rule]
    assert v.output_topic == "dlq.public_security"


# -- the setting -----------------------------------------------------------------------------

def settings_with(monkeypatch: pytest.MonkeyPatch, value: str | None) -> Settings:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("DATABASE_URL", "postgresql://unused")
    if value is None:
        monkeypatch.delenv("GOVBUS_MAX_CLOCK_SKEW_MS", raising=False)
    else:
        monkeypatch.setenv("GOVBUS_MAX_CLOCK_SKEW_MS", value)
    return Settings.from_env()


def test_the_skew_setting_defaults_to_five_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings_with(monkeypatch, None).max_clock_skew_ms == 5 * 60 * 1000
    assert settings_with(monkeypatch, "0").max_clock_skew_ms == 0
    assert settings_with(monkeypatch, "60000").max_clock_skew_ms == 60_000


@pytest.mark.parametrize("value", ["-1", "86400001", "5m", "1.5"])
def test_a_skew_out_of_range_is_refused_at_start_up(monkeypatch: pytest.MonkeyPatch,
                                                    value: str) -> None:
    with pytest.raises(ConfigError, match="GOVBUS_MAX_CLOCK_SKEW_MS"):
        settings_with(monkeypatch, value)

