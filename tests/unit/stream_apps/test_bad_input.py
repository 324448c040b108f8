"""The bad-input corpus and property-based fuzzing against the gate's decision and the publish
API, without a broker. Every corpus entry must be rejected with exactly its rule; no
input whatever may make the decision raise, and every rejection names a known rule and article.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from govbus.core.catalogue import Catalogue, CatalogueError, load_catalogue
from govbus.core.config import Settings
from govbus.core.envelope import envelope_schema, now_ms
from govbus.core.errors import RegistryError
from govbus.core.registry import RegisteredSchema
from govbus.core.serde import Codec
from govbus.producers.publisher import Change, Publisher
from govbus.stream_apps.judge import Verdict, judge
from tests.corpus.bad_inputs import (
    GATE_CORPUS,
    PERSON,
    POP,
    POP_TOPIC,
    PUBLISH_CORPUS,
    PUBLISH_ERRORS,
    GateCase,
    PublishCase,
    valid_payload,
)

SKEW_MS = Settings.max_clock_skew_ms

# Every rule the gate may name; a rejection with any other rule is a bug in the gate.
GATE_RULES = {
    "wire.too_short", "wire.magic_byte", "schema.unknown_id", "schema.resource_mismatch",
    "avro.decode", "avro.trailing_bytes", "provider.not_registered", "provider.source_mismatch",
    "envelope.resource_mismatch", "locality.invalid", "envelope.image_missing",
    "envelope.key_mismatch", "identifier.missing", "identifier.resident_id", "identifier.uscc",
    "identifier.division_code", "identifier.name", "field.too_long", "field.nul_character",
    "identifier.resident_id_lowercase", "envelope.event_id_blank", "envelope.before_invalid",
    "envelope.occurred_in_future", "topic.malformed"}


class MemoryRegistry:
    """The catalogue registered in memory, one schema id per resource (ids from 1)."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.by_resource = {res.id: RegisteredSchema(i, res.id, 1, res.schema,
                                                     Codec(envelope_schema(res)), res)
                            for i, res in enumerate(catalogue, start=1)}
        self.ids = {r.schema_id: r for r in self.by_resource.values()}

    def by_id(self, schema_id: int) -> RegisteredSchema:
        if schema_id not in self.ids:
            raise RegistryError(f"schema id {schema_id} is not registered")
        return self.ids[schema_id]

    def latest(self, resource_id: str) -> RegisteredSchema:
        return self.by_resource[resource_id]


