"""The publishing library: records in, framed Avro change events out.

``Publisher.publish`` checks each change against its contract first (Avro types, Art. 12
identifiers, locality, registered provider) and refuses the bad ones with their reasons; the
good ones are produced to ``ingest.<agency>.<resource>`` by an idempotent, ``acks=all``
producer, keyed by entity so one entity's changes stay in order.

Every record is signed with the agency's Ed25519 key (:mod:`govbus.core.signatures`, in
headers; the gate refuses what is not, Art. 8, 24): records are held until a batch of
:data:`~govbus.core.signatures.MAX_BATCH` is full or :meth:`Publisher.flush` is called, then
signed with one signature over their hash tree and produced in order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import fastavro
from confluent_kafka import Producer

from govbus.core.batching import produce
from govbus.core.catalogue import Catalogue, Resource, load_catalogue
from govbus.core.config import Settings
from govbus.core.envelope import OP_NAMES, OPS, make_event, now_ms
from govbus.core.errors import Violation
from govbus.core.kafka import producer_config
from govbus.core.keyring import agency_signer
from govbus.core.registry import RegisteredSchema, SchemaRegistry
from govbus.core.serde import frame
from govbus.core.signatures import MAX_BATCH, Signer
from govbus.core.validation import check_event, check_record_types

DEFAULT_LOCALITY = Settings.locality  # GOVBUS_LOCALITY's default: Yushui District, Xinyu


@dataclass
class Change:
    """One row change as an agency hands it to the bus."""

    op: str
    record: dict[str, Any] | None
    before: dict[str, Any] | None = None
    locality: str | None = None
    occurred_ms: int | None = None
    event_id: str | None = None
    #: where it comes from, as the envelope's ``source`` and ``transaction`` say it
    #: (:func:`govbus.core.envelope.make_event`)
    connector: str = "api"
    db: str | None = None
    schema: str | None = None
    table: str | None = None
    tx_id: int | None = None
    lsn: int | None = None
    sequence: str | None = None
    snapshot: str = "false"
    transaction: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, obj: Any) -> Change:
        """A JSON line: either a bare record (a create) or ``{"op", "record"|"after",
        "before", "locality", "occurred_ms", "event_id"}``."""
        if isinstance(obj, dict) and ("record" in obj or "after" in obj or "before" in obj):
            return cls(op=str(obj.get("op", "c")), record=obj.get("record", obj.get("after")),
                       before=obj.get("before"), locality=obj.get("locality"),
                       occurred_ms=obj.get("occurred_ms"), event_id=obj.get("event_id"))
        return cls(op="c", record=obj)


@dataclass
class Refusal:
    index: int
    violations: list[Violation]

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "violations": [v.as_dict() for v in self.violations]}


@dataclass
class PublishReport:
    resource: str
    published: int = 0
    refused: list[Refusal] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"resource": self.resource, "published": self.published,
                "refused": len(self.refused), "failed": len(self.failed),
                "refusals": [r.as_dict() for r in self.refused], "failures": self.failed}


class Publisher:
    """Publishes change events for one or more resources; reuse it, it holds a producer.

    ``signer`` signs every record whatever its agency (an agency's own publisher); without
    one, each agency's signer is found as :func:`govbus.core.keyring.agency_signer` says
    (``key_file``, ``GOVBUS_SIGNING_KEY_FILE``, the embedded runtime's sample keys)."""

    def __init__(self, settings: Settings, catalogue: Catalogue | None = None,
                 registry: SchemaRegistry | None = None, producer: Producer | None = None,
                 signer: Signer | None = None, key_file: str | None = None) -> None:
        self.settings = settings
        self.catalogue = catalogue or load_catalogue(settings.schemas_dir)
        self.registry = registry or SchemaRegistry(settings.database_url)
        self.producer = producer or Producer(producer_config(settings))
        self._schemas: dict[str, tuple[RegisteredSchema, Any]] = {}
        self.signer, self.key_file = signer, key_file
        self._signers: dict[str, Signer] = {}
        # records waiting for their batch's signature, per agency, in the order sent
        self._pending: dict[str, list[tuple[str, Any, bytes, str, Any]]] = {}

    def signer_for(self, agency: str) -> Signer:
        """The signer of ``agency``'s records (ConfigError when it has no key)."""
        if self.signer is not None:
            return self.signer
        if agency not in self._signers:
            self._signers[agency] = agency_signer(self.settings, agency, self.key_file)
        return self._signers[agency]

    def _schema(self, resource: Resource) -> tuple[RegisteredSchema, Any]:
        if resource.id not in self._schemas:
            reg = self.registry.latest(resource.id)
            parsed = fastavro.parse_schema(resource.record_schema())
            self._schemas[resource.id] = (reg, parsed)
        return self._schemas[resource.id]

    def prepare(self, agency: str, resource: Resource, change: Change
                ) -> tuple[dict[str, Any] | None, list[Violation]]:
        """The envelope for ``change``, or the violations that refuse it."""
        reg, parsed = self._schema(resource)
        op = OP_NAMES.get(change.op, change.op)
        if op not in OPS:
            return None, [Violation("envelope.op", "op", "Art. 7",
                                    f"{change.op!r} is not one of create, update, delete, "
                                    "snapshot, truncate (c, u, d, r, t)")]
        problems: list[Violation] = []
        for part, row in (("before", change.before), ("record", change.record)):
            if row is not None:
                problems += [Violation(v.rule, f"{part}.{v.field}", v.article, v.message)
                             for v in check_record_types(resource, parsed, row)]
        if problems:
            return None, problems
        event = make_event(resource, version=reg.version, op=op, record=change.record,
                           before=change.before, agency=agency,
                           locality=change.locality or self.settings.locality,
                           connector=change.connector,
                           event_id=change.event_id, occurred_ms=change.occurred_ms,
                           db=change.db, schema=change.schema, table=change.table,
                           tx_id=change.tx_id, lsn=change.lsn, sequence=change.sequence,
                           snapshot=change.snapshot, transaction=change.transaction)
        # the gate's clock rule too: a change dated ahead of the clock is refused here with the
        # line it came from, not later in the DLQ (Art. 19)
        return event, check_event(resource, event, agency, now_ms=now_ms(),
                                  max_skew_ms=self.settings.max_clock_skew_ms)

    def send(self, resource: Resource, event: dict[str, Any], on_delivery: Any = None) -> None:
        """Frame and produce one prepared event (no checks); call ``flush`` afterwards."""
        payload = self.encode(resource, event)
        self.produce_raw(resource.ingest_topic, event["key"], payload, event["event_id"],
                         on_delivery)

    def encode(self, resource: Resource, event: dict[str, Any]) -> bytes:
        """A prepared event as the broker carries it: Avro in the Confluent wire format."""
        reg, _ = self._schema(resource)
        return frame(reg.schema_id, reg.codec.encode(event))

    def produce_raw(self, topic: str, key: str | None, payload: bytes, event_id: str,
                    on_delivery: Any = None) -> None:
        """Queue one framed record of ``topic`` (``ingest.<agency>.<resource>``) for signing by
        its agency; produced when its batch is full, or by :meth:`flush`."""
        agency = topic.split(".")[1] if topic.count(".") >= 2 else topic
        self.signer_for(agency)  # no key: refused now, before anything is held
        pending = self._pending.setdefault(agency, [])
        pending.append((topic, key, payload, event_id, on_delivery))
        if len(pending) >= MAX_BATCH:
            self._seal(agency)

    def _seal(self, agency: str) -> None:
        """Sign ``agency``'s held records as one batch and produce them, in order."""
        held = self._pending.pop(agency, [])
        if not held:
            return
        records = [(t, None if k is None else k.encode(), p, e.encode())
                   for t, k, p, e, _ in held]
        for (topic, key, payload, event_id, on_delivery), headers in zip(
                held, self.signer_for(agency).sign(records), strict=True):
            produce(self.producer, topic, key, payload, on_delivery,
                    [("event_id", event_id.encode()), *headers])
        self.producer.poll(0)

    def flush(self, timeout: float = 60.0) -> int:
        """Sign and produce what is held, wait for acknowledgements; returns how many remain
        unacknowledged."""
        for agency in list(self._pending):
            self._seal(agency)
        return self.producer.flush(timeout)

    def publish(self, agency: str, resource_name: str, changes: Iterable[Change],
                validate: bool = True) -> PublishReport:
        """Check, encode and produce ``changes``; return what was published and refused.

        ``validate=False`` skips the Art. 12 checks (never the Avro types): for testing the
        gate with events a faulty adapter could send."""
        resource = self.catalogue.get(agency, resource_name)
        report = PublishReport(resource=resource.id)

        def delivered(err: Any, msg: Any) -> None:
            if err is None:
                report.published += 1
            else:
                report.failed.append(f"{msg.topic()}: {err}")

        for index, change in enumerate(changes):
            event, violations = self.prepare(agency, resource, change)
            if event is None or (violations and validate):
                report.refused.append(Refusal(index, violations))
                continue
            self.send(resource, event, delivered)
            report.event_ids.append(event["event_id"])
        left = self.flush()
        if left:
            report.failed.append(f"{left} events unacknowledged by the broker after 60 s")
        return report

    def close(self, timeout: float = 30.0) -> None:
        """Produce what is held, wait for acknowledgements, then release the producer."""
        self.flush(timeout)
        self.producer = None  # type: ignore[assignment]  # librdkafka handle freed now
