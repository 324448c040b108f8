"""The feed step: the canonical values of every accepted event, re-keyed by entity, for the
reconciler (Art. 8, 19-20).

For a resource with canonical attributes, each accepted event of an entity (a truncate,
op ``t``, names none and feeds nothing) gives one small JSON value message keyed by the
canonical entity id (``company:<credit code>``, ``person:<resident id>``)::

    {"entity", "agency", "resource", "event_id", "occurred_ms",
     "values": {attribute: value or null}, "owners": {attribute: source-of-record agency}}

and a batch's value messages go to ``reconcile.values`` in bundles, one per partition, in the
partition each entity's key hashes to (:class:`Bundles`).

Why re-key: the ingest topics are keyed by each resource's own key and are not
co-partitioned, so one entity's values from two agencies may sit in different partitions; the
reconciler needs all of them in one. Only canonical values travel on, never whole records
(data minimisation, Art. 25). A replayed batch sends its values again; the reconciler absorbs
what it already holds.
"""

from __future__ import annotations

from typing import Any

import orjson
from confluent_kafka import Producer

from govbus.core import topics
from govbus.core.batching import Acks, produce
from govbus.core.catalogue import Catalogue, Resource
from govbus.core.config import Settings
from govbus.core.kafka import ensure_topics, murmur2_partition, partition_count

VALUES_TOPIC, CASES_TOPIC = topics.RECONCILE_VALUES, topics.RECONCILE_CASES


class Bundles:
    """A batch's value messages, bundled per partition of ``reconcile.values``.

    One message per partition and batch, ``{"bundle": [value message, ...]}``, produced to
    the partition a keyed producer would give each entity (:func:`murmur2_partition`), so
    an entity's values still meet in one partition. Why: a message has fixed costs (a record
    on the broker, a fetch, a parse; the faust reconciler this once fed paid about
    0.2 ms of stream machinery per message, as much CPU as the whole hot path); per bundle
    they are paid once for hundreds of values.
    """

    MAX = 500  # value messages per bundle: a few hundred kB, far below a broker's limit

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.pending: dict[int, list[dict[str, Any]]] = {}

    @classmethod
    def on_broker(cls, settings: Settings) -> Bundles:
        """Bundles for ``reconcile.values`` as the broker has it (created if missing)."""
        ensure_topics(settings, [VALUES_TOPIC, CASES_TOPIC])
        return cls(partition_count(settings, VALUES_TOPIC))

    def add(self, entity: str, body: dict[str, Any]) -> None:
        part = murmur2_partition(entity.encode(), self.partitions)
        self.pending.setdefault(part, []).append(body)

    def send(self, producer: Producer, acks: Acks) -> int:
        """Produce the bundles (wait with ``acks``); returns how many messages."""
        sent = 0
        for part, bodies in self.pending.items():
            for i in range(0, len(bodies), self.MAX):
                produce(producer, VALUES_TOPIC, None,
                        orjson.dumps({"bundle": bodies[i:i + self.MAX]}), acks.expect(),
                        partition=part)
                sent += 1
        self.pending = {}
        return sent


def owners(catalogue: Catalogue) -> dict[str, str]:
    """Canonical attribute → its one source-of-record agency (Art. 8)."""
    return {f.canonical: str(res.provider) for res in catalogue for f in res.fields
            if f.canonical and f.source_of_record}


def value_message(resource: Resource, event: dict[str, Any], owner_of: dict[str, str]
                  ) -> tuple[str, dict[str, Any]] | None:
    """(entity id, message) for an event's canonical values; None if it has none."""
    return ValueFeed(resource, owner_of)(event)


class ValueFeed:
    """:func:`value_message` of one resource, with its canonical fields looked up once (the
    hot path keeps one per resource and batch)."""

    __slots__ = ("canon", "kind", "owners", "resource_id")

    def __init__(self, resource: Resource, owner_of: dict[str, str]) -> None:
        self.canon = [(f.name, str(f.canonical)) for f in resource.fields
                      if f.canonical and f.canonical in owner_of]
        self.kind = self.canon[0][1].split(".", 1)[0] if self.canon else ""
        self.owners = {attr: owner_of[attr] for _, attr in self.canon}
        self.resource_id = resource.id

    def __call__(self, event: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        if not self.canon or not event.get("key") or event.get("op") == "t":
            return None  # a truncate states no entity's value: the reconciler hears nothing
        entity = f"{self.kind}:{event['key']}"
        after = event.get("after") if event.get("op") != "d" else None
        values = {attr: (None if after is None or after.get(name) is None else str(after[name]))
                  for name, attr in self.canon}
        return entity, {"entity": entity, "agency": event["source"]["agency"],
                        "resource": self.resource_id, "event_id": event["event_id"],
                        "occurred_ms": int(event["occurred_ms"]), "values": values,
                        "owners": dict(self.owners)}