class NoBroker:
    """Stands where the producer would be: ``prepare`` must never touch the broker."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the publish API's checks used the producer ({name})")


@pytest.fixture(scope="module")
def registry() -> MemoryRegistry:
    return MemoryRegistry(load_catalogue())


@pytest.fixture(scope="module")
def publisher(registry: MemoryRegistry) -> Publisher:
    cat = load_catalogue()
    return Publisher(Settings("127.0.0.1:1", "postgresql://unused", cat.root), cat,
                     registry=registry, producer=NoBroker())  # type: ignore[arg-type]


def decide(registry: MemoryRegistry, topic: str, payload: bytes | None) -> Verdict:
    return judge(topic, payload, registry.by_id, now_ms=now_ms(), max_skew_ms=SKEW_MS)


def assert_well_formed(v: Verdict) -> None:
    """Accepted with an event, or rejected to the DLQ naming known rules and articles."""
    if v.accepted:
        assert v.event is not None and v.output_topic.startswith("validated.")
        return
    assert v.output_topic == f"dlq.{v.agency}"
    for x in v.violations:
        assert x.rule in GATE_RULES, x
        assert x.article.startswith("Art. ") and x.message and x.field


@pytest.mark.parametrize("case", GATE_CORPUS, ids=lambda c: c.name)
def test_gate_corpus_entry_is_rejected_with_its_rule(registry: MemoryRegistry,
                                                     case: GateCase) -> None:
    topic, payload = case.build(registry.latest)
    v = decide(registry, topic, payload)
    assert not v.accepted, f"{case.name} was accepted"
    assert (v.violations[0].rule, v.violations[0].article) == (case.rule, case.article), \
        [str(x) for x in v.violations]
    assert_well_formed(v)


def test_the_corpus_covers_every_kind_named_in_the_issue() -> None:
    names = " ".join(c.name for c in GATE_CORPUS) + " " + " ".join(
        c.name for c in PUBLISH_CORPUS)
    for kind in ("garbage", "magic", "unknown_schema", "truncated", "wrong_type", "oversized",
                 "resident_id", "unknown_agency"):
        assert kind in names, kind


@pytest.mark.parametrize("case", PUBLISH_CORPUS, ids=lambda c: c.name)
def test_publish_corpus_entry_is_refused_with_its_rule(publisher: Publisher,
                                                       case: PublishCase) -> None:
    resource = publisher.catalogue.get(case.agency, case.resource)
    event, violations = publisher.prepare(case.agency, resource, case.change)
    assert violations, f"{case.name} was not refused"
    assert (case.rule, case.field) in [(v.rule, v.field) for v in violations], \
        [str(v) for v in violations]
    assert all(v.article.startswith("Art. ") for v in violations)


@pytest.mark.parametrize("agency,resource,rule", PUBLISH_ERRORS)
def test_publish_to_an_unknown_resource_names_the_rule(publisher: Publisher, agency: str,
                                                       resource: str, rule: str) -> None:
    with pytest.raises(CatalogueError, match=rf"^{rule} \[Art\. 7\].*{agency}\.{resource}"):
        publisher.publish(agency, resource, [Change("c", PERSON)])


def test_valid_payload_is_accepted(registry: MemoryRegistry) -> None:
    v = decide(registry, POP_TOPIC, valid_payload(registry.latest))
    assert v.accepted and v.output_topic == f"validated.{POP}"


FUZZ = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(payload=st.binary(max_size=300))
def test_fuzz_arbitrary_bytes_never_crash_the_gate(registry: MemoryRegistry,
                                                   payload: bytes) -> None:
    assert_well_formed(decide(registry, POP_TOPIC, payload))


@FUZZ
@given(schema_id=st.integers(0, 2**32 - 1), body=st.binary(max_size=300))
def test_fuzz_framed_bodies_never_crash_the_gate(registry: MemoryRegistry, schema_id: int,
                                                 body: bytes) -> None:
    payload = b"\x00" + schema_id.to_bytes(4, "big") + body
    assert_well_formed(decide(registry, POP_TOPIC, payload))


@FUZZ
@given(seed=st.integers(0, 2**32), flips=st.integers(1, 8), cut=st.integers(0, 40),
       grow=st.binary(max_size=12))
def test_fuzz_mutated_valid_events_are_decided_cleanly(registry: MemoryRegistry, seed: int,
                                                       flips: int, cut: int,
                                                       grow: bytes) -> None:
    """Coverage where it matters: near-valid payloads get deep into the decoder and rules."""
    rng = random.Random(seed)
    data = bytearray(valid_payload(registry.latest))
    for _ in range(flips):
        data[rng.randrange(5, len(data))] = rng.randrange(256)
    payload = bytes(data[:len(data) - cut]) + grow
    assert_well_formed(decide(registry, POP_TOPIC, payload))


TEXT = st.text(max_size=40) | st.sampled_from(["11010519491231002X", "360502", "", " "])
VALUE = st.none() | st.integers() | st.floats(allow_nan=True) | st.booleans() | TEXT | \
    st.lists(st.integers(), max_size=3)
FIELDS = st.sampled_from(list(PERSON) + ["extra", ""])


@FUZZ
@given(record=st.dictionaries(FIELDS, VALUE, max_size=10) | st.builds(
    lambda changes: PERSON | changes, st.dictionaries(FIELDS, VALUE, max_size=3)),
    op=st.sampled_from(["c", "u", "d", "r", "create", "x", ""]),
    locality=st.none() | TEXT)
def test_fuzz_publish_api_refuses_or_builds_a_valid_event(
        publisher: Publisher, registry: MemoryRegistry, record: dict[str, Any], op: str,
        locality: str | None) -> None:
    """The publish API never raises on a bad record: it refuses naming each rule, or builds an
    event that the gate accepts (what the publisher passes, the gate passes)."""
    resource = publisher.catalogue.get("public_security", "population_register")
    change = Change(op, record, before=record if op in ("d", "u") else None, locality=locality)
    event, violations = publisher.prepare("public_security", resource, change)
    for v in violations:
        assert v.rule and v.field and v.article.startswith("Art. ") and v.message
    if event is not None and not violations:
        reg = registry.latest(POP)
        payload = b"\x00" + reg.schema_id.to_bytes(4, "big") + reg.codec.encode(event)
        v = decide(registry, POP_TOPIC, payload)
        assert v.accepted, [str(x) for x in v.violations]

