"""The bad-input corpus: malformed ingest payloads and publish-API calls, each with the rule
that must reject it. Builders take a schema lookup so the same corpus runs against
an in-memory registry (unit tests) and the real one in PostgreSQL (integration tests).

Gate entries are ``(topic, key, payload)`` a faulty or hostile adapter could put on an ingest
topic; publish entries are ``(agency, resource, Change)`` handed to the publishing library.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fastavro

from govbus.core.envelope import envelope_schema, make_event
from govbus.core.registry import RegisteredSchema
from govbus.core.serde import frame
from govbus.producers.publisher import Change

SchemaFor = Callable[[str], RegisteredSchema]  # resource id → its latest registered schema
POP = "public_security.population_register"
TAX = "tax.tax_registration"
POP_TOPIC = f"ingest.{POP}"
YEAR_9999_MS = 253_370_764_800_000  # 9999-01-01T00:00:00Z

PERSON: dict[str, Any] = {
    "resident_id": "11010519491231002X", "name": "王芳", "gender": "F",
    "birth_date": "1949-12-31", "ethnicity": None, "residence_address": "渝水区仙来东大道1号",
    "household_division": "360502", "phone": None}
COMPANY: dict[str, Any] = {"uscc": "91360502MA35L7XK0N", "taxpayer_name": "新余市渝水区某某公司"}


def event(schema_for: SchemaFor, record: dict[str, Any] | None = None, *, op: str = "c",
          agency: str = "public_security", locality: str = "360502",
          before: dict[str, Any] | None = None, **override: Any) -> dict[str, Any]:
    """A population-register envelope; keyword overrides replace envelope fields."""
    reg = schema_for(POP)
    rec = PERSON if record is None else record
    ev = make_event(reg.resource, version=reg.version, op=op, record=rec, agency=agency,
                    locality=locality, before=before if before is not None else
                    (rec if op == "d" else None))
    ev.update(override)
    return ev


def framed(schema_for: SchemaFor, ev: dict[str, Any], resource: str = POP) -> bytes:
    reg = schema_for(resource)
    return frame(reg.schema_id, reg.codec.encode(ev))


def valid_payload(schema_for: SchemaFor, record: dict[str, Any] | None = None) -> bytes:
    return framed(schema_for, event(schema_for, record))


def _enum_out_of_range(schema_for: SchemaFor) -> bytes:
    """Gender written as symbol index 2 of an enum that only has M and F: a wrong value a
    hand-written encoder could produce, decodable by no registered version."""
    reg = schema_for(POP)
    schema = envelope_schema(reg.resource)
    before = next(f for f in schema["fields"] if f["name"] == "before")
    for f in before["type"][1]["fields"]:
        if f["name"] == "gender":
            f["type"] = {"type": "enum", "name": "Gender", "symbols": ["M", "F", "X"]}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema),
                               event(schema_for, PERSON | {"gender": "X"}))
    return frame(reg.schema_id, buf.getvalue())


def _string_where_long(schema_for: SchemaFor) -> bytes:
    """A body whose event id (a string) says it is -1 bytes long: a long or a boolean where
    a string belongs. The fields before it are written as they are, the id's length replaced."""
    reg = schema_for(POP)
    ev = event(schema_for)
    ev["event_id"] = ""  # its length, 0, is one byte: the byte the -1 replaces
    body = reg.codec.encode(ev)
    head = reg.codec.encode({**ev, "event_id": "\x00"})  # the id alone differs, by its byte
    at = next(n for n, (a, b) in enumerate(zip(body, head, strict=False)) if a != b)
    return frame(reg.schema_id, body[:at] + b"\x01" + body[at + 1:])


@dataclass(frozen=True)
class GateCase:
    """One bad ingest record and the rule the gate must name for it."""

    name: str
    build: Callable[[SchemaFor], tuple[str, bytes | None]]  # → (topic, payload)
    rule: str
    article: str


def _on(topic: str, payload: Callable[[SchemaFor], bytes | None]
        ) -> Callable[[SchemaFor], tuple[str, bytes | None]]:
    return lambda s: (topic, payload(s))


