"""Bench workloads: the seeded sample's rows, cycled to any size, a share corrupted on purpose.

The corrupted rows carry a mistyped identifier check character (``govbus.demo.corrupt``, the
adapter bug the demo sends too): valid Avro, rejected by the gate into ``dlq.<agency>``.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from govbus import sample
from govbus.core.catalogue import Catalogue, Resource
from govbus.core.envelope import make_event
from govbus.core.registry import RegisteredSchema, SchemaRegistry
from govbus.core.serde import frame
from govbus.demo import corrupt
from govbus.producers.publisher import DEFAULT_LOCALITY, Change

SAMPLE_SIZE = 3000  # distinct rows generated; larger workloads cycle them


@dataclass
class Item:
    agency: str
    name: str
    change: Change
    bad: bool


def items(n: int, bad_share: float, seed: int = 2018) -> list[Item]:
    """``n`` creates over all six resources in a shuffled order; about ``bad_share`` bad."""
    data = sample.generate(min(n, SAMPLE_SIZE), seed)
    rows = [(rid, row) for rid, rs in data.rows.items() for row in rs]
    rng = random.Random(seed)
    rng.shuffle(rows)
    out = []
    for i in range(n):
        rid, row = rows[i % len(rows)]
        agency, name = rid.split(".")
        bad = rng.random() < bad_share
        out.append(Item(agency, name, Change("c", corrupt(row, rng) if bad else row), bad))
    return out


def grouped(work: list[Item]) -> dict[tuple[str, str, bool], list[Change]]:
    """Changes per (agency, resource, bad), in workload order: one ``publish`` call each."""
    groups: dict[tuple[str, str, bool], list[Change]] = defaultdict(list)
    for item in work:
        groups[(item.agency, item.name, item.bad)].append(item.change)
    return dict(groups)


@dataclass
class Encoded:
    topic: str
    key: str
    payload: bytes
    event_id: str


class Encoder:
    """Frames events the way ``Publisher.send`` does (same envelope, same codec), without
    the publisher's checks and without a producer."""

    def __init__(self, catalogue: Catalogue, registry: SchemaRegistry) -> None:
        self.catalogue, self.registry = catalogue, registry
        self._latest: dict[str, RegisteredSchema] = {}

    def schema(self, resource: Resource) -> RegisteredSchema:
        if resource.id not in self._latest:
            self._latest[resource.id] = self.registry.latest(resource.id)
        return self._latest[resource.id]

    def encode(self, item: Item) -> Encoded:
        resource = self.catalogue.get(item.agency, item.name)
        reg = self.schema(resource)
        event: dict[str, Any] = make_event(resource, version=reg.version, op="c",
                                           record=item.change.record, agency=item.agency,
                                           locality=DEFAULT_LOCALITY)
        return Encoded(resource.ingest_topic, event["key"],
                       frame(reg.schema_id, reg.codec.encode(event)), event["event_id"])
