"""Bench workloads: the seeded sample's rows, cycled to any size, a share corrupted on purpose.

The corrupted rows carry a mistyped identifier check character (``govbus.demo.corrupt``, the
adapter bug the demo sends too): valid Avro, rejected by the gate into ``dlq.<agency>``.

Encoded events are signed as ``Publisher`` signs them (:func:`sign`): per agency, in the order
given, one Ed25519 signature per :data:`~govbus.core.signatures.MAX_BATCH` records.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from govbus import sample
from govbus.core.catalogue import Catalogue, Resource
from govbus.core.envelope import make_event
from govbus.core.keyring import private_file
from govbus.core.registry import RegisteredSchema, SchemaRegistry
from govbus.core.serde import frame
from govbus.core.signatures import EVENTS, Signer
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
    #: once signed (:func:`sign`): the record's headers, ``event_id`` then the signature's
    headers: list[tuple[str, bytes]] | None = None

    def record_headers(self) -> list[tuple[str, bytes]]:
        """The headers to produce it with: the signed ones, else ``event_id`` alone."""
        return self.headers or [("event_id", self.event_id.encode())]


class Signers:
    """Each agency's signer, from its private key in ``folder`` (``bench.env`` provisions
    one per agency of the catalogue)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._signers: dict[str, Signer] = {}

    def __call__(self, agency: str) -> Signer:
        if agency not in self._signers:
            self._signers[agency] = Signer.from_file(private_file(self.folder, agency), EVENTS,
                                                     "bench signing key")
        return self._signers[agency]


def agency_of(topic: str) -> str:
    return topic.split(".")[1]  # ingest.<agency>.<resource>


def sign(events: Sequence[Encoded], signer_for: Callable[[str], Signer]) -> None:
    """Sign ``events`` as ``Publisher`` does with what it holds at a flush: each agency's
    records in the order given, :data:`~govbus.core.signatures.MAX_BATCH` per signature;
    sets each one's :attr:`Encoded.headers`."""
    mine: dict[str, list[Encoded]] = defaultdict(list)
    for e in events:
        mine[agency_of(e.topic)].append(e)
    for agency, held in mine.items():
        signed = signer_for(agency).sign([(e.topic, e.key.encode(), e.payload,
                                           e.event_id.encode()) for e in held])
        for e, headers in zip(held, signed, strict=True):
            e.headers = [("event_id", e.event_id.encode()), *headers]


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