GATE_CORPUS: list[GateCase] = [
    GateCase("garbage_bytes", _on(POP_TOPIC, lambda s: b"\xde\xad\xbe\xef not avro at all"),
             "wire.magic_byte", "Art. 7"),
    GateCase("empty_payload", _on(POP_TOPIC, lambda s: b""), "wire.too_short", "Art. 7"),
    GateCase("tombstone", _on(POP_TOPIC, lambda s: None), "wire.too_short", "Art. 7"),
    GateCase("header_only_4_bytes", _on(POP_TOPIC, lambda s: b"\x00\x00\x00\x01"),
             "wire.too_short", "Art. 7"),
    GateCase("wrong_magic_byte", _on(POP_TOPIC, lambda s: b"\x01" + valid_payload(s)[1:]),
             "wire.magic_byte", "Art. 7"),
    GateCase("json_instead_of_avro", _on(POP_TOPIC, lambda s: b'{"resident_id": "1"}'),
             "wire.magic_byte", "Art. 7"),
    GateCase("unknown_schema_id", _on(POP_TOPIC, lambda s: frame(2_000_000_000,
                                                                 valid_payload(s)[5:])),
             "schema.unknown_id", "Art. 7"),
    GateCase("schema_of_other_resource",
             _on(POP_TOPIC, lambda s: frame(s(TAX).schema_id, valid_payload(s)[5:])),
             "schema.resource_mismatch", "Art. 7"),
    GateCase("truncated_avro", _on(POP_TOPIC, lambda s: valid_payload(s)[:-9]),
             "avro.decode", "Art. 7"),
    GateCase("truncated_to_header_plus_1", _on(POP_TOPIC, lambda s: valid_payload(s)[:6]),
             "avro.decode", "Art. 7"),
    GateCase("trailing_bytes", _on(POP_TOPIC, lambda s: valid_payload(s) + b"\x00\x00"),
             "avro.trailing_bytes", "Art. 7"),
    GateCase("wrong_type_enum_index", _on(POP_TOPIC, _enum_out_of_range),
             "avro.decode", "Art. 7"),
    GateCase("wrong_type_negative_length", _on(POP_TOPIC, _string_where_long),
             "avro.decode", "Art. 7"),
    GateCase("oversized_address", _on(POP_TOPIC, lambda s: framed(s, event(
        s, PERSON | {"residence_address": "渝" * 5000}))), "field.too_long", "Art. 7"),
    GateCase("oversized_event_id", _on(POP_TOPIC, lambda s: framed(s, event(
        s, event_id="e" * 1000))), "field.too_long", "Art. 7"),
    GateCase("nul_in_event_id", _on(POP_TOPIC, lambda s: framed(s, event(
        s, event_id="evt-\x00-1"))), "field.nul_character", "Art. 7"),
    GateCase("nul_in_address", _on(POP_TOPIC, lambda s: framed(s, event(
        s, PERSON | {"residence_address": "朝阳路\x001号"}))), "field.nul_character",
        "Art. 7"),
    GateCase("resident_id_check_digit", _on(POP_TOPIC, lambda s: framed(s, event(
        s, PERSON | {"resident_id": "110105194912310021"}))), "identifier.resident_id",
        "Art. 12"),
    GateCase("resident_id_letters", _on(POP_TOPIC, lambda s: framed(s, event(
        s, PERSON | {"resident_id": "ABCDEFGHIJKLMNOPQR"}))), "identifier.resident_id",
        "Art. 12"),
    GateCase("division_code_unknown", _on(POP_TOPIC, lambda s: framed(s, event(
        s, PERSON | {"household_division": "990000"}))), "identifier.division_code",
        "Art. 12"),
    GateCase("blank_name", _on(POP_TOPIC, lambda s: framed(s, event(
        s, PERSON | {"name": "  "}))), "identifier.name", "Art. 12"),
    GateCase("locality_not_a_code", _on(POP_TOPIC, lambda s: framed(s, event(
        s, locality="Yushui"))), "locality.invalid", "Art. 12"),
    GateCase("key_not_the_identifier", _on(POP_TOPIC, lambda s: framed(s, event(
        s, key="11010519491231003X"))), "envelope.key_mismatch", "Art. 12"),
    GateCase("delete_without_before", _on(POP_TOPIC, lambda s: framed(s, event(
        s, op="u", after=None))), "envelope.image_missing", "Art. 7"),
    GateCase("spoofed_source_agency", _on(POP_TOPIC, lambda s: framed(s, event(
        s, agency="tax"))), "provider.source_mismatch", "Art. 8"),
    GateCase("unknown_agency_topic",
             _on("ingest.no_such_agency.population_register", lambda s: valid_payload(s)),
             "schema.resource_mismatch", "Art. 7"),
    GateCase("not_the_provider_topic",
             _on("ingest.tax.population_register", lambda s: valid_payload(s)),
             "schema.resource_mismatch", "Art. 7"),
    GateCase("empty_event_id", _on(POP_TOPIC, lambda s: framed(s, event(s, event_id=""))),
             "envelope.event_id_blank", "Art. 19"),
    GateCase("blank_event_id", _on(POP_TOPIC, lambda s: framed(s, event(
        s, event_id=" \t\u3000"))), "envelope.event_id_blank", "Art. 19"),
    GateCase("occurred_in_year_9999", _on(POP_TOPIC, lambda s: framed(s, event(
        s, occurred_ms=YEAR_9999_MS))), "envelope.occurred_in_future", "Art. 19"),
    GateCase("resident_id_lowercase_x", _on(POP_TOPIC, lambda s: framed(s, event(
        s, PERSON | {"resident_id": "11010519491231002x"}))),
        "identifier.resident_id_lowercase", "Art. 12"),
    GateCase("update_before_bad_check_digit", _on(POP_TOPIC, lambda s: framed(s, event(
        s, op="u", before=PERSON | {"resident_id": "110105194912310021"}))),
        "envelope.before_invalid", "Art. 12"),
    GateCase("update_before_blank_name", _on(POP_TOPIC, lambda s: framed(s, event(
        s, op="u", before=PERSON | {"name": " "}))), "envelope.before_invalid", "Art. 12"),
    GateCase("update_before_lowercase_x", _on(POP_TOPIC, lambda s: framed(s, event(
        s, op="u", before=PERSON | {"resident_id": "11010519491231002x"}))),
        "envelope.before_invalid", "Art. 12"),
    GateCase("topic_extra_part", _on(f"{POP_TOPIC}.extra", lambda s: valid_payload(s)),
             "topic.malformed", "Art. 7"),
    GateCase("topic_empty_resource", _on("ingest.public_security.",
                                         lambda s: valid_payload(s)), "topic.malformed", "Art. 7"),
]


