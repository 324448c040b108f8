"""A grant's projection schema and how a delivery is written (no broker, no database)."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from govbus.core import deliveries
from govbus.core.catalogue import Catalogue, load_catalogue
from govbus.core.deliveries import (
    MASKED_TYPE,
    Decoder,
    DeliverySchema,
    Framed,
    delivery_schema,
    subject,
    value_schema,
)
from govbus.core.envelope import make_event
from govbus.core.routing import make_delivery
from govbus.core.serde import frame, unframe
from govbus.core.sharing import Grant

TAX = "tax.tax_registration"
POP = "public_security.population_register"
FIRM = {"uscc": "91360502MA35L7XK1B", "taxpayer_name": "新余市某某有限公司",
        "legal_representative": "李强", "registered_address": "渝水区劳动北路1号",
        "taxpayer_type": "GENERAL", "tax_authority": "国家税务总局新余市渝水区税务局",
        "credit_rating": "AAA-2025-07"}


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue()


def grant(resource_id: str, fields: tuple[str, ...], masked: tuple[str, ...] = (),
          recipient: str = "hrss", grant_id: int = 3) -> Grant:
    return Grant(grant_id, recipient, resource_id, fields, masked,
                 dt.datetime(2026, 1, 1, tzinfo=dt.UTC), None, None)


def test_the_projection_has_the_granted_fields_in_order_masked_ones_as_nullable_strings(
        catalogue: Catalogue) -> None:
    res = catalogue.resources[TAX]
    value = value_schema(res, ["credit_rating", "uscc", "taxpayer_type", "not_in_contract"],
                         ["credit_rating"], "hrss")
    assert [f["name"] for f in value["fields"]] == ["credit_rating", "uscc", "taxpayer_type"]
    assert value["fields"][0]["type"] == MASKED_TYPE and value["fields"][0]["default"] is None
    assert value["fields"][2]["type"]["name"] == "gov.yushui.tax.TaxpayerType"  # its own name
    envelope = delivery_schema(res, ["uscc"], [], "hrss")
    assert envelope["name"] == "Envelope"
    assert envelope["namespace"] == "gov.yushui.deliver.hrss.tax.tax_registration"
    assert [f["name"] for f in envelope["fields"]][-3:] == ["grant_id", "masked_fields",
                                                             "channel"]
    fastavro.parse_schema(envelope)  # a valid schema
    assert subject("hrss", TAX) == "deliver.hrss.tax_registration-value"


def test_a_named_type_defined_by_a_field_left_out_is_defined_where_it_is_used(
        catalogue: Catalogue) -> None:
    res = catalogue.resources[POP]
    schema = dict(res.schema)
    schema["fields"] = [*schema["fields"],
                        {"name": "gender_at_birth", "type": "Gender", "default": "M"}]
    from govbus.core.catalogue import resource_from_schema
    widened = resource_from_schema("public_security", "population_register", schema, res.path)
    value = value_schema(widened, ["resident_id", "gender_at_birth"], [], "tax")
    gender = value["fields"][1]["type"]
    assert gender["type"] == "enum" and gender["symbols"] == ["M", "F"]
    both = value_schema(widened, ["gender", "gender_at_birth"], [], "tax")
    assert both["fields"][1]["type"] == "gov.yushui.public_security.Gender"  # defined once
    fastavro.parse_schema(delivery_schema(widened, ["gender", "gender_at_birth"], [], "tax"))


records = st.fixed_dictionaries({
    "uscc": st.text(max_size=20), "taxpayer_name": st.text(max_size=30),
    "legal_representative": st.text(max_size=10), "registered_address": st.text(max_size=30),
    "taxpayer_type": st.sampled_from(["GENERAL", "SMALL_SCALE"]),
    "tax_authority": st.text(max_size=20), "credit_rating": st.none() | st.text(max_size=15)})
transactions = st.none() | st.fixed_dictionaries({
    "id": st.text(max_size=10), "total_order": st.integers(1, 2**40),
    "data_collection_order": st.integers(1, 2**40)})


@settings(max_examples=150, deadline=None)
@given(after=records, before=st.none() | records, op=st.sampled_from(["c", "u", "d", "r"]),
       fields=st.lists(st.sampled_from(list(FIRM)), min_size=1, unique=True),
       masked=st.sets(st.sampled_from(list(FIRM))), transaction=transactions,
       channel=st.sampled_from(["exchange", "backfill"]), grant_id=st.integers(0, 2**40))
def test_a_delivery_is_framed_avro_of_its_projection_schema(
        after: dict[str, Any], before: dict[str, Any] | None, op: str, fields: list[str],
        masked: set[str], transaction: dict[str, Any] | None, channel: str,
        grant_id: int) -> None:
    res = load_catalogue().resources[TAX]
    kept = tuple(m for m in fields if m in masked)
    g = grant(TAX, tuple(fields), kept, grant_id=grant_id)
    schema = delivery_schema(res, g.fields, g.masked_fields, "hrss")
    framed = Framed(DeliverySchema(41, subject("hrss", TAX), 1, schema))
    event = make_event(res, version=1, op=op, record=None if op == "d" else after,
                       before=before if op != "d" else (before or after), agency="tax",
                       locality="360502", transaction=transaction, tx_id=7, lsn=9)
    delivery = make_delivery(res, event, g, framed)
    value = delivery.value | {"channel": channel}
    written = framed(value)
    parsed = fastavro.parse_schema(schema)
    reference = io.BytesIO()  # fastavro, the reference: the same bytes, read back the same
    fastavro.schemaless_writer(reference, parsed, value)
    assert written == frame(41, reference.getvalue())
    schema_id, body = unframe(written)
    decoded = fastavro.schemaless_reader(io.BytesIO(body), parsed, None)
    assert schema_id == 41 and decoded == value


def fastavro_bytes(schema: dict[str, Any], schema_id: int, value: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), value)
    return frame(schema_id, out.getvalue())


def test_an_events_deliveries_share_its_fields_encoding_and_a_change_is_written_anew(
        catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[str] = []
    shared = deliveries._SHARED
    monkeypatch.setattr(shared, "encode", lambda v, write=shared.encode: (
        writes.append(v["event_id"]), write(v))[1])
    res = catalogue.resources[TAX]
    firm, board = grant(TAX, ("uscc",), grant_id=1), grant(TAX, ("uscc", "credit_rating"),
                                                           ("credit_rating",), grant_id=2)
    framed = {g.grant_id: Framed(DeliverySchema(g.grant_id, "s", 1, delivery_schema(
        res, g.fields, g.masked_fields, "hrss"))) for g in (firm, board)}
    event = make_event(res, version=1, op="c", record=FIRM, agency="tax", locality="360502")
    values = [make_delivery(res, event, g).value for g in (firm, board)]
    for g, value in zip((firm, board), values, strict=True):  # the second reuses the first's
        schema = delivery_schema(res, g.fields, g.masked_fields, "hrss")
        assert framed[g.grant_id](value) == fastavro_bytes(schema, g.grant_id, value)
    assert writes == [event["event_id"]]  # once for both deliveries
    event["source"]["locality"] = "360521"  # the same dict, changed: written anew
    value = make_delivery(res, event, board).value
    assert value["source"] is values[0]["source"]
    schema = delivery_schema(res, board.fields, board.masked_fields, "hrss")
    written = framed[2](value)
    assert written == fastavro_bytes(schema, 2, value)
    assert decoded(schema, written)["source"]["locality"] == "360521"
    assert len(writes) == 2


def decoded(schema: dict[str, Any], payload: bytes) -> dict[str, Any]:
    _, body = unframe(payload)
    return fastavro.schemaless_reader(io.BytesIO(body), fastavro.parse_schema(schema), None)


def test_the_decoder_reads_framed_avro_by_its_id_and_json_as_json(catalogue: Catalogue
                                                                  ) -> None:
    res = catalogue.resources[TAX]
    g = grant(TAX, ("uscc", "credit_rating"), ("credit_rating",))
    schema = delivery_schema(res, g.fields, g.masked_fields, "hrss")
    looked_up: list[int] = []

    def lookup(schema_id: int) -> dict[str, Any] | None:
        looked_up.append(schema_id)
        return schema if schema_id == 9 else None

    decode = Decoder(lookup)
    event = make_event(res, version=1, op="c", record=FIRM, agency="tax", locality="360502")
    delivery = make_delivery(res, event, g, Framed(DeliverySchema(9, "s", 1, schema)))
    payload = delivery.encode(delivery.value)
    assert decode(payload)["after"] == {"uscc": FIRM["uscc"], "credit_rating": "AAA******07"}
    assert decode(payload)["event_id"] == event["event_id"]
    assert looked_up == [9]  # once per schema id
    assert decode(b'{"event_id": "x"}') == {"event_id": "x"}
    with pytest.raises(ValueError, match="schema id 10 is not a registered delivery schema"):
        decode(frame(10, b""))
    with pytest.raises(ValueError, match="not a valid Avro delivery of schema 9"):
        decode(payload[:12])
    with pytest.raises(ValueError, match="neither framed Avro nor JSON"):
        decode(b"{not json")
    with pytest.raises(ValueError, match="empty delivery"):
        decode(b"")
