"""Art. 13 schema evolution: Avro BACKWARD compatibility of a new contract with old ones."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from govbus.core.compat import check_backward_transitive, incompatibilities

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"


def record(*fields: dict[str, Any], name: str = "R", **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "gov.test", "fields": list(fields),
            **extra}


def fld(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


@pytest.mark.parametrize("path", sorted(SCHEMAS.glob("*/*.avsc")), ids=lambda p: p.stem)
def test_every_shipped_contract_reads_itself(path: Path) -> None:
    # The govbus attributes are ignored, so the raw contract is compared as it is stored.
    schema = json.loads(path.read_text(encoding="utf-8"))
    assert incompatibilities(schema, copy.deepcopy(schema)) == []


def test_changed_type_names_the_field() -> None:
    old = record(fld("phone", "string"))
    new = record(fld("phone", "int"))
    assert incompatibilities(new, old) == ["field 'phone': type changed from string to int"]


def test_added_field_needs_a_default() -> None:
    old = record(fld("id", "string"))
    assert incompatibilities(record(fld("id", "string"), fld("email", ["null", "string"],
                                                          default=None)), old) == []
    reasons = incompatibilities(record(fld("id", "string"), fld("email", "string")), old)
    assert len(reasons) == 1 and reasons[0].startswith("field 'email': added without a default")


def test_removed_field_is_fine() -> None:
    assert incompatibilities(record(fld("id", "string")),
                             record(fld("id", "string"), fld("gone", "int"))) == []


@pytest.mark.parametrize("writer,reader", [
    ("int", "long"), ("int", "float"), ("int", "double"), ("long", "float"),
    ("long", "double"), ("float", "double"), ("string", "bytes"), ("bytes", "string"),
])
def test_promotions(writer: str, reader: str) -> None:
    assert incompatibilities(record(fld("x", reader)), record(fld("x", writer))) == []


@pytest.mark.parametrize("writer,reader", [
    ("long", "int"), ("double", "float"), ("string", "int"), ("boolean", "int"),
    ("null", "string"),
])
def test_no_narrowing(writer: str, reader: str) -> None:
    assert incompatibilities(record(fld("x", reader)), record(fld("x", writer))) == [
        f"field 'x': type changed from {writer} to {reader}"]


def test_unions() -> None:
    # Making a field nullable is fine; the reverse strands the nulls already written.
    assert incompatibilities(record(fld("x", ["null", "string"])), record(fld("x", "string"))) == []
    reasons = incompatibilities(record(fld("x", "string")), record(fld("x", ["null", "string"])))
    assert reasons == ["field 'x': type changed from null to string"]
    # Each writer branch must fit some reader branch, promotions included.
    assert incompatibilities(record(fld("x", ["null", "long"])),
                             record(fld("x", ["null", "int"]))) == []
    reasons = incompatibilities(record(fld("x", ["null", "string"])),
                                record(fld("x", ["null", "string", "int"])))
    assert reasons == ["field 'x': type changed from int to union [null, string], "
                       "none of whose branches can read it"]


def test_nullable_record_reports_the_inner_field() -> None:
    old = record(fld("a", ["null", record(fld("city", "string"), name="Addr")], default=None))
    new = record(fld("a", ["null", record(fld("city", "int"), name="Addr")], default=None))
    assert incompatibilities(new, old) == ["field 'a.city': type changed from string to int"]


def test_enums() -> None:
    old = record(fld("s", {"type": "enum", "name": "S", "symbols": ["A", "B"]}))
    grown = record(fld("s", {"type": "enum", "name": "S", "symbols": ["A", "B", "C"]}))
    shrunk = record(fld("s", {"type": "enum", "name": "S", "symbols": ["A"]}))
    defaulted = record(fld("s", {"type": "enum", "name": "S", "symbols": ["A"], "default": "A"}))
    assert incompatibilities(grown, old) == []
    assert incompatibilities(defaulted, old) == []
    reasons = incompatibilities(shrunk, old)
    assert len(reasons) == 1 and "field 's'" in reasons[0] and "B" in reasons[0]


def test_arrays_and_maps() -> None:
    old = record(fld("tags", {"type": "array", "items": "int"}),
                 fld("attrs", {"type": "map", "values": "string"}))
    assert incompatibilities(record(fld("tags", {"type": "array", "items": "long"}),
                                    fld("attrs", {"type": "map", "values": "bytes"})), old) == []
    reasons = incompatibilities(record(fld("tags", {"type": "array", "items": "string"}),
                                       fld("attrs", {"type": "map", "values": "int"})), old)
    assert reasons == ["field 'tags[]': type changed from int to string",
                       "field 'attrs{}': type changed from string to int"]
    assert incompatibilities(record(fld("tags", {"type": "map", "values": "int"}),
                                    fld("attrs", {"type": "map", "values": "string"})), old) == [
        "field 'tags': type changed from array to map"]


def test_fixed() -> None:
    old = record(fld("h", {"type": "fixed", "name": "Hash", "size": 16}))
    assert incompatibilities(copy.deepcopy(old), old) == []
    bigger = record(fld("h", {"type": "fixed", "name": "Hash", "size": 32}))
    renamed = record(fld("h", {"type": "fixed", "name": "Digest", "size": 16}))
    assert incompatibilities(bigger, old) == ["field 'h': fixed size changed from 16 to 32"]
    assert incompatibilities(renamed, old) == ["field 'h': fixed name changed from Hash to Digest"]


def test_named_references_and_namespaces() -> None:
    address = {"type": "record", "name": "Address", "fields": [fld("city", "string")]}
    old = record(fld("home", address), fld("work", "Address"))
    # The reader refers to the same type by its full name; the writer by its short name.
    new = record(fld("home", {**address, "namespace": "gov.test"}), fld("work", "gov.test.Address"))
    assert incompatibilities(new, old) == []
    changed = {"type": "record", "name": "Address", "fields": [fld("city", "int")]}
    reasons = incompatibilities(record(fld("home", changed), fld("work", "Address")), old)
    assert reasons == ["field 'home.city': type changed from string to int",
                       "field 'work.city': type changed from string to int"]
    assert incompatibilities(record(fld("x", "Nowhere")), record(fld("x", "string"))) == [
        "field 'x': unknown reader type name 'gov.test.Nowhere'"]


def test_recursive_type_terminates() -> None:
    node = record(fld("value", "int"), fld("next", ["null", "Node"], default=None), name="Node")
    wider = record(fld("value", "long"), fld("next", ["null", "Node"], default=None), name="Node")
    assert incompatibilities(wider, node) == []


def test_aliases() -> None:
    old = record(fld("tel", "string"))
    assert incompatibilities(record(fld("phone", "string", aliases=["tel"])), old) == []
    assert incompatibilities(record(fld("phone", "string")), old)[0].startswith(
        "field 'phone': added without a default")
    assert incompatibilities(record(fld("tel", "string"), name="Q", aliases=["R"]), old) == []
    assert incompatibilities(record(fld("tel", "string"), name="Q"), old) == [
        "schema: record name changed from R to Q"]


def test_logical_types_compare_underlying_types() -> None:
    date = {"type": "int", "logicalType": "date"}
    millis = {"type": "long", "logicalType": "timestamp-millis"}
    assert incompatibilities(record(fld("d", date)), record(fld("d", "int"))) == []
    assert incompatibilities(record(fld("d", millis)), record(fld("d", date))) == []
    assert incompatibilities(record(fld("d", {"type": "string", "logicalType": "uuid"})),
                             record(fld("d", date))) == [
        "field 'd': type changed from int to string"]


def test_govbus_attributes_are_ignored() -> None:
    old = record(fld("x", "string", govbus={"sensitive": True}), govbus={"title": "old"})
    new = record(fld("x", "string", govbus={"canonical": "person.name"}), govbus={"title": "new"})
    assert incompatibilities(new, old) == []


def test_backward_transitive_names_the_version() -> None:
    v1 = record(fld("x", "int"))
    v2 = record(fld("x", "string", aliases=[]))
    new = record(fld("x", "string"))
    assert check_backward_transitive(new, [v1, v2]) == [
        "version 1: field 'x': type changed from int to string"]
    assert check_backward_transitive(new, []) == []
