"""The reconciler's feed: canonical values of every validated event, re-keyed by entity.

Consumes ``^validated\\..*`` in batches, decodes each event with the schema registry and, for
a resource with canonical attributes (Art. 8), produces one small JSON message to
``reconcile.values`` keyed by the canonical entity id (``company:<credit code>``,
``person:<resident id>``)::

    {"entity", "agency", "resource", "event_id", "occurred_ms",
     "values": {attribute: value or null}, "owners": {attribute: source-of-record agency}}

Why a separate stage: the validated topics are keyed by each resource's own key and are not
co-partitioned, so one entity's values from two agencies may sit in different partitions; the
faust reconciler needs all of them in one. Re-keying here, in a batch loop, also keeps the
heavy Avro decoding out of faust's per-event path. Only canonical values travel on, never whole
records (data minimisation). Offsets are committed after the broker acknowledged the output:
a crash replays, the reconciler ignores what it already holds.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections import Counter
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from govbus_core import metrics
from govbus_core.catalogue import Catalogue, Resource, load_catalogue
from govbus_core.config import Settings
from govbus_core.errors import BrokerError, DatabaseError, GovbusError, RegistryError, SerdeError
from govbus_core.kafka import consumer_config, ensure_topics, producer_config
from govbus_core.registry import SchemaRegistry
from govbus_core.serde import unframe

log = logging.getLogger("govbus.reconcile_feed")
VALIDATED_PATTERN = r"^validated\..*"
VALUES_TOPIC = "reconcile.values"
CASES_TOPIC = "reconcile.cases"


def owners(catalogue: Catalogue) -> dict[str, str]:
    """Canonical attribute → its one source-of-record agency (Art. 8)."""
    return {f.canonical: str(res.provider) for res in catalogue for f in res.fields
            if f.canonical and f.source_of_record}


def value_message(resource: Resource, event: dict[str, Any], owner_of: dict[str, str]
                  ) -> tuple[str, dict[str, Any]] | None:
    """(entity id, message) for an event's canonical values; None if it has none."""
    canon = [(f.name, str(f.canonical)) for f in resource.fields
             if f.canonical and f.canonical in owner_of]
    if not canon or not event.get("key"):
        return None
    kind = canon[0][1].split(".", 1)[0]
    entity = f"{kind}:{event['key']}"
    after = event.get("after") if event.get("op") != "d" else None
    values = {attr: (None if after is None or after.get(name) is None else str(after[name]))
              for name, attr in canon}
    return entity, {"entity": entity, "agency": event["source"]["agency"],
                    "resource": resource.id, "event_id": event["event_id"],
                    "occurred_ms": int(event["occurred_ms"]), "values": values,
                    "owners": {attr: owner_of[attr] for attr in values}}


class ReconcileFeed:
    """One feed worker; several may share the consumer group."""

    def __init__(self, settings: Settings, group: str = "govbus-reconcile-feed",
                 pattern: str = VALIDATED_PATTERN, batch: int = 1000) -> None:
        self.settings, self.batch = settings, batch
        self.owner_of = owners(load_catalogue(settings.schemas_dir))
        self.registry = SchemaRegistry(settings.database_url)
        ensure_topics(settings, [VALUES_TOPIC, CASES_TOPIC])
        self.consumer = Consumer(consumer_config(settings, group))
        # murmur2 as Java clients: the same entity lands in the same partition whoever feeds.
        self.producer = Producer(producer_config(settings, partitioner="murmur2_random",
                                                 **{"linger.ms": 20}))
        self.consumer.subscribe([pattern])
        self.stats: Counter[str] = Counter()
        self.stopping = threading.Event()

    def run(self) -> None:
        backoff = 0.5
        try:
            while not self.stopping.is_set():
                msgs = self.consumer.consume(self.batch, 0.5)
                if not msgs:
                    continue
                try:
                    self.process(msgs)
                    backoff = 0.5
                except (DatabaseError, BrokerError) as exc:
                    log.warning("batch not processed, retry in %.1f s: %s", backoff, exc)
                    self._rewind(msgs)
                    self.stopping.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
        finally:
            self.producer.flush(30)
            self.consumer.close()

    def stop(self, *_: Any) -> None:
        self.stopping.set()

    def process(self, msgs: list[Any]) -> None:
        failures: list[str] = []

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        offsets: dict[tuple[str, int], int] = {}
        for msg in msgs:
            if msg.error():
                continue
            offsets[(msg.topic(), msg.partition())] = msg.offset() + 1
            out = self._extract(msg)
            if out is None:
                continue
            entity, body = out
            self._produce(entity, body, delivered)
        remaining = self.producer.flush(60)
        if failures or remaining:
            raise BrokerError(f"{len(failures)} values failed, {remaining} unacknowledged: "
                              f"{failures[:3]}")
        if offsets:
            self.consumer.commit(offsets=[TopicPartition(t, p, o)
                                          for (t, p), o in offsets.items()], asynchronous=False)

    def _extract(self, msg: Any) -> tuple[str, dict[str, Any]] | None:
        try:
            schema_id, body = unframe(msg.value())
            reg = self.registry.by_id(schema_id)
            event = reg.codec.decode(body)
        except (SerdeError, RegistryError) as exc:  # the gate let none through; never block
            log.error("skipping %s[%d]@%d: %s", msg.topic(), msg.partition(), msg.offset(), exc)
            self.stats["undecodable"] += 1
            metrics.RECONCILE_FEED.labels("undecodable").inc()
            return None
        out = value_message(reg.resource, event, self.owner_of)
        self.stats["fed" if out else "no canonical values"] += 1
        metrics.RECONCILE_FEED.labels("fed" if out else "no_canonical_values").inc()
        return out

    def _produce(self, entity: str, body: dict[str, Any], cb: Any) -> None:
        value = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        while True:
            try:
                self.producer.produce(VALUES_TOPIC, key=entity.encode(), value=value,
                                      on_delivery=cb)
                return
            except BufferError:
                self.producer.poll(0.1)

    def _rewind(self, msgs: list[Any]) -> None:
        first: dict[tuple[str, int], int] = {}
        for msg in msgs:
            if not msg.error():
                key = (msg.topic(), msg.partition())
                first[key] = min(first.get(key, msg.offset()), msg.offset())
        for (topic, part), offset in first.items():
            self.consumer.seek(TopicPartition(topic, part, offset))


def main() -> None:
    """``python -m stream_apps.reconcile_feed``: run until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        feed = ReconcileFeed(Settings.from_env())
        metrics.serve()  # process metrics for the scrape target `govbus up` assigns
    except GovbusError as exc:
        log.error("reconcile feed not started: %s", exc)
        raise SystemExit(1) from exc
    signal.signal(signal.SIGTERM, feed.stop)
    signal.signal(signal.SIGINT, feed.stop)
    log.info("reconcile feed started: %s → %s", VALIDATED_PATTERN, VALUES_TOPIC)
    feed.run()
    log.info("reconcile feed stopped: %s", dict(feed.stats))


if __name__ == "__main__":
    main()
