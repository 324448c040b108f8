"""The gate: validates every ingest event, in batches.

Consumes ``^ingest\\..*`` (new ingest topics are picked up by metadata refresh), decides each
record with :func:`stream_apps.verdict.judge`, forwards accepted records unchanged to
``validated.<agency>.<resource>`` and rejected ones to ``dlq.<agency>`` with their reasons, and
commits its input offsets only after every output is acknowledged: a crash replays, it never
loses. Downstream stages de-duplicate by the ``event_id`` header.

Why not a faust agent: DESIGN measured ~2.2k events/s for a faust agent that sends per event
against ~350k/s for a confluent-kafka batch loop on the same broker; the gate has no state, so
faust's tables and changelogs would buy it nothing.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from govbus_core import metrics
from govbus_core.config import Settings
from govbus_core.envelope import now_ms
from govbus_core.errors import BrokerError, DatabaseError, RegistryError
from govbus_core.event_counts import CountWriter, Judged
from govbus_core.kafka import consumer_config, ensure_topics, producer_config, take
from govbus_core.registry import RegisteredSchema, SchemaRegistry
from stream_apps.verdict import dlq_record, judge

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


class Gate:
    """One gate worker; several may run in the same consumer group."""

    def __init__(self, settings: Settings, group: str = "govbus-gate",
                 pattern: str = INGEST_PATTERN, batch: int = 1000) -> None:
        self.settings, self.batch = settings, batch
        self.lookup = NegativeCache(SchemaRegistry(settings.database_url))
        self.consumer = Consumer(consumer_config(settings, group))
        self.producer = Producer(producer_config(settings, **{"linger.ms": 20}))
        self.consumer.subscribe([pattern])
        self.stats: Counter[str] = Counter()
        self.stopping = threading.Event()
        self._dlq_topics: set[str] = set()
        self.counts = CountWriter(settings.database_url)  # durable, for Art. 14, 28
        self._judged: list[Judged] = []

    def run(self) -> None:
        """Process batches until :meth:`stop`; then commit and close."""
        backoff = 0.5
        try:
            while not self.stopping.is_set():
                msgs = take(self.consumer, self.batch, 0.5)
                if not msgs:
                    continue
                try:
                    self.process(msgs)
                    backoff = 0.5
                except (DatabaseError, BrokerError) as exc:
                    log.warning("batch not processed, will retry in %.1f s: %s", backoff, exc)
                    metrics.BATCH_RETRIES.labels("gate").inc()
                    self._rewind(msgs)
                    self.stopping.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
        finally:
            self.producer.flush(30)
            self.consumer.close()
            self.counts.close()

    def stop(self, *_: Any) -> None:
        self.stopping.set()

    def process(self, msgs: list[Any]) -> None:
        """Judge, forward, wait for acknowledgements, then commit."""
        failures: list[str] = []

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        offsets: dict[tuple[str, int], int] = {}
        self._judged = []
        for msg in msgs:
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", msg.error())
                continue
            self._forward(msg, delivered)
            offsets[(msg.topic(), msg.partition())] = msg.offset() + 1
        remaining = self.producer.flush(60)
        if failures or remaining:
            raise BrokerError(f"{len(failures)} outputs failed, {remaining} unacknowledged: "
                              f"{failures[:3]}")
        self.counts.write(self._judged)
        for j in self._judged:
            metrics.GATE_EVENTS.labels(j.agency, j.resource_id, j.outcome).inc()
            if j.rule:
                metrics.GATE_REJECTIONS.labels(j.agency, j.rule).inc()
        if offsets:
            self.consumer.commit(offsets=[TopicPartition(t, p, o)
                                          for (t, p), o in offsets.items()],
                                 asynchronous=False)

    def _forward(self, msg: Any, delivered: Any) -> None:
        topic, payload = msg.topic(), msg.value()
        headers = dict(msg.headers() or [])
        event_id = headers.get("event_id")
        verdict = judge(topic, payload, self.lookup)
        self._judged.append(Judged(topic, msg.partition(), msg.offset(), verdict.agency,
                                   verdict.resource_id,
                                   "accepted" if verdict.accepted else "rejected",
                                   "" if verdict.accepted else verdict.violations[0].rule))
        if verdict.accepted:
            self.stats[f"accepted {verdict.resource_id}"] += 1
            self._produce(verdict.output_topic, msg.key(), payload, msg.headers(), delivered)
            return
        self.stats[f"rejected {verdict.violations[0].rule}"] += 1
        value = dlq_record(verdict, topic, msg.partition(), msg.offset(), msg.key(), payload,
                           event_id.decode() if isinstance(event_id, bytes) else None, now_ms())
        dlq = verdict.output_topic
        if dlq not in self._dlq_topics:  # an unknown agency still gets its DLQ
            ensure_topics(self.settings, [dlq])
            self._dlq_topics.add(dlq)
        self._produce(dlq, msg.key(), value,
                      [("rule", verdict.violations[0].rule.encode())], delivered)

    def _produce(self, topic: str, key: Any, value: Any, headers: Any, cb: Any) -> None:
        while True:
            try:
                self.producer.produce(topic, key=key, value=value, headers=headers,
                                      on_delivery=cb)
                return
            except BufferError:
                self.producer.poll(0.1)

    def _rewind(self, msgs: list[Any]) -> None:
        """Seek back to the first record of the failed batch, per partition."""
        first: dict[tuple[str, int], int] = {}
        for msg in msgs:
            offset = msg.offset()
            if not msg.error() and offset is not None:
                key = (msg.topic(), msg.partition())
                first[key] = min(first.get(key, offset), offset)
        for (topic, part), offset in first.items():
            self.consumer.seek(TopicPartition(topic, part, offset))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s "
                        "%(message)s")
    gate = Gate(Settings.from_env())
    metrics.serve()
    signal.signal(signal.SIGTERM, gate.stop)
    signal.signal(signal.SIGINT, gate.stop)
    log.info("gate started, consuming %s", INGEST_PATTERN)
    gate.run()
    log.info("gate stopped: %s", dict(gate.stats))


if __name__ == "__main__":
    main()
