"""The judge step: the gate's decision for each ingest record, and what the hot path does
with it.

:func:`judge` is pure (no I/O, unit-tested without a broker): a record is accepted when it is
signed by a registered, unrevoked key of the topic's provider agency over its value, key,
topic and event id (``auth.*``, Art. 8, 24; :mod:`govbus.core.signatures`), framed (Confluent
wire format), its schema id is registered for the topic's resource, it decodes completely,
and it passes every contract rule (registered provider, Art. 12 identifiers, locality,
time). Anything else is rejected with the violations that explain why
(the bounded DLQ record, :func:`dlq_record`, and the whole payload in quarantine,
:func:`quarantined`), never dropped. The rest of this module is the step's plumbing: the
schema lookup with its negative cache, the DLQ record's production, and the gate's counts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Producer

from govbus.core import metrics, quarantine, topics
from govbus.core.batching import DeliveryCallback, produce
from govbus.core.catalogue import Resource
from govbus.core.envelope import now_ms as clock_ms
from govbus.core.errors import RegistryError, SerdeError, Violation
from govbus.core.event_counts import Judged
from govbus.core.kafka import KnownTopics
from govbus.core.registry import RegisteredSchema, SchemaRegistry
from govbus.core.serde import unframe
from govbus.core.signatures import Verifier
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
        return topics.validated(self.resource_id) if self.accepted else topics.dlq(self.agency)


def split_topic(topic: str) -> tuple[str, str]:
    """``ingest.<agency>.<resource>`` → (agency, resource id); see :func:`parse_topic`."""
    agency, resource_id, _ = parse_topic(topic)
    return agency, resource_id


def parse_topic(topic: str) -> tuple[str, str, str | None]:
    """(agency, resource id, what is wrong with the name or None). Only exactly three
    non-empty parts ``ingest.<agency>.<resource>`` name a resource's ingest topic (Art. 7);
    of any other name the agency is still the second part (``unknown`` when empty: the
    rejection goes to its DLQ) and the resource id the second and third."""
    parts = topic.split(".")
    if len(parts) == 3 and parts[0] == "ingest" and parts[1] and parts[2]:
        return parts[1], topic[7:], None  # the usual case
    agency = parts[1] if len(parts) > 1 and parts[1] else "unknown"
    if parts[0] != "ingest":
        problem = f"topic {topic!r} is not an ingest topic, ingest.<agency>.<resource>"
    elif len(parts) != 3:
        problem = (f"topic {topic!r} has {len(parts)} dot-separated parts; an ingest topic is "
                   "exactly ingest.<agency>.<resource>")
    else:
        problem = (f"topic {topic!r} has an empty {'agency' if not parts[1] else 'resource'} "
                   "part; an ingest topic is ingest.<agency>.<resource>")
    return agency, ".".join(parts[1:3]), problem


AUTH_ARTICLE = "Art. 8, 24"  # one datum, one source; only the entitled speak for it


def judge(topic: str, payload: bytes | None, lookup: Lookup, *, now_ms: int,
          max_skew_ms: int, verifier: Verifier | None = None, key: bytes | None = None,
          headers: Any = None) -> Verdict:
    """Decide one record of ``topic``. Infrastructure errors (database down) propagate.

    ``now_ms`` is the caller's clock (epoch ms) and ``max_skew_ms`` how far ahead of it an
    event's ``occurred_ms`` may be (``GOVBUS_MAX_CLOCK_SKEW_MS``): passed in, so the decision
    stays a function of its arguments. ``verifier`` holds the registered keys the record's
    signature (in ``headers``, over ``payload``, ``key``, ``topic`` and the event id) must
    check against; the hot path always passes one, None judges the contents alone."""
    agency, resource_id, problem = parse_topic(topic)
    verdict = Verdict(agency, resource_id)
    if problem is not None:
        verdict.violations.append(Violation("topic.malformed", "topic", "Art. 7", problem))
        return verdict
    if verifier is not None:
        refused = verifier.check(topic, key, payload, headers, agency)
        if refused is not None:
            verdict.violations.append(Violation(refused.rule, "headers", AUTH_ARTICLE,
                                                refused.message))
            return verdict
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
    # the usual case is settled by the compiled rules
    if not reg.accepts(event, agency, now_ms + max_skew_ms):
        verdict.violations = check_event(reg.resource, event, agency, now_ms=now_ms,
                                         max_skew_ms=max_skew_ms)
    return verdict



#: what a DLQ record keeps of the rejected payload and key, of each reason and of the list of
#: reasons: bounded, so that the record fits every topic whatever the input was (the whole
#: payload is kept in the ``quarantine`` table, where size does not matter)
PAYLOAD_PREFIX_BYTES = 512
KEY_PREFIX_CHARS = 200
TEXT_CHARS = 300
MAX_REASONS = 10
#: no DLQ record is larger than this, whatever the input (checked by tests): each text at most
#: TEXT_CHARS characters of at most 6 bytes in JSON (a control character escaped), well
#: under any topic's ``max.message.bytes``
DLQ_RECORD_MAX_BYTES = 128 * 1024


def _clip(text: str | None, limit: int = TEXT_CHARS) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + f"… ({len(text)} characters)"


def payload_digest(payload: bytes | None) -> str:
    """The hex SHA-256 of a payload: how a DLQ record names its quarantined bytes."""
    return hashlib.sha256(payload or b"").hexdigest()


def dlq_record(verdict: Verdict, topic: str, partition: int, offset: int, key: bytes | None,
               payload: bytes | None, event_id: str | None, now_ms: int) -> bytes:
    """The machine-readable DLQ value: why, where from, and what the payload was, bounded
    (at most :data:`DLQ_RECORD_MAX_BYTES`): its digest, its size and its first
    :data:`PAYLOAD_PREFIX_BYTES` bytes. The whole payload is in the ``quarantine`` table,
    found by ``source`` and ``payload.sha256`` (``govbus quarantine show``)."""
    body = payload or b""
    reasons = [{k: _clip(v) for k, v in r.as_dict().items()}
               for r in verdict.violations[:MAX_REASONS]]
    key_text = key.decode("utf-8", "replace") if key else None
    return json.dumps({
        "reasons": reasons,
        "reasons_total": len(verdict.violations),
        "rule": _clip(verdict.violations[0].rule),
        "resource": _clip(verdict.resource_id),
        "event_id": _clip(event_id or (verdict.event or {}).get("event_id"), KEY_PREFIX_CHARS),
        "source": {"topic": _clip(topic), "partition": partition, "offset": offset},
        "key": _clip(key_text, KEY_PREFIX_CHARS),
        "key_sha256": hashlib.sha256(key).hexdigest() if key else None,
        "payload": {"bytes": len(body), "sha256": payload_digest(body),
                    "prefix_b64": base64.b64encode(body[:PAYLOAD_PREFIX_BYTES]).decode(),
                    "quarantined": True},
        "rejected_ms": now_ms,
    }, ensure_ascii=False).encode()


# --- the step's plumbing --------------------------------------------------------------------

class NegativeCache:
    """Remembers unknown schema ids for a few seconds, so garbage can't hammer the DB."""

    def __init__(self, registry: SchemaRegistry, ttl: float = 5.0) -> None:
        self.registry, self.ttl = registry, ttl
        self._unknown: dict[int, float] = {}

    def __call__(self, schema_id: int) -> RegisteredSchema:
        seen = self._unknown.get(schema_id)
        if seen is not None and time.monotonic() - seen < self.ttl:
            raise RegistryError(f"schema id {schema_id} is not registered")
        try:
            return self.registry.by_id(schema_id)
        except RegistryError:
            self._unknown[schema_id] = time.monotonic()
            raise


