"""The codec's bodies against fastavro's, the reference: on generated schemas (every primitive,
enums, fixed, arrays, maps, unions, nested and referenced records) and values of them, it
writes fastavro's bytes and reads back fastavro's values; a body with bytes after its record,
a cut one and random bytes are refused as fastavro refuses them, and read as it reads them
but for an int whose encoding runs past 32 bits, which no Avro writer makes: fastavro returns
a number no int holds, cavro the low 32 bits, as Apache Avro's Java decoder does. A schema
with a logical type is fastavro's alone."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from govbus.core.errors import SerdeError
from govbus.core.serde import Codec

PRIMITIVES = ["null", "boolean", "int", "long", "float", "double", "string", "bytes"]
Case = tuple[dict[str, Any], Any]  # (record schema, a value of it)


def primitive_value(t: str) -> st.SearchStrategy[Any]:
    return {"null": st.none(), "boolean": st.booleans(),
            "int": st.integers(-2**31, 2**31 - 1), "long": st.integers(-2**63, 2**63 - 1),
            # a float survives 32 bits unchanged only when it is one: draw those
            "float": st.floats(width=32, allow_nan=False), "double": st.floats(allow_nan=False),
            "string": st.text(max_size=20), "bytes": st.binary(max_size=20)}[t]


@st.composite
def typed(draw: st.DrawFn, path: str, depth: int, named: dict[str, Any]) -> Case:
    """A type and a value of it; ``named`` holds the records defined so far (by name), which
    a later field may refer to by name."""
    kinds = ["primitive", "primitive", "enum", "fixed", "union"]
    if depth < 3:
        kinds += ["array", "map", "record"]
    if named:
        kinds.append("reference")
    kind = draw(st.sampled_from(kinds))
    if kind == "primitive":
        t = draw(st.sampled_from(PRIMITIVES))
        return t, draw(primitive_value(t))
    if kind == "enum":
        symbols = draw(st.lists(st.sampled_from(["A", "B", "C", "D"]), min_size=1,
                                unique=True))
        return ({"type": "enum", "name": f"E{path}", "symbols": symbols},
                draw(st.sampled_from(symbols)))
    if kind == "fixed":
        size = draw(st.integers(0, 6))
        return ({"type": "fixed", "name": f"F{path}", "size": size},
                draw(st.binary(min_size=size, max_size=size)))
    if kind == "union":  # null and one other branch (a union of one kind of each)
        t = draw(st.sampled_from([p for p in PRIMITIVES if p != "null"]))
        if draw(st.booleans()):
            return ["null", t], None
        return ["null", t], draw(primitive_value(t))
    if kind == "array":  # of items at least a byte long each: a count read from random
        # bytes cannot make a list of millions of nulls out of nothing
        items, _ = draw(st.sampled_from([p for p in PRIMITIVES if p != "null"])
                        .map(lambda p: (p, None)) | typed(f"{path}a", depth + 1, {})
                        .filter(lambda tv: isinstance(tv[0], dict)
                                and tv[0]["type"] == "enum"))
        values = draw(st.lists(typed_value(items, named), max_size=3))
        return {"type": "array", "items": items}, values
    if kind == "map":
        items, _ = draw(typed(f"{path}m", depth + 1, named))
        values = draw(st.dictionaries(st.text(max_size=5), typed_value(items, named),
                                      max_size=3))
        return {"type": "map", "values": items}, values
    if kind == "reference":
        name = draw(st.sampled_from(sorted(named)))
        return name, draw(typed_value(named[name], named))
    return draw(record(f"R{path}", depth + 1, named))


def typed_value(t: Any, named: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of an already drawn type."""
    if isinstance(t, str):
        return primitive_value(t) if t in PRIMITIVES else typed_value(named[t], named)
    if isinstance(t, list):
        return st.none() | primitive_value(t[1])
    kind = t["type"]
    if kind == "enum":
        return st.sampled_from(t["symbols"])
    if kind == "fixed":
        return st.binary(min_size=t["size"], max_size=t["size"])
    if kind == "array":
        return st.lists(typed_value(t["items"], named), max_size=3)
    if kind == "map":
        return st.dictionaries(st.text(max_size=5), typed_value(t["values"], named),
                               max_size=3)
    return st.fixed_dictionaries({f["name"]: typed_value(f["type"], named)
                                  for f in t["fields"]})


