"""Deliveries in Avro: each grant's projection of a resource version is a schema of its own.

A delivery is the change event's envelope (:mod:`govbus.core.envelope`, Debezium's shape)
around the *projected* record: only the grant's fields (Art. 25), each masked field typed
``["null", "string"]`` so that whatever masking leaves (a string, or null) fits, plus the
delivery's own ``grant_id``, ``masked_fields`` and ``channel`` (``exchange`` or
``backfill``, how the recipient confirms its receipt). Its value record is
``<ns>.Value`` and its envelope ``<ns>.Envelope``, ``<ns>`` being
``gov.yushui.deliver.<recipient>.<agency>.<resource>``.

Each distinct projection schema is registered once under the delivery topic's subject,
``deliver.<recipient>.<resource>-value`` (Confluent's TopicNameStrategy), with a
schema id from the same sequence as the contracts' (``delivery_schemas``, migration 0022),
and the deliveries carry it in the Confluent wire format, so stock Avro tooling reads them
through the Schema Registry API (:mod:`govbus.core.registry_api`). A grant whose
``delivery_format`` is ``json`` gets the same envelope as a JSON document instead, for agencies
without Avro tooling.

Which schema a projection has is pure (:func:`delivery_schema`); registering and caching it
is :class:`DeliverySchemas`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import fastavro
import psycopg2
import psycopg2.extras

from govbus.core import db, topics
from govbus.core.catalogue import Resource
from govbus.core.envelope import envelope_fields
from govbus.core.errors import DatabaseError
from govbus.core.serde import Codec, frame, json_bytes, unframe

FORMATS = ("avro", "json")
DEFAULT_FORMAT = "avro"
CHANNELS = ("exchange", "backfill")
DELIVERY_NAMESPACE = "gov.yushui.deliver"
MASKED_TYPE = ["null", "string"]  # what mask_value leaves of any value: a string or null
Encoder = Callable[[dict[str, Any]], bytes]


def namespace(recipient: str, resource: Resource) -> str:
    return f"{DELIVERY_NAMESPACE}.{recipient}.{resource.agency}.{resource.name}"


def subject(recipient: str, resource_id: str) -> str:
    """The value subject of a delivery topic."""
    return f"{topics.deliver(recipient, resource_id)}-value"


def _named(schema: Any, out: dict[str, dict[str, Any]]) -> None:
    """Every named type defined in a parsed schema, by full name."""
    if isinstance(schema, list):
        for s in schema:
            _named(s, out)
    elif isinstance(schema, dict):
        if schema.get("type") in ("record", "enum", "fixed"):
            out.setdefault(schema["name"], schema)
        for f in schema.get("fields", ()):
            _named(f["type"], out)
        for key in ("items", "values"):
            if key in schema:
                _named(schema[key], out)


def _inline(schema: Any, named: dict[str, dict[str, Any]], defined: set[str]) -> Any:
    """``schema`` with each named type defined at its first use in the projection: a field
    that referenced a type defined by a field the grant leaves out gets the definition."""
    if isinstance(schema, str):
        if schema in named and schema not in defined:
            return _inline(named[schema], named, defined)
        return schema
    if isinstance(schema, list):
        return [_inline(s, named, defined) for s in schema]
    if not isinstance(schema, dict):
        return schema
    kind = schema.get("type")
    if kind in ("record", "enum", "fixed"):
        if schema["name"] in defined:
            return schema["name"]
        defined.add(schema["name"])
    out = {k: v for k, v in schema.items() if not k.startswith("__")}
    if kind == "record":
        out["fields"] = [{**f, "type": _inline(f["type"], named, defined)}
                         for f in schema["fields"]]
    elif isinstance(kind, (dict, list)):
        out["type"] = _inline(kind, named, defined)
    for key in ("items", "values"):
        if key in schema:
            out[key] = _inline(schema[key], named, defined)
    return out


def value_schema(resource: Resource, fields: Iterable[str], masked: Iterable[str],
                 recipient: str) -> dict[str, Any]:
    """The projected record: the grant's ``fields`` this resource version has, in the grant's
    order, with their contract types (named types by their full contract names); each of
    ``masked`` typed :data:`MASKED_TYPE`, default null (Art. 25)."""
    parsed: dict[str, Any] = fastavro.parse_schema(  # type: ignore[assignment]
        resource.record_schema(), _write_hint=False)
    named: dict[str, dict[str, Any]] = {}
    _named(parsed, named)
    by_name = {f["name"]: f for f in parsed["fields"]}
    hidden = frozenset(masked)
    defined: set[str] = set()
    out = []
    for name in fields:
        spec = by_name.get(name)
        if spec is None:
            continue
        if name in hidden:
            out.append({"name": name, "type": list(MASKED_TYPE), "default": None,
                        "doc": "masked (Art. 25)"})
            continue
        kept = {k: v for k, v in spec.items() if k in ("name", "default", "doc", "aliases")}
        out.append({**kept, "type": _inline(spec["type"], named, defined)})
    return {"type": "record", "name": "Value", "namespace": namespace(recipient, resource),
            "fields": out}


def delivery_schema(resource: Resource, fields: Iterable[str], masked: Iterable[str],
                    recipient: str) -> dict[str, Any]:
    """The Avro schema of ``recipient``'s deliveries of ``resource`` (one version of it)
    under a grant of ``fields`` with ``masked`` masked."""
    ns = namespace(recipient, resource)
    return {"type": "record", "name": "Envelope", "namespace": ns,
            "connect.name": f"{ns}.Envelope",
            "doc": f"Change event of {resource.id} delivered to {recipient}",
            "fields": [*envelope_fields(value_schema(resource, fields, masked, recipient)),
                       {"name": "grant_id", "type": "long"},
                       {"name": "masked_fields", "type": {"type": "array", "items": "string"},
                        "default": []},
                       {"name": "channel", "type": "string", "default": "exchange",
                        "doc": "exchange | backfill"}]}


def fingerprint(schema: dict[str, Any]) -> str:
    text = json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class DeliverySchema:
    """One registered projection schema."""

    schema_id: int
    subject: str
    version: int
    schema: dict[str, Any]

    def codec(self) -> Codec:
        return Codec(self.schema)


class Framed:
    """An encoder of one projection: its Avro body in the Confluent wire format, written by
    the projection's schema (:class:`govbus.core.serde.Codec`) after the frame's header."""

    __slots__ = ("codec", "header", "schema_id")

    def __init__(self, registered: DeliverySchema) -> None:
        self.codec, self.schema_id = registered.codec(), registered.schema_id
        self.header = frame(registered.schema_id, b"")

    def __call__(self, value: dict[str, Any]) -> bytes:
        return self.header + self.codec.encode(value)


def register(cur: Any, recipient: str, resource: Resource, resource_version: int,
             schema: dict[str, Any]) -> DeliverySchema:
    """``schema``'s registration under its subject: the existing one, or a new version (the
    subject is locked for the transaction, so concurrent workers agree)."""
    name = subject(recipient, resource.id)
    fp = fingerprint(schema)
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (name,))
    cur.execute("SELECT schema_id, version FROM delivery_schemas WHERE subject = %s AND "
                "fingerprint = %s", (name, fp))
    row = cur.fetchone()
    if row is None:
        cur.execute("""INSERT INTO delivery_schemas (subject, recipient, resource_id,
                           resource_version, version, fingerprint, schema)
                       SELECT %s, %s, %s, %s, coalesce(max(version), 0) + 1, %s, %s
                       FROM delivery_schemas WHERE subject = %s
                       RETURNING schema_id, version""",
                    (name, recipient, resource.id, resource_version, fp,
                     psycopg2.extras.Json(schema), name))
        row = cur.fetchone()
    return DeliverySchema(row[0], name, row[1], schema)


class DeliverySchemas:
    """Each projection's encoder, registered at its first use and then cached (per process,
    thread-safe): the hot path asks once per grant and resource version."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._encoders: dict[tuple[Any, ...], Encoder] = {}
        self._lock = threading.Lock()

    def encoder(self, recipient: str, resource: Resource, resource_version: int,
                fields: tuple[str, ...], masked: tuple[str, ...],
                delivery_format: str = DEFAULT_FORMAT) -> Encoder:
        """How ``recipient``'s deliveries of this projection are written."""
        if delivery_format == "json":
            return json_bytes
        key = (recipient, resource.id, resource_version, fields, masked)
        found = self._encoders.get(key)
        if found is not None:
            return found
        schema = delivery_schema(resource, fields, masked, recipient)
        try:
            with db.transaction(self.dsn) as conn, conn.cursor() as cur:
                registered = register(cur, recipient, resource, resource_version, schema)
        except psycopg2.Error as exc:
            raise DatabaseError(f"cannot register the delivery schema of {recipient}'s "
                                f"{resource.id}: {exc}") from exc
        encoder = Framed(registered)
        with self._lock:
            self._encoders[key] = encoder
        return encoder