def judged(msg: Any, verdict: Verdict) -> Judged:
    """What the durable counts keep of one verdict (Art. 14, 28)."""
    return Judged(msg.topic(), msg.partition(), msg.offset(), verdict.agency,
                  verdict.resource_id, "accepted" if verdict.accepted else "rejected",
                  "" if verdict.accepted else verdict.violations[0].rule)


def _event_id(msg: Any, limit: int | None = None) -> str | None:
    raw = dict(msg.headers() or []).get("event_id")
    return raw.decode("utf-8", "replace")[:limit] if isinstance(raw, bytes) else None


def reject(producer: Producer, topics: KnownTopics, msg: Any, verdict: Verdict,
           on_delivery: DeliveryCallback) -> None:
    """Produce the DLQ record of a rejected ``msg`` to ``dlq.<agency>`` (created if new: an
    unknown agency still gets its DLQ), with the first violated rule as a header."""
    value = dlq_record(verdict, msg.topic(), msg.partition(), msg.offset(), msg.key(),
                       msg.value(), _event_id(msg), clock_ms())
    topics.ensure([verdict.output_topic])
    produce(producer, verdict.output_topic, msg.key(), value, on_delivery,
            [("rule", verdict.violations[0].rule.encode())])


def quarantined(msg: Any, verdict: Verdict) -> quarantine.Row:
    """The quarantine row of a rejected record: its whole payload, for its provider."""
    first = verdict.violations[0]
    return quarantine.rejected(
        verdict.agency, first.rule, str(first)[:1000], msg.topic(), msg.partition(),
        msg.offset(), _event_id(msg, 200), msg.key(), msg.value())


def observe(judged: list[Judged]) -> None:
    """The gate's counters for one batch, summed per label set and incremented once each."""
    events = Counter((j.agency, j.resource_id, j.outcome) for j in judged)
    rejections = Counter((j.agency, j.rule) for j in judged if j.rule)
    for (agency, resource, outcome), n in events.items():
        metrics.GATE_EVENTS.labels(agency, resource, outcome).inc(n)
    for (agency, rule), n in rejections.items():
        metrics.GATE_REJECTIONS.labels(agency, rule).inc(n)
