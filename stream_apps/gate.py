"""The gate: validates every ingest event, in batches.

Consumes ``^ingest\\..*`` (new ingest topics are picked up by metadata refresh), decides each
record with :func:`govbus.stream_apps.verdict.judge`, forwards accepted records unchanged to
``validated.<agency>.<resource>`` and rejected ones to ``dlq.<agency>`` with their reasons, and
commits its input offsets only after every output is acknowledged: a crash replays, it never
loses. Downstream stages de-duplicate by the ``event_id`` header.

Why not a faust agent: DESIGN measured ~2.2k events/s for a faust agent that sends per event
against ~350k/s for a confluent-kafka batch loop on the same broker; the gate has no state, so
faust's tables and changelogs would buy it nothing.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from confluent_kafka import Consumer, Producer

from govbus.core import metrics
from govbus.core.batching import (
    Acks,
    BatchStage,
    DeliveryCallback,
    commit,
    next_offsets,
    produce,
    serve,
    usable,
)
from govbus.core.config import Settings
from govbus.core.envelope import now_ms
from govbus.core.errors import RegistryError
from govbus.core.event_counts import CountWriter, Judged
from govbus.core.kafka import KnownTopics, consumer_config, producer_config
from govbus.core.registry import RegisteredSchema, SchemaRegistry
from govbus.stream_apps.verdict import Verdict, dlq_record, judge

log = logging.getLogger("govbus.gate")
INGEST_PATTERN = r"^ingest\..*"


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


class Gate(BatchStage):
    """One gate worker; several may run in the same consumer group."""

    component = "gate"

    def __init__(self, settings: Settings, group: str = "govbus-gate",
                 pattern: str = INGEST_PATTERN, batch: int = 1000) -> None:
        super().__init__(Consumer(consumer_config(settings, group)), batch)
        self.settings = settings
        self.lookup = NegativeCache(SchemaRegistry(settings.database_url))
        self.producer = Producer(producer_config(settings, **{"linger.ms": 20}))
        self.consumer.subscribe([pattern])
        self.topics = KnownTopics(settings)
        self.counts = CountWriter(settings.database_url)  # durable, for Art. 14, 28
        self._judged: list[Judged] = []

    def close(self) -> None:
        self.producer.flush(30)
        super().close()
        self.counts.close()

    def process(self, msgs: list[Any]) -> None:
        """Judge, forward, wait for acknowledgements, then commit."""
        acks = Acks("outputs")
        msgs = usable(msgs)
        self._judged = []
        for msg in msgs:
            self._forward(msg, acks)
        acks.wait(self.producer)
        self.counts.write(self._judged)
        observe(self._judged)
        commit(self.consumer, next_offsets(msgs))

    def _forward(self, msg: Any, delivered: Acks) -> None:
        verdict = judge(msg.topic(), msg.value(), self.lookup, now_ms=int(time.time() * 1000),
                        max_skew_ms=self.settings.max_clock_skew_ms)
        self._judged.append(judged(msg, verdict))
        if verdict.accepted:
            self.stats[f"accepted {verdict.resource_id}"] += 1
            produce(self.producer, verdict.output_topic, msg.key(), msg.value(), delivered,
                    msg.headers())
            return
        self.stats[f"rejected {verdict.violations[0].rule}"] += 1
        reject(self.producer, self.topics, msg, verdict, delivered)


def judged(msg: Any, verdict: Verdict) -> Judged:
    """What the durable counts keep of one verdict."""
    return Judged(msg.topic(), msg.partition(), msg.offset(), verdict.agency,
                  verdict.resource_id, "accepted" if verdict.accepted else "rejected",
                  "" if verdict.accepted else verdict.violations[0].rule)


def reject(producer: Producer, topics: KnownTopics, msg: Any, verdict: Verdict,
           on_delivery: DeliveryCallback) -> None:
    """Produce the DLQ record of a rejected ``msg`` to ``dlq.<agency>`` (created if new: an
    unknown agency still gets its DLQ), with the first violated rule as a header."""
    event_id = dict(msg.headers() or []).get("event_id")
    value = dlq_record(verdict, msg.topic(), msg.partition(), msg.offset(), msg.key(),
                       msg.value(),
                       event_id.decode("utf-8", "replace") if isinstance(event_id, bytes)
                       else None,
                       now_ms())
    topics.ensure([verdict.output_topic])
    produce(producer, verdict.output_topic, msg.key(), value, on_delivery,
            [("rule", verdict.violations[0].rule.encode())])


def observe(judged: list[Judged]) -> None:
    """The gate's counters for one batch, summed per label set and incremented once each."""
    events = Counter((j.agency, j.resource_id, j.outcome) for j in judged)
    rejections = Counter((j.agency, j.rule) for j in judged if j.rule)
    for (agency, resource, outcome), n in events.items():
        metrics.GATE_EVENTS.labels(agency, resource, outcome).inc(n)
    for (agency, rule), n in rejections.items():
        metrics.GATE_REJECTIONS.labels(agency, rule).inc(n)


def main() -> None:
    """``python -m govbus.stream_apps.gate``: run one gate until SIGTERM or SIGINT."""
    serve("gate", lambda: Gate(Settings.from_env()), lambda _: f"consuming {INGEST_PATTERN}")


if __name__ == "__main__":
    main()