@dataclass(frozen=True)
class PublishCase:
    """One bad call of the publish API and the rule its refusal must name."""

    name: str
    agency: str
    resource: str
    change: Change
    rule: str
    field: str


PUBLISH_CORPUS: list[PublishCase] = [
    PublishCase("wrong_type_int_for_string", "public_security", "population_register",
                Change("c", PERSON | {"name": 42}), "contract.type", "record.name"),
    PublishCase("wrong_type_enum", "public_security", "population_register",
                Change("c", PERSON | {"gender": "X"}), "contract.type", "record.gender"),
    PublishCase("missing_required_field", "public_security", "population_register",
                Change("c", {k: v for k, v in PERSON.items() if k != "birth_date"}),
                "contract.type", "record.birth_date"),
    PublishCase("unknown_field", "public_security", "population_register",
                Change("c", PERSON | {"religion": "none"}), "contract.unknown_field",
                "record.religion"),
    PublishCase("not_a_record", "public_security", "population_register",
                Change("c", ["not", "a", "record"]),  # type: ignore[arg-type]
                "contract.not_a_record", "record.record"),
    PublishCase("unknown_op", "public_security", "population_register",
                Change("merge", PERSON), "envelope.op", "op"),
    PublishCase("oversized_field", "public_security", "population_register",
                Change("c", PERSON | {"residence_address": "x" * 10_000}), "field.too_long",
                "after.residence_address"),
    PublishCase("bad_check_digit", "public_security", "population_register",
                Change("c", PERSON | {"resident_id": "110105194912310021"}),
                "identifier.resident_id", "resident_id"),
    PublishCase("bad_locality", "public_security", "population_register",
                Change("c", PERSON, locality="36050X"), "locality.invalid", "source.locality"),
    PublishCase("delete_without_before", "public_security", "population_register",
                Change("d", None), "envelope.image_missing", "before"),
    PublishCase("resident_id_lowercase_x", "public_security", "population_register",
                Change("c", PERSON | {"resident_id": "11010519491231002x"}),
                "identifier.resident_id_lowercase", "resident_id"),
    PublishCase("update_before_bad_check_digit", "public_security", "population_register",
                Change("u", PERSON, before=PERSON | {"resident_id": "110105194912310021"}),
                "envelope.before_invalid", "before.resident_id"),
    PublishCase("blank_event_id", "public_security", "population_register",
                Change("c", PERSON, event_id="  "), "envelope.event_id_blank", "event_id"),
]

# Calls the publish API refuses outright, before any record is looked at: (agency, resource,
# the rule the error message must name).
PUBLISH_ERRORS: list[tuple[str, str, str]] = [
    ("tax", "population_register", "catalogue.unknown_resource"),      # not the provider
    ("no_such_agency", "population_register", "catalogue.unknown_resource"),
    ("public_security", "no_such_resource", "catalogue.unknown_resource"),
]
