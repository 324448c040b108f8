"""One table entry per entity (``apply_entity``) and value messages bundled per partition:
the reconciler's batching, checked without a broker."""

from __future__ import annotations

import json
from typing import Any

from govbus.core.batching import Acks
from govbus.core.kafka import murmur2_partition
from govbus.stream_apps.feed import Bundles
from govbus.stream_apps.reconcile_rules import ValueChange, apply, apply_entity
from govbus.stream_apps.reconciler import changes, members

ENTITY, OWNER = "company:91360502MA35X0000X", "market_regulation"
REP, ADDR = "company.legal_representative", "company.registered_address"


def change(attribute: str, agency: str, value: str, at: int) -> ValueChange:
    return ValueChange(ENTITY, attribute, agency, OWNER, value, at, f"{agency}-{at}",
                       f"{agency}.register")


def test_apply_entity_equals_apply_per_attribute() -> None:
    history = [[change(REP, OWNER, "李强", 1), change(ADDR, OWNER, "劳动北路1号", 1)],
               [change(REP, "tax", "李刚", 2), change(ADDR, "tax", "劳动北路１号", 2)],
               [change(REP, "tax", "李强", 3)]]
    entity: dict[str, Any] | None = None
    per_key: dict[str, Any] = {}
    emitted_entity, emitted_keys = [], []
    for message in history:
        entity, cases = apply_entity(entity, message, 10)
        emitted_entity += cases
        for c in message:
            per_key[c.attribute], cases = apply(per_key.get(c.attribute), c, 10)
            emitted_keys += cases
    assert entity == per_key
    assert emitted_entity == emitted_keys
    assert [c["status"] for c in emitted_entity] == ["open", "closed"]


def test_apply_entity_returns_what_it_held_when_nothing_changed() -> None:
    held, _ = apply_entity(None, [change(REP, OWNER, "李强", 5)], 10)
    again, cases = apply_entity(held, [change(REP, OWNER, "李强", 5)], 10)  # a replay
    assert again is held and cases == []


class Recorder:
    """Stands in for the producer in this pure test: records what would be produced."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, list[dict[str, Any]]]] = []

    def produce(self, topic: str, key: Any, value: bytes, headers: Any, on_delivery: Any,
                partition: int) -> None:
        self.sent.append((topic, partition, json.loads(value)["bundle"]))


def test_bundles_put_each_entity_where_its_key_hashes_and_cap_their_size() -> None:
    bundles = Bundles(5)
    bodies = [{"entity": f"person:{i % 700}", "n": i} for i in range(1500)]
    for body in bodies:
        bundles.add(str(body["entity"]), body)
    recorder = Recorder()
    acks = Acks("values")
    sent = bundles.send(recorder, acks)  # type: ignore[arg-type]
    assert sent == len(recorder.sent) == acks.expected and bundles.pending == {}
    assert all(len(bundle) <= Bundles.MAX for _, _, bundle in recorder.sent)
    assert sorted(b["n"] for _, _, bundle in recorder.sent for b in bundle) == list(range(1500))
    for _topic, part, bundle in recorder.sent:
        assert {murmur2_partition(b["entity"].encode(), 5) for b in bundle} == {part}
    # an entity's messages keep their order (a later one is applied later)
    seen = [b["n"] for _, _, bundle in recorder.sent for b in bundle if b["entity"] == "person:3"]
    assert seen == sorted(seen)


def test_the_reconciler_reads_bundles_and_single_messages() -> None:
    one = {"entity": ENTITY, "agency": "tax", "resource": "tax.tax_registration",
           "event_id": "e1", "occurred_ms": 5, "values": {REP: "李刚"}, "owners": {REP: OWNER}}
    assert members({"bundle": [one, one]}) == [one, one]
    assert members(one) == [one]
    assert [c.attribute for c in changes(one)] == [REP]
