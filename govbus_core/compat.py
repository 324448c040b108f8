"""Avro schema compatibility, as Confluent Schema Registry checks it, and its levels.

Art. 13: agencies apply for changes to their catalogue entries and the information center
confirms them; a change must not strand the data already on the bus. The rules are those of
Avro schema resolution (Avro specification, "Schema Resolution"): :func:`incompatibilities`
says why a *reader* schema cannot read what a *writer* schema wrote. Logical types are
compared by their underlying type; ``govbus`` attributes are ignored.

A resource's compatibility level is one of Confluent's (:data:`LEVELS`), named by its
contract's ``govbus.compatibility`` attribute (:func:`parse_level`; :data:`DEFAULT_LEVEL`
without one). The level picks the registered versions a new schema is checked against
(:func:`against`: every one when transitive, else the newest, none for NONE) and the direction
(:func:`level_incompatibilities`: BACKWARD, the new schema reads each of them; FORWARD, each of
them reads the new schema; FULL, both). The Schema Registry API and the catalogue's proposals
both decide by these functions.

Apache Avro's own checker (``avro.compatibility.ReaderWriterCompatibilityChecker``) gives the
same verdict on records, primitives and their promotions, unions, enums, fixed, arrays and
maps (tests/unit/core/test_compat_crosscheck.py). Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from govbus.core.errors import GovbusError

BACKWARD, FORWARD, FULL, NONE = "BACKWARD", "FORWARD", "FULL", "NONE"
BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
LEVELS = (BACKWARD, BACKWARD_TRANSITIVE, FORWARD, "FORWARD_TRANSITIVE", FULL,
          "FULL_TRANSITIVE", NONE)
#: Art. 13: data of every registered version may still be on a topic, so a new contract
#: must read them all
DEFAULT_LEVEL = BACKWARD_TRANSITIVE
LEVEL_ATTRIBUTE = "compatibility"  # in the contract's ``govbus`` object

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED = frozenset({"record", "error", "enum", "fixed"})
COMPLEX = NAMED | {"array", "map"}
# Avro promotions: the writer type on the left may be read as any type on the right.
PROMOTIONS = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}


def _fullname(name: str, namespace: str | None, enclosing: str) -> str:
    """Full name of a named type: a dotted name is already full, else its namespace applies."""
    if "." in name:
        return name
    ns = enclosing if namespace is None else namespace
    return f"{ns}.{name}" if ns else name


def _short(fullname: str) -> str:
    return fullname.rpartition(".")[2]


class _Names:
    """One schema with every named type registered by full name and references made full."""

    def __init__(self, schema: Any) -> None:
        self.types: dict[str, dict[str, Any]] = {}
        self.root = self._norm(schema, "")

    def _ref(self, name: str, ns: str) -> str:
        full = _fullname(name, None, ns)
        # A bare name defined in the null namespace stays reachable from inside a namespace.
        return name if full not in self.types and name in self.types else full

    def _norm(self, node: Any, ns: str) -> Any:
        if isinstance(node, list):
            return [self._norm(n, ns) for n in node]
        if isinstance(node, str):
            return node if node in PRIMITIVES else self._ref(node, ns)
        if not isinstance(node, dict):
            return node
        kind = node.get("type")
        if isinstance(kind, (dict, list)):
            return self._norm(kind, ns)
        if kind in PRIMITIVES:
            return kind  # a logical type is read as its underlying type
        if kind not in COMPLEX:
            return self._ref(str(kind), ns)
        out = dict(node)
        if kind in NAMED:
            full = _fullname(str(node.get("name", "")), node.get("namespace"), ns)
            ns = full.rpartition(".")[0]
            out["name"] = full
            out["aliases"] = [_fullname(str(a), None, ns) for a in node.get("aliases") or []]
            self.types[full] = out  # registered before its fields, so recursion resolves
        if kind in ("record", "error"):
            out["fields"] = [{**f, "type": self._norm(f.get("type"), ns)}
                             for f in node.get("fields") or [] if isinstance(f, dict)]
        for key in ("items", "values"):
            if key in node:
                out[key] = self._norm(node[key], ns)
        return out


class _Resolver:
    """Walks a reader and a writer schema side by side, collecting reasons for failure."""

    def __init__(self, reader: Any, writer: Any) -> None:
        self.reader, self.writer = _Names(reader), _Names(writer)
        self.seen: set[tuple[str, str]] = set()  # record pairs being checked

    def run(self) -> list[str]:
        return self.check(self.reader.root, self.writer.root, "")

    def check(self, r: Any, w: Any, path: str) -> list[str]:
        """Why data of writer type ``w`` at ``path`` cannot be read as reader type ``r``."""
        for side, names, node in (("reader", self.reader, r), ("writer", self.writer, w)):
            if isinstance(node, str) and node not in PRIMITIVES and node not in names.types:
                return [f"{_where(path)}: unknown {side} type name '{node}'"]
        r, w = _deref(self.reader, r), _deref(self.writer, w)
        if isinstance(w, list):  # every branch the writer may have used must be readable
            return [reason for branch in w for reason in self.check(r, branch, path)]
        if isinstance(r, list):  # a non-union writer must fit some reader branch
            reasons = [self.check(branch, w, path) for branch in r]
            if not all(reasons):
                return []
            # The branch of the same kind and name is the one the change broke: say why.
            same = [rs for b, rs in zip(r, reasons, strict=True)
                    if _label(_deref(self.reader, b)) == _label(w)]
            if same:
                return same[0]
            labels = ", ".join(_label(b) for b in r)
            return [f"{_where(path)}: type changed from {_label(w)} to union [{labels}], "
                    f"none of whose branches can read it"]
        rk, wk = _kind(r), _kind(w)
        if rk != wk:
            if rk in PROMOTIONS.get(wk, ()):
                return []
            return [f"{_where(path)}: type changed from {_label(w)} to {_label(r)}"]
        handler = {"record": self._record, "enum": self._enum, "fixed": self._fixed,
                   "array": self._array, "map": self._map}.get(rk)
        return handler(r, w, path) if handler else []

    def _record(self, r: dict[str, Any], w: dict[str, Any], path: str) -> list[str]:
        pair = (r["name"], w["name"])
        if pair in self.seen:  # a recursive type: this pair is already being checked above
            return []
        self.seen.add(pair)
        try:
            return _name_mismatch(r, w, path) + self._fields(r, w, path)
        finally:
            self.seen.discard(pair)  # a later reference elsewhere is checked at its own path

    def _fields(self, r: dict[str, Any], w: dict[str, Any], path: str) -> list[str]:
        out: list[str] = []
        written = {f.get("name"): f for f in w.get("fields", [])}
        for rf in r.get("fields", []):
            sub = f"{path}.{rf.get('name')}" if path else str(rf.get("name"))
            wf = next((written[n] for n in [rf.get("name"), *(rf.get("aliases") or [])]
                       if n in written), None)
            if wf is not None:
                out += self.check(rf.get("type"), wf.get("type"), sub)
            elif "default" not in rf:  # the old data has no value for it and none is given
                out.append(f"{_where(sub)}: added without a default, so data written "
                           f"without it cannot be read")
        return out

    def _enum(self, r: dict[str, Any], w: dict[str, Any], path: str) -> list[str]:
        out = _name_mismatch(r, w, path)
        unknown = [s for s in w.get("symbols", []) if s not in r.get("symbols", [])]
        if unknown and "default" not in r:
            out.append(f"{_where(path)}: enum {_short(r['name'])} lacks written symbol(s) "
                       f"{', '.join(unknown)} and has no default")
        return out

    def _fixed(self, r: dict[str, Any], w: dict[str, Any], path: str) -> list[str]:
        out = _name_mismatch(r, w, path)
        if r.get("size") != w.get("size"):
            out.append(f"{_where(path)}: fixed size changed from {w.get('size')} "
                       f"to {r.get('size')}")
        return out

    def _array(self, r: dict[str, Any], w: dict[str, Any], path: str) -> list[str]:
        return self.check(r.get("items"), w.get("items"), f"{path}[]")

    def _map(self, r: dict[str, Any], w: dict[str, Any], path: str) -> list[str]:
        return self.check(r.get("values"), w.get("values"), f"{path}{{}}")


def _deref(names: _Names, node: Any) -> Any:
    return names.types.get(node, node) if isinstance(node, str) else node


def _kind(node: Any) -> str:
    if isinstance(node, dict):
        kind = str(node.get("type"))
        return "record" if kind == "error" else kind
    return str(node)


def _label(node: Any) -> str:
    if isinstance(node, dict):
        return _short(node["name"]) if "name" in node else _kind(node)
    return "union" if isinstance(node, list) else str(node)


def _where(path: str) -> str:
    return f"field '{path}'" if path else "schema"


def _name_mismatch(r: dict[str, Any], w: dict[str, Any], path: str) -> list[str]:
    """Named types resolve by unqualified name or a reader alias (as Avro's Java checker)."""
    if _short(w["name"]) in {_short(n) for n in [r["name"], *r.get("aliases", [])]}:
        return []
    return [f"{_where(path)}: {_kind(r)} name changed from {_short(w['name'])} "
            f"to {_short(r['name'])}"]


def incompatibilities(reader: dict[str, Any], writer: dict[str, Any]) -> list[str]:
    """Reasons why data written with ``writer`` cannot be read with ``reader``; [] if it can."""
    return _Resolver(reader, writer).run()


def check_backward_transitive(new: dict[str, Any], registered: list[dict[str, Any]]) -> list[str]:
    """Reasons why ``new`` cannot read some registered version (1-based, oldest first).

    Transitive, because data of every registered version may still be on a topic (Art. 13).
    """
    return level_incompatibilities(BACKWARD_TRANSITIVE, new, list(enumerate(registered, 1)))


class InvalidLevel(GovbusError):
    """A contract's ``govbus.compatibility`` is not one of :data:`LEVELS`."""

    rule = "schema.compatibility_level"
    article = "Art. 13"


def parse_level(raw: object) -> str:
    """The level a ``govbus.compatibility`` value names (any case); :data:`DEFAULT_LEVEL`
    for None; InvalidLevel, naming the attribute and the valid values, for anything else."""
    if raw is None:
        return DEFAULT_LEVEL
    level = str(raw).upper()
    if level not in LEVELS:
        raise InvalidLevel(f"govbus.{LEVEL_ATTRIBUTE} {raw!r} is not a compatibility level; "
                           f"one of {', '.join(LEVELS)}")
    return level


def level_of(meta: dict[str, Any] | None) -> str:
    """A resource's level from its catalogue entry (the ``govbus`` object)."""
    return parse_level((meta or {}).get(LEVEL_ATTRIBUTE))


V = TypeVar("V")


def against(level: str, versions: Sequence[V]) -> list[V]:
    """What a new schema is checked against at ``level``, of ``versions`` (oldest first):
    every one when transitive, else the newest; none for NONE."""
    if level == NONE:
        return []
    return list(versions) if level.endswith("_TRANSITIVE") else list(versions[-1:])


def level_incompatibilities(level: str, new: dict[str, Any],
                            versions: Sequence[tuple[int, dict[str, Any]]]) -> list[str]:
    """Why ``new`` breaks ``level`` against each of ``versions`` ((number, schema) pairs,
    oldest first; :func:`against` picks which), each reason naming its version; [] if not.

    BACKWARD: ``new`` reads what a version wrote; FORWARD: a version reads what ``new``
    writes; FULL: both.
    """
    out = []
    for number, old in versions:
        if level.startswith((BACKWARD, FULL)):
            out += [f"version {number}: {r}" for r in incompatibilities(new, old)]
        if level.startswith((FORWARD, FULL)):
            out += [f"version {number} cannot read the new schema: {r}"
                    for r in incompatibilities(old, new)]
    return out


def check_level(level: str, new: dict[str, Any], registered: list[dict[str, Any]]) -> list[str]:
    """Why ``new`` breaks ``level`` against the ``registered`` schemas (oldest first, version
    *n* the *n*-th); [] if it does not."""
    return level_incompatibilities(level, new, against(level, list(enumerate(registered, 1))))
