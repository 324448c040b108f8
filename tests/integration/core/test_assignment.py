"""Two members of one consumer group over several topics of 3 partitions each (the hot path's
``^ingest\\..*`` subscription) split the partitions evenly (real broker). With librdkafka's
default assignor (range, topic by topic) the first member got 2 of the 3 partitions of every
topic, two thirds of the work, and a second worker could add at most half."""

from __future__ import annotations

import time
import uuid
from collections import Counter

from confluent_kafka import Consumer

from govbus.core.config import Settings
from govbus.core.kafka import consumer_config, ensure_topics

TOPICS = [f"ingest.assign{i}.records" for i in range(5)]


def assignments(settings: Settings, members: int) -> list[list[tuple[str, int]]]:
    group = f"test-assign-{uuid.uuid4().hex[:8]}"
    consumers = [Consumer(consumer_config(settings, group)) for _ in range(members)]
    try:
        for c in consumers:
            c.subscribe(["^ingest\\.assign.*"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for c in consumers:
                c.poll(0.1)  # joins the group and serves the rebalance
            got = [c.assignment() for c in consumers]
            if all(got) and sum(map(len, got)) == 3 * len(TOPICS):
                return [sorted((tp.topic, tp.partition) for tp in a) for a in got]
        raise AssertionError(f"no complete assignment within 60 s: {got}")
    finally:
        for c in consumers:
            c.close()


def test_two_members_split_the_partitions_evenly(settings: Settings) -> None:
    ensure_topics(settings, TOPICS, 3)
    first, second = assignments(settings, 2)
    assert not set(first) & set(second)                     # no partition twice
    assert sorted([len(first), len(second)]) == [7, 8]       # 15 partitions: 8 and 7, not 10/5
    per_topic = Counter(t for t, _ in first)
    assert set(per_topic.values()) <= {1, 2} and 1 in per_topic.values()  # not 2 of each
