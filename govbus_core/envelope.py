"""The change-event envelope, shaped after Debezium's so that agency developers and
Debezium-aware tools know it at sight.

- **Debezium's part.** The record is named ``<namespace>.<resource>.Envelope`` (Debezium's
  transforms act on records whose name ends in ``.Envelope``); ``before`` and ``after`` hold
  the resource's row record; ``op`` is ``c``, ``u``, ``d``, ``r`` (a snapshot read) or ``t`` (a
  truncate, with neither image); ``ts_ms`` is when the bus's producer made the event;
  ``source`` carries Debezium's fields (``version``, ``connector``, ``name``, ``ts_ms`` — when
  the change happened at the source —, ``snapshot``, ``db``, ``sequence``, ``schema``,
  ``table``, ``txId``, ``lsn``) and govbus's own (``agency``, ``locality``, Art. 8, 12);
  ``transaction`` (``id``, ``total_order``, ``data_collection_order``) where the source knows
  its transaction.
- **govbus's part.** ``event_id`` (also the ``event_id`` header, for de-duplication, Art. 19),
  ``resource``, ``schema_version``, ``key`` (the entity's Art. 12 identifier, the Kafka key)
  and ``occurred_ms``, which equals ``source.ts_ms`` and is what the gate's Art. 19 checks
  and the latest-state-wins rules read.

One envelope schema per resource version. :data:`FORMAT` is the envelope's own version: it is
part of each registered version's fingerprint (:func:`govbus.core.registry.fingerprint`), so a
new format registers a new version of every resource, checked compatible with the versions
before it like any other evolution (aliases carry the earlier names: see
docs/integrating.md, "The envelope").
"""

from __future__ import annotations

import time
import uuid
from functools import cache
from typing import Any

from govbus.core.catalogue import Resource

#: the envelope format; 1 was govbus's own shape, 2 is Debezium's
FORMAT = 2
OPS = ("c", "u", "d", "r", "t")  # create, update, delete, read (snapshot), truncate
OP_NAMES = {"create": "c", "update": "u", "delete": "d", "snapshot": "r", "read": "r",
            "truncate": "t"}
#: who made an event: the publisher API or CLI, the outbox trigger relay, logical decoding,
#: the demo; Debezium's ``source.connector``
CONNECTORS = ("api", "outbox", "logical", "demo")
SNAPSHOT = ("true", "last", "false")  # Debezium's source.snapshot: in a snapshot, its last row
BUS_NAMESPACE = "gov.yushui.govbus"
OP_TYPE = f"{BUS_NAMESPACE}.Op"
SOURCE_TYPE = f"{BUS_NAMESPACE}.Source"
TRANSACTION_TYPE = f"{BUS_NAMESPACE}.Transaction"


