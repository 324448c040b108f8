"""govbus's compatibility checker against Apache Avro's own (``avro.compatibility``), on
generated pairs of record schemas: fields added and removed with and without defaults, the
primitive promotions (int to long, float, double; long to float, double; float to double;
string and bytes both ways) and every other primitive mismatch, nullable unions on either
side, enums with symbols added or removed (with and without a reader default), fixed types
of the same or another size, nested records, arrays and maps, and a type of one kind
replaced by another. Each pair is judged in both directions (reader and writer swapped): the
two checkers give the same verdict.

The pairs are generated side by side, field by field, so that a named type (record, enum)
has the same name at the same place in both schemas and a unique one within each; a name
change is covered by tests/unit/core/test_compat.py. No case disagrees: there is no
exception to document.
"""

from __future__ import annotations

import json
from typing import Any

from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from avro.schema import parse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from govbus.core.compat import incompatibilities

PRIMITIVES = ["null", "boolean", "int", "long", "float", "double", "string", "bytes"]
FIELDS = ["f0", "f1", "f2", "f3"]
SYMBOLS = ["A", "B", "C", "D"]
Pair = tuple[Any, Any]  # (reader type, writer type)


def default_for(t: Any) -> Any:
    """A valid default of type ``t`` (a union's is of its first branch)."""
    if isinstance(t, list):
        return default_for(t[0])
    if isinstance(t, dict):
        return {"record": lambda: {f["name"]: default_for(f["type"]) for f in t["fields"]},
                "enum": lambda: t["symbols"][0], "array": list, "map": dict,
                "fixed": lambda: "\u0000" * t["size"]}[t["type"]]()
    return {"null": None, "boolean": False, "int": 0, "long": 0, "float": 0.0,
            "double": 0.0, "string": "", "bytes": ""}[t]


@st.composite
def enum_pair(draw: st.DrawFn, path: str) -> Pair:
    def side(reader: bool) -> dict[str, Any]:
        symbols = draw(st.lists(st.sampled_from(SYMBOLS), min_size=1, max_size=4, unique=True))
        out: dict[str, Any] = {"type": "enum", "name": f"E_{path}", "symbols": symbols}
        if reader and draw(st.booleans()):
            out["default"] = draw(st.sampled_from(symbols))
        return out
    return side(True), side(False)


@st.composite
def record_pair(draw: st.DrawFn, path: str, depth: int) -> Pair:
    """Records of the same name whose fields are in one, the other or both; a reader's
    field may carry a default (a writer's default never matters to resolution)."""
    names = draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True))
    reader: list[dict[str, Any]] = []
    writer: list[dict[str, Any]] = []
    for name in names:
        r, w = draw(type_pair(f"{path}_{name}", depth + 1))
        where = draw(st.sampled_from(["both", "both", "reader", "writer"]))
        if where in ("both", "reader"):
            field: dict[str, Any] = {"name": name, "type": r}
            if draw(st.booleans()):
                field["default"] = default_for(r)
            reader.append(field)
        if where in ("both", "writer"):
            writer.append({"name": name, "type": w})
    if not reader:
        reader.append({"name": "only", "type": "int", "default": 0})
    if not writer:
        writer.append({"name": "only", "type": "int"})
    return ({"type": "record", "name": f"R_{path}", "fields": reader},
            {"type": "record", "name": f"R_{path}", "fields": writer})


def nullable(draw: st.DrawFn, t: Any) -> Any:
    return ["null", t] if not isinstance(t, list) and t != "null" and draw(st.booleans()) else t


@st.composite
def type_pair(draw: st.DrawFn, path: str, depth: int) -> Pair:
    kinds = ["primitive", "primitive", "primitive", "enum", "fixed", "array", "map", "mixed"]
    if depth < 2:
        kinds.append("record")
    kind = draw(st.sampled_from(kinds))
    if kind == "primitive":
        pair: Pair = (draw(st.sampled_from(PRIMITIVES)), draw(st.sampled_from(PRIMITIVES)))
    elif kind == "enum":
        pair = draw(enum_pair(path))
    elif kind == "fixed":
        pair = tuple({"type": "fixed", "name": f"F_{path}", "size": draw(st.sampled_from([4, 8]))}
                     for _ in range(2))  # type: ignore[assignment]
    elif kind == "record":
        pair = draw(record_pair(path, depth))
    elif kind in ("array", "map"):
        key = "items" if kind == "array" else "values"
        r, w = draw(type_pair(f"{path}_{key}", depth + 1))
        pair = ({"type": kind, key: r}, {"type": kind, key: w})
    else:  # one kind replaced by another
        r, _ = draw(type_pair(f"{path}_r", depth + 1))
        _, w = draw(type_pair(f"{path}_w", depth + 1))
        pair = (r, w)
    if draw(st.integers(0, 3)) == 0:  # a nullable union on one side or both
        return nullable(draw, pair[0]), nullable(draw, pair[1])
    return pair


def avro_verdict(reader: dict[str, Any], writer: dict[str, Any]) -> bool:
    result = ReaderWriterCompatibilityChecker().get_compatibility(
        parse(json.dumps(reader)), parse(json.dumps(writer)))
    return result.compatibility is SchemaCompatibilityType.compatible


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record_pair("top", 0))
def test_govbus_agrees_with_avros_checker(pair: Pair) -> None:
    first, second = pair
    for reader, writer in ((first, second), (second, first)):
        ours = incompatibilities(reader, writer)
        theirs = avro_verdict(reader, writer)
        assert (not ours) == theirs, (f"govbus: {ours or 'compatible'}; avro: "
                                      f"{'compatible' if theirs else 'incompatible'}\n"
                                      f"reader: {json.dumps(reader)}\n"
                                      f"writer: {json.dumps(writer)}")


def test_the_cases_named_above_are_generated_and_agree() -> None:
    """Fixed examples of each case, so that the generator's reach is not all that tests
    them."""
    def rec(*fields: dict[str, Any]) -> dict[str, Any]:
        return {"type": "record", "name": "R", "fields": list(fields)}

    def f(t: Any, name: str = "a", **extra: Any) -> dict[str, Any]:
        return {"name": name, "type": t, **extra}

    enum = {"type": "enum", "name": "E", "symbols": ["A"]}
    cases = [
        (rec(f("long")), rec(f("int")), True), (rec(f("int")), rec(f("long")), False),
        (rec(f("double")), rec(f("float")), True), (rec(f("bytes")), rec(f("string")), True),
        (rec(f("string")), rec(f("bytes")), True), (rec(f("int"), f("string", "b")),
                                                    rec(f("int")), False),
        (rec(f("int"), f("string", "b", default="")), rec(f("int")), True),
        (rec(f("int")), rec(f("int"), f("string", "b")), True),
        (rec(f(["null", "int"])), rec(f("int")), True),
        (rec(f("int")), rec(f(["null", "int"])), False),
        (rec(f(enum)), rec(f(enum | {"symbols": ["A", "B"]})), False),
        (rec(f(enum | {"default": "A"})), rec(f(enum | {"symbols": ["A", "B"]})), True),
        (rec(f({"type": "array", "items": "long"})), rec(f({"type": "array", "items": "int"})),
         True),
        (rec(f({"type": "map", "values": "int"})), rec(f({"type": "map", "values": "long"})),
         False),
        (rec(f(rec(f("long")) | {"name": "N"})), rec(f(rec(f("int")) | {"name": "N"})), True),
    ]
    for reader, writer, compatible in cases:
        assert (not incompatibilities(reader, writer)) is compatible, (reader, writer)
        assert avro_verdict(reader, writer) is compatible, (reader, writer)