@st.composite
def record(draw: st.DrawFn, name: str, depth: int, named: dict[str, Any]) -> Case:
    fields, value = [], {}
    for n in range(draw(st.integers(1, 4))):
        t, v = draw(typed(f"{name}_{n}", depth, named))
        fields.append({"name": f"f{n}", "type": t})
        value[f"f{n}"] = v
    schema = {"type": "record", "name": name, "fields": fields}
    named[name] = schema
    return schema, value


@st.composite
def cases(draw: st.DrawFn) -> Case:
    return draw(record("Top", 0, {}))


def reference(schema: dict[str, Any], value: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), value)
    return out.getvalue()


def read(schema: dict[str, Any], body: bytes) -> Any:
    """fastavro's reading of the whole of ``body``, or the exception it raises."""
    buf = io.BytesIO(body)
    try:
        value = fastavro.schemaless_reader(buf, fastavro.parse_schema(schema), None)
    except Exception as exc:  # what it raises on a bad body varies with the body
        return exc
    return value if buf.tell() == len(body) else ValueError("bytes after the record")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_the_codec_writes_and_reads_what_fastavro_does(case: Case) -> None:
    schema, value = case
    codec = Codec(schema)
    assert codec._fast is not None  # no logical type: cavro writes and reads it
    body = codec.encode(value)
    assert body == reference(schema, value)
    assert codec.decode(body) == read(schema, body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.binary(min_size=1, max_size=8), st.data())
def test_a_bad_body_is_refused_as_fastavro_refuses_it(case: Case, extra: bytes,
                                                      data: st.DataObject) -> None:
    schema, value = case
    codec = Codec(schema)
    body = reference(schema, value)
    with pytest.raises(SerdeError) as trailing:
        codec.decode(body + extra)
    assert trailing.value.violation.rule == "avro.trailing_bytes"
    assert f"{len(extra)} bytes after the record" in str(trailing.value.violation)
    if body:
        cut = data.draw(st.integers(0, len(body) - 1))
        assert isinstance(read(schema, body[:cut]), Exception)
        with pytest.raises(SerdeError):
            codec.decode(body[:cut])
    garbage = data.draw(st.binary(max_size=40))
    expected = read(schema, garbage)
    if isinstance(expected, Exception):
        with pytest.raises(SerdeError):
            codec.decode(garbage)
        return
    got = codec.decode(garbage)
    if got != expected:  # only where fastavro read a value the schema cannot hold (an int
        # past 32 bits): cavro drops the bits past 32, as Apache Avro's Java decoder does
        assert not fastavro.validation.validate(expected, fastavro.parse_schema(schema),
                                                raise_errors=False)
        assert fastavro.validation.validate(got, fastavro.parse_schema(schema),
                                            raise_errors=False)


def test_an_int_past_32_bits_is_read_as_apache_avro_reads_it() -> None:
    schema = {"type": "record", "name": "I", "fields": [{"name": "n", "type": "int"}]}
    assert Codec(schema).decode(b"\x80\x80\x80\x80\x10") == {"n": 0}  # 2**31 wrapped
    assert Codec(schema).decode(b"\xfe\xff\xff\xff\x0f") == {"n": 2**31 - 1}


def test_a_schema_with_a_logical_type_is_fastavros_alone() -> None:
    schema = {"type": "record", "name": "Dated", "fields": [
        {"name": "on", "type": {"type": "int", "logicalType": "date"}}]}
    codec = Codec(schema)
    assert codec._fast is None
    import datetime as dt
    day = dt.date(2026, 12, 6)
    assert codec.decode(codec.encode({"on": day})) == {"on": day}
