"""The gate's decision for one record, without a broker: every bad input has its rule."""

from __future__ import annotations

import pytest

from govbus.core.catalogue import Catalogue, load_catalogue
from govbus.core.envelope import envelope_schema, make_event, now_ms
from govbus.core.errors import RegistryError
from govbus.core.registry import RegisteredSchema
from govbus.core.serde import Codec, frame
from govbus.stream_apps.judge import Verdict, judge

PERSON = {"resident_id": "11010519491231002X", "name": "王芳", "gender": "F",
          "birth_date": "1949-12-31", "ethnicity": None, "residence_address": "渝水区1号",
          "household_division": "360502", "phone": None}


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue()


@pytest.fixture(scope="module")
def schemas(catalogue: Catalogue) -> dict[int, RegisteredSchema]:
    out = {}
    for schema_id, res in enumerate(catalogue, start=1):
        out[schema_id] = RegisteredSchema(schema_id, res.id, 1, res.schema,
                                          Codec(envelope_schema(res)), res)
    return out


def lookup_in(schemas: dict[int, RegisteredSchema]):  # type: ignore[no-untyped-def]
    def lookup(schema_id: int) -> RegisteredSchema:
        if schema_id not in schemas:
            raise RegistryError(f"schema id {schema_id} is not registered")
        return schemas[schema_id]
    return lookup


def encoded(schemas: dict[int, RegisteredSchema], record: dict, agency: str = "public_security",
            locality: str = "360502", op: str = "c") -> bytes:
    sid, reg = next((i, r) for i, r in schemas.items()
                    if r.resource_id == "public_security.population_register")
    event = make_event(reg.resource, version=1, op=op, record=record, agency=agency,
                       locality=locality, before=record if op == "d" else None)
    return frame(sid, reg.codec.encode(event))


def decide(schemas: dict, payload: bytes | None,
           topic: str = "ingest.public_security.population_register") -> Verdict:
    return judge(topic, payload, lookup_in(schemas), now_ms=now_ms(), max_skew_ms=300_000)


def rules(v: Verdict) -> list[str]:
    return [x.rule for x in v.violations]


def test_valid_event_is_accepted(schemas: dict) -> None:
    v = decide(schemas, encoded(schemas, PERSON))
    assert v.accepted and v.output_topic == "validated.public_security.population_register"
    assert v.event is not None and v.event["after"]["name"] == "王芳"


def test_delete_with_before_image_is_accepted(schemas: dict) -> None:
    assert decide(schemas, encoded(schemas, PERSON, op="d")).accepted


@pytest.mark.parametrize("payload,rule", [
    (b"", "wire.too_short"), (None, "wire.too_short"), (b"\x01\x00\x00\x00\x01abc",
                                                         "wire.magic_byte"),
    (b"garbage bytes", "wire.magic_byte"), (frame(4242, b"\x02"), "schema.unknown_id"),
])
def test_bad_framing(schemas: dict, payload: bytes | None, rule: str) -> None:
    v = decide(schemas, payload)
    assert rules(v) == [rule] and v.output_topic == "dlq.public_security"
    assert v.violations[0].article == "Art. 7"


def test_truncated_record_is_rejected(schemas: dict) -> None:
    good = encoded(schemas, PERSON)
    for cut in (6, len(good) // 2, len(good) - 1):
        assert rules(decide(schemas, good[:cut])) in (["avro.decode"], ["avro.trailing_bytes"])


def test_trailing_bytes_are_rejected(schemas: dict) -> None:
    assert rules(decide(schemas, encoded(schemas, PERSON) + b"\x00")) == ["avro.trailing_bytes"]


def test_schema_of_another_resource(schemas: dict) -> None:
    v = decide(schemas, encoded(schemas, PERSON), topic="ingest.tax.tax_registration")
    assert rules(v) == ["schema.resource_mismatch"] and v.output_topic == "dlq.tax"


def test_spoofed_sender(schemas: dict) -> None:
    v = decide(schemas, encoded(schemas, PERSON, agency="tax"))
    assert rules(v) == ["provider.source_mismatch"] and v.violations[0].article == "Art. 8"


@pytest.mark.parametrize("change,rule,field", [
    ({"resident_id": "110105194912310021"}, "identifier.resident_id", "resident_id"),
    ({"household_division": "990000"}, "identifier.division_code", "household_division"),
    ({"name": " "}, "identifier.name", "name"),
])
def test_art12_identifiers(schemas: dict, change: dict, rule: str, field: str) -> None:
    v = decide(schemas, encoded(schemas, PERSON | change))
    assert [(x.rule, x.field, x.article) for x in v.violations][:1] == [(rule, field, "Art. 12")]


def test_locality(schemas: dict) -> None:
    v = decide(schemas, encoded(schemas, PERSON, locality="36050"))
    assert rules(v) == ["locality.invalid"]
