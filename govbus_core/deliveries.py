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


IMAGES = ("before", "after")
#: the envelope's fields between the images and the delivery's own: the same for every
#: delivery of one event, whatever its grant
SHARED = ("source", "op", "transaction", "event_id", "resource", "schema_version", "key",
          "occurred_ms", "ts_ms")
OWN = ("grant_id", "masked_fields", "channel")


def _part(name: str, fields: list[dict[str, Any]]) -> Codec:
    return Codec({"type": "record", "name": name, "fields": fields})


#: the shared fields' encoding, by one schema for every resource (their types are the bus's)
_SHARED = _part(f"{DELIVERY_NAMESPACE}.Shared", envelope_fields(
    {"type": "record", "name": f"{DELIVERY_NAMESPACE}.Unused", "fields": []})[2:])


class _LastShared(threading.local):
    """The shared fields of the latest delivery written in this thread, and their encoding."""

    fields: tuple[Any, ...] = ()
    body = b""


_last = _LastShared()


def _shared(value: dict[str, Any]) -> bytes:
    """The shared fields' encoding, written once per event: an event's deliveries are written
    one after another and their values hold the very objects of the event's envelope
    (:mod:`govbus.core.routing`), so the immutable fields are compared by identity (the same
    object is the same value) and ``source`` and ``transaction`` by equality with copies of
    those remembered (a dict may have changed since); anything else is written anew."""
    held = _last.fields
    if held and value["event_id"] is held[3] and value["op"] is held[1] \
            and value["resource"] is held[4] and value["schema_version"] is held[5] \
            and value["key"] is held[6] and value["occurred_ms"] is held[7] \
            and value["ts_ms"] is held[8] and value["source"] == held[0] \
            and value["transaction"] == held[2]:
        return _last.body
    source, transaction = value["source"], value["transaction"]
    _last.fields = (dict(source) if isinstance(source, dict) else source, value["op"],
                    dict(transaction) if isinstance(transaction, dict) else transaction,
                    *[value[name] for name in SHARED[3:]])
    _last.body = body = _SHARED.encode(value)
    return body


class Framed:
    """An encoder of one projection: its Avro body in the Confluent wire format.

    Avro writes a record as its fields' encodings one after another (the specification,
    "Binary Encoding"), so a delivery is written in three parts: the projected images, by
    this projection's schema; the fields every delivery of the event shares
    (:data:`SHARED`), once per event; the grant's own (:data:`OWN`), once per grant and
    channel. The bytes are fastavro's encoding of the whole schema
    (tests/unit/core/test_deliveries.py checks it on generated events); a schema not laid out
    as :func:`delivery_schema` lays it out is written whole."""

    __slots__ = ("codec", "header", "schema_id", "images", "own", "_own")

    def __init__(self, registered: DeliverySchema) -> None:
        self.codec, self.schema_id = registered.codec(), registered.schema_id
        self.header = frame(registered.schema_id, b"")
        fields = registered.schema["fields"]
        self.images: Codec | None = None
        self._own: dict[tuple[Any, ...], bytes] = {}
        if tuple(f["name"] for f in fields) == (*IMAGES, *SHARED, *OWN):
            ns = registered.schema.get("namespace", DELIVERY_NAMESPACE)
            self.images = _part(f"{ns}.Images", fields[:2])
            self.own = _part(f"{ns}.Own", fields[-3:])

    def __call__(self, value: dict[str, Any]) -> bytes:
        if self.images is None:
            return self.header + self.codec.encode(value)
        key = (value["grant_id"], tuple(value["masked_fields"]), value["channel"])
        own = self._own.get(key)
        if own is None:
            own = self._own[key] = self.own.encode(dict(zip(OWN, key, strict=True)))
        return self.header + self.images.encode(value) + _shared(value) + own


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

