"""The bad-input corpus and a seeded fuzz burst through the real gate and the real publish API:
every corpus entry ends in ``dlq.<agency>`` with exactly its rule, every fuzzed
payload is decided (DLQ or validated, once), the gate never stops, and the valid events
interleaved with the bad ones pass through byte for byte.
"""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections.abc import Iterator

import pytest

from govbus.core.catalogue import CatalogueError
from govbus.core.config import Settings
from govbus.core.kafka import ensure_topics
from govbus.core.registry import SchemaRegistry
from govbus.producers.publisher import Change, Publisher
from govbus.stream_apps.hotpath import HotPath
from tests.corpus.bad_inputs import (
    GATE_CORPUS,
    PERSON,
    POP,
    POP_TOPIC,
    PUBLISH_CORPUS,
    PUBLISH_ERRORS,
    valid_payload,
)
from tests.integration.helpers import SignedProducer, TopicReader, wait_until

FUZZ = 80


@pytest.fixture
def gate(settings: Settings) -> Iterator[tuple[HotPath, threading.Thread]]:
    topics = {case.build(SchemaRegistry(settings.database_url).latest)[0]
              for case in GATE_CORPUS}
    ensure_topics(settings, sorted(topics))  # explicit partitions, known before subscribing
    worker = HotPath(settings, group=f"test-gate-{uuid.uuid4().hex[:8]}", batch=20)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    yield worker, thread
    worker.stop()
    thread.join(30)


def test_corpus_and_fuzz_through_the_gate(settings: Settings,
                                          gate: tuple[HotPath, threading.Thread]) -> None:
    worker, thread = gate
    registry = SchemaRegistry(settings.database_url)
    schema_for = registry.latest
    rng = random.Random(6)  # seeded: a failure replays
    raw = SignedProducer(settings)
    expected: dict[str, str] = {}
    good: dict[str, bytes] = {}
    for i, case in enumerate(GATE_CORPUS):
        payload = valid_payload(schema_for)
        good[f"good:{i}"] = payload
        raw.produce(POP_TOPIC, key=f"good:{i}", value=payload)
        topic, bad = case.build(schema_for)
        raw.produce(topic, key=f"bad:{case.name}", value=bad)
        # through the gate a topic of an agency that holds no key is refused for that first
        expected[f"bad:{case.name}"] = case.rule if raw.signs(topic) else "auth.unsigned"
    base = valid_payload(schema_for)
    for i in range(FUZZ):
        data = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(5, len(data))] = rng.randrange(256)
        raw.produce(POP_TOPIC, key=f"fuzz:{i}", value=bytes(data[:len(data) - rng.randint(0, 9)]))
    assert raw.flush(30) == 0

    dlq = TopicReader(settings, ["dlq.public_security", "dlq.tax", "dlq.no_such_agency"])
    passed = TopicReader(settings, [f"validated.{POP}"])

    def keys(reader: TopicReader) -> list[str]:
        """Keys of the distinct records read (a reader's rebalance may re-read a record)."""
        distinct = {(m.topic(), m.partition(), m.offset()): m for m in reader.poll()}
        return [m.key().decode() for m in distinct.values() if m.key()]

    def all_decided() -> bool:
        seen = keys(dlq) + keys(passed)
        return all(k in seen for k in list(expected) + list(good)) and \
            sum(k.startswith("fuzz:") for k in seen) >= FUZZ

    wait_until(all_decided, 90, "every corpus, fuzz and valid record to be decided")
    rejected = {m.key().decode(): json.loads(m.value()) for m in dlq.messages}
    for key, rule in expected.items():
        assert rejected[key]["rule"] == rule, (key, rejected[key]["reasons"])
        assert all(r["article"].startswith("Art. ") for r in rejected[key]["reasons"])
    # valid events around the bad ones: all through, byte for byte, none sent to the DLQ
    through = {m.key().decode(): m.value() for m in passed.messages}
    assert {k: through.get(k) for k in good} == good
    assert not [k for k in rejected if k.startswith("good:")]
    # every fuzzed payload decided exactly once: in the DLQ or validated, never both
    fuzz_seen = [k for k in keys(dlq) + keys(passed) if k.startswith("fuzz:")]
    assert sorted(fuzz_seen) == sorted(f"fuzz:{i}" for i in range(FUZZ))
    assert thread.is_alive(), "the gate stopped"
    print(f"\nbad input: {len(expected)} corpus entries rejected by rule, "
          f"{sum(k.startswith('fuzz:') for k in rejected)}/{FUZZ} fuzzed payloads rejected, "
          f"{len(good)} valid events passed unchanged; gate still running")
    dlq.close()
    passed.close()


def test_publish_corpus_is_refused_and_the_valid_changes_published(settings: Settings) -> None:
    pub = Publisher(settings)
    for case in PUBLISH_CORPUS:
        report = pub.publish(case.agency, case.resource,
                             [Change("c", PERSON), case.change, Change("u", PERSON)])
        assert report.published == 2 and len(report.event_ids) == 2, case.name
        assert [r.index for r in report.refused] == [1], case.name
        found = [(v.rule, v.field) for v in report.refused[0].violations]
        assert (case.rule, case.field) in found, (case.name, found)
    for agency, resource, rule in PUBLISH_ERRORS:
        with pytest.raises(CatalogueError, match=rule):
            pub.publish(agency, resource, [Change("c", PERSON)])
    ingest = TopicReader(settings, [POP_TOPIC])
    ingest.until(2 * len(PUBLISH_CORPUS), 60)
    assert len(ingest.messages) == 2 * len(PUBLISH_CORPUS)  # no refused change went out
    ingest.close()
    pub.close()
