"""The gate's decision for one ingest record: pure, no I/O, unit-tested without a broker.

A record is accepted when it is framed (Confluent wire format), its schema id is registered
for the topic's resource, it decodes completely, and it passes every contract rule
(registered provider, Art. 12 identifiers, locality). Anything else is rejected with the
violations that explain why (the DLQ record), never dropped.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from govbus.core.catalogue import Resource
from govbus.core.errors import RegistryError, SerdeError, Violation
from govbus.core.registry import RegisteredSchema
from govbus.core.serde import unframe
from govbus.core.validation import check_event

Lookup = Callable[[int], RegisteredSchema]  # raises RegistryError when unknown


@dataclass
class Verdict:
    agency: str
    resource_id: str
    event: dict[str, Any] | None = None
    resource: Resource | None = None  # the schema's resource, once the payload decoded
    schema_id: int | None = None  # the registered schema it decoded with
    violations: list[Violation] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return not self.violations

    @property
    def output_topic(self) -> str:
        return f"validated.{self.resource_id}" if self.accepted else f"dlq.{self.agency}"


def split_topic(topic: str) -> tuple[str, str]:
    """``ingest.<agency>.<resource>`` → (agency, resource id)."""
    parts = topic.split(".")
    agency = parts[1] if len(parts) > 1 and parts[1] else "unknown"
    return agency, ".".join(parts[1:3])


def judge(topic: str, payload: bytes | None, lookup: Lookup) -> Verdict:
    """Decide one record of ``topic``. Infrastructure errors (database down) propagate."""
    agency, resource_id = split_topic(topic)
    verdict = Verdict(agency, resource_id)
    try:
        schema_id, body = unframe(payload)
        try:
            reg = lookup(schema_id)
        except RegistryError:
            verdict.violations.append(Violation(
                "schema.unknown_id", "payload", "Art. 7",
                f"schema id {schema_id} is not registered in the catalogue"))
            return verdict
        if reg.resource_id != resource_id:
            verdict.violations.append(Violation(
                "schema.resource_mismatch", "payload", "Art. 7",
                f"schema id {schema_id} is {reg.resource_id} v{reg.version}, "
                f"but the topic carries {resource_id}"))
            return verdict
        event = reg.codec.decode(body)
    except SerdeError as exc:
        verdict.violations.append(exc.violation)
        return verdict
    verdict.event, verdict.resource, verdict.schema_id = event, reg.resource, schema_id
    if not reg.accepts(event, agency):  # the usual case is settled by the compiled rules
        verdict.violations = check_event(reg.resource, event, agency)
    return verdict



def dlq_record(verdict: Verdict, topic: str, partition: int, offset: int, key: bytes | None,
               payload: bytes | None, event_id: str | None, now_ms: int) -> bytes:
    """The machine-readable DLQ value: why, where from, and the original bytes."""
    return json.dumps({
        "reasons": [v.as_dict() for v in verdict.violations],
        "rule": verdict.violations[0].rule,
        "resource": verdict.resource_id,
        "event_id": event_id or (verdict.event or {}).get("event_id"),
        "source": {"topic": topic, "partition": partition, "offset": offset},
        "key": key.decode("utf-8", "replace") if key else None,
        "payload_b64": base64.b64encode(payload or b"").decode(),
        "rejected_ms": now_ms,
    }, ensure_ascii=False).encode()
