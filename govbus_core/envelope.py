"""The change-event envelope, shaped after Debezium's (``before``/``after``/``op``/``source``/
``ts_ms``) so agency developers who know Debezium read it at sight.

One envelope schema per resource version: the resource's record schema sits in ``before`` and
``after``. The event id is also sent as the ``event_id`` Kafka header, for de-duplication.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from govbus.core.catalogue import Resource

OPS = ("c", "u", "d", "r")  # create, update, delete, read (snapshot)
OP_NAMES = {"create": "c", "update": "u", "delete": "d", "snapshot": "r"}
BUS_NAMESPACE = "gov.yushui.govbus"


def envelope_schema(resource: Resource) -> dict[str, Any]:
    """The Avro schema of ``resource``'s change events."""
    record = resource.record_schema()
    full_name = record["name"] if "." in record["name"] else (
        f"{record['namespace']}.{record['name']}" if record.get("namespace") else record["name"])
    return {
        "type": "record", "name": f"{record['name']}Envelope",
        "namespace": record.get("namespace", BUS_NAMESPACE),
        "doc": f"Change event of {resource.id}",
        "fields": [
            {"name": "event_id", "type": "string"},
            {"name": "resource", "type": "string", "doc": "agency.resource"},
            {"name": "schema_version", "type": "int"},
            {"name": "op", "type": {"type": "enum", "name": f"{BUS_NAMESPACE}.Op",
                                    "symbols": list(OPS)}},
            {"name": "key", "type": "string", "doc": "Entity key (Art. 12 identifier)"},
            {"name": "before", "type": ["null", record], "default": None},
            {"name": "after", "type": ["null", full_name], "default": None},
            {"name": "source", "type": {
                "type": "record", "name": f"{BUS_NAMESPACE}.Source", "fields": [
                    {"name": "agency", "type": "string"},
                    {"name": "locality", "type": "string",
                     "doc": "Administrative division code (Art. 12)"},
                    {"name": "system", "type": "string", "doc": "api | outbox | demo"},
                    {"name": "table", "type": ["null", "string"], "default": None},
                    {"name": "txid", "type": ["null", "long"], "default": None},
                    {"name": "seq", "type": ["null", "long"], "default": None},
                ]}},
            {"name": "occurred_ms", "type": "long", "doc": "When the change happened, epoch ms"},
            {"name": "ts_ms", "type": "long", "doc": "When it was published, epoch ms"},
        ],
    }


def now_ms() -> int:
    return int(time.time() * 1000)


def make_event(resource: Resource, *, version: int, op: str, record: dict[str, Any] | None,
               before: dict[str, Any] | None = None, agency: str, locality: str,
               system: str = "api", event_id: str | None = None,
               occurred_ms: int | None = None, table: str | None = None,
               txid: int | None = None, seq: int | None = None) -> dict[str, Any]:
    """Build one envelope. ``op`` is c/u/d/r (or create/update/delete/snapshot)."""
    op = OP_NAMES.get(op, op)
    image = before if op == "d" else record
    key_field = resource.key_field or ""
    key = (image or {}).get(key_field)
    stamp = now_ms()
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "resource": resource.id,
        "schema_version": version,
        "op": op,
        "key": key if isinstance(key, str) else "",
        "before": before,
        "after": None if op == "d" else record,
        "source": {"agency": agency, "locality": locality, "system": system, "table": table,
                   "txid": txid, "seq": seq},
        "occurred_ms": occurred_ms if occurred_ms is not None else stamp,
        "ts_ms": stamp,
    }