def _optional(name: str, avro_type: str, doc: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": ["null", avro_type], "default": None, "doc": doc, **extra}


def op_schema() -> dict[str, Any]:
    return {"type": "enum", "name": OP_TYPE, "symbols": list(OPS)}


def source_schema() -> dict[str, Any]:
    """Debezium's ``source`` block with govbus's agency and locality. Every field Debezium's
    shape adds has a default, so envelopes of format 1 read under this one."""
    return {"type": "record", "name": SOURCE_TYPE, "fields": [
        {"name": "version", "type": "string", "default": "", "doc": "govbus's version"},
        {"name": "connector", "type": "string", "default": "api", "aliases": ["system"],
         "doc": "api | outbox | logical | demo"},
        {"name": "name", "type": "string", "default": "",
         "doc": "The source's logical name: govbus.<agency>"},
        {"name": "ts_ms", "type": "long", "default": 0,
         "doc": "When the change happened at the source, epoch ms (= occurred_ms)"},
        {"name": "snapshot", "type": "string", "default": "false",
         "doc": "true | last (the last row of a snapshot) | false"},
        {"name": "db", "type": "string", "default": "", "doc": "Source database, if known"},
        _optional("sequence", "string", "Position within the source (the outbox row id)"),
        _optional("schema", "string", "Source schema"),
        _optional("table", "string", "Source table"),
        _optional("txId", "long", "Source transaction id", aliases=["txid"]),
        _optional("lsn", "long", "PostgreSQL log sequence number of the change",
                  aliases=["seq"]),
        {"name": "agency", "type": "string", "doc": "The provider (Art. 8)"},
        {"name": "locality", "type": "string",
         "doc": "Administrative division code (Art. 12)"},
    ]}


def transaction_schema() -> dict[str, Any]:
    return {"type": "record", "name": TRANSACTION_TYPE, "fields": [
        {"name": "id", "type": "string", "doc": "The source's transaction id"},
        {"name": "total_order", "type": "long",
         "doc": "Position of the event among all events of the transaction, from 1"},
        {"name": "data_collection_order", "type": "long",
         "doc": "Position among the transaction's events of this resource, from 1"},
    ]}


def full_name(record: dict[str, Any]) -> str:
    name = str(record["name"])
    namespace = record.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


def envelope_fields(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The envelope's fields around the row record ``row`` (its first use defines it)."""
    return [
        {"name": "before", "type": ["null", row], "default": None},
        {"name": "after", "type": ["null", full_name(row)], "default": None},
        {"name": "source", "type": source_schema()},
        {"name": "op", "type": op_schema()},
        {"name": "transaction", "type": ["null", transaction_schema()], "default": None},
        {"name": "event_id", "type": "string"},
        {"name": "resource", "type": "string", "doc": "agency.resource"},
        {"name": "schema_version", "type": "int"},
        {"name": "key", "type": "string", "doc": "Entity key (Art. 12 identifier); empty for "
                                                 "a truncate"},
        {"name": "occurred_ms", "type": "long", "doc": "When the change happened, epoch ms "
                                                       "(= source.ts_ms)"},
        # last: an event's digest leaves out its publish time (govbus.stream_apps.event_ids)
        {"name": "ts_ms", "type": "long", "doc": "When the bus's producer made the event, "
                                                 "epoch ms"},
    ]


def namespace_of(resource: Resource) -> str:
    """``<the contract's namespace>.<resource>``: where a resource's envelope is named."""
    return f"{resource.schema.get('namespace') or BUS_NAMESPACE}.{resource.name}"


def envelope_schema(resource: Resource) -> dict[str, Any]:
    """The Avro schema of ``resource``'s change events (:data:`FORMAT`)."""
    row = resource.record_schema()
    legacy = f"{row.get('namespace') or BUS_NAMESPACE}.{row['name']}Envelope"  # format 1
    return {"type": "record", "name": "Envelope", "namespace": namespace_of(resource),
            "aliases": [legacy], "doc": f"Change event of {resource.id}",
            "connect.name": f"{namespace_of(resource)}.Envelope",
            "fields": envelope_fields(row)}


def now_ms() -> int:
    return int(time.time() * 1000)


@cache
def govbus_version() -> str:
    """govbus's version, as ``source.version`` carries it."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed
    try:
        return installed("govbus")
    except PackageNotFoundError:
        return "0+unknown"


def make_event(resource: Resource, *, version: int, op: str, record: dict[str, Any] | None,
               before: dict[str, Any] | None = None, agency: str, locality: str,
               connector: str = "api", event_id: str | None = None,
               occurred_ms: int | None = None, db: str | None = None,
               schema: str | None = None, table: str | None = None,
               tx_id: int | None = None, lsn: int | None = None,
               sequence: str | None = None, snapshot: str = "false",
               transaction: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build one envelope. ``op`` is c/u/d/r/t (or create/update/delete/snapshot/truncate);
    a delete's image is ``before``, a truncate has none and an empty key."""
    op = OP_NAMES.get(op, op)
    image = before if op == "d" else record
    key_field = resource.key_field or ""
    key = (image or {}).get(key_field) if op != "t" else ""
    stamp = now_ms()
    occurred = occurred_ms if occurred_ms is not None else stamp
    return {
        "before": before if op != "t" else None,
        "after": None if op in ("d", "t") else record,
        "source": {"version": govbus_version(), "connector": connector, "name": f"govbus.{agency}",
                   "ts_ms": occurred, "snapshot": snapshot, "db": db or "",
                   "sequence": sequence, "schema": schema, "table": table, "txId": tx_id,
                   "lsn": lsn, "agency": agency, "locality": locality},
        "op": op,
        "transaction": transaction,
        "event_id": event_id or str(uuid.uuid4()),
        "resource": resource.id,
        "schema_version": version,
        "key": key if isinstance(key, str) else "",
        "occurred_ms": occurred,
        "ts_ms": stamp,
    }