def by_id(cur: Any, schema_id: int) -> DeliverySchema | None:
    cur.execute("SELECT schema_id, subject, version, schema FROM delivery_schemas "
                "WHERE schema_id = %s", (schema_id,))
    row = cur.fetchone()
    return DeliverySchema(*row) if row else None


class Decoder:
    """Reads deliveries: framed Avro by the schema id they carry (looked up once through
    ``lookup``), or a JSON document. ``ValueError`` says what is wrong with one."""

    def __init__(self, lookup: Callable[[int], dict[str, Any] | None]) -> None:
        self.lookup = lookup
        self._codecs: dict[int, Codec] = {}

    def __call__(self, payload: bytes | None) -> dict[str, Any]:
        if not payload:
            raise ValueError("empty delivery")
        if payload[:1] != b"\x00":
            try:
                value = json.loads(payload)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ValueError(f"neither framed Avro nor JSON: {exc}") from exc
            if not isinstance(value, dict):
                raise ValueError("not a JSON object")
            return value
        schema_id, body = unframe(payload)
        codec = self._codecs.get(schema_id)
        if codec is None:
            schema = self.lookup(schema_id)
            if schema is None:
                raise ValueError(f"schema id {schema_id} is not a registered delivery schema")
            codec = self._codecs[schema_id] = Codec(schema)
        try:
            return codec.decode(body)
        except Exception as exc:  # SerdeError and whatever fastavro raises on a bad body
            raise ValueError(f"not a valid Avro delivery of schema {schema_id}: {exc}") from exc


def database_lookup(dsn: str) -> Callable[[int], dict[str, Any] | None]:
    """A :class:`Decoder`'s lookup in the bus's database."""
    def lookup(schema_id: int) -> dict[str, Any] | None:
        try:
            with db.transaction(dsn) as conn, conn.cursor() as cur:
                found = by_id(cur, schema_id)
        except psycopg2.Error as exc:
            raise DatabaseError(f"cannot read delivery schema {schema_id}: {exc}") from exc
        return found.schema if found else None
    return lookup

