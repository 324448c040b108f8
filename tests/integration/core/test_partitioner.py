"""The bundling feed places each entity where a keyed Kafka producer would (real broker):
:func:`govbus.core.kafka.murmur2_partition` must agree with librdkafka's ``murmur2_random``
(the Java clients' default), or one entity's values would split across partitions and the
reconciler would never see them side by side."""

from __future__ import annotations

from confluent_kafka import Producer

from govbus.core.config import Settings
from govbus.core.kafka import ensure_topics, murmur2_partition, partition_count, producer_config


def test_murmur2_matches_the_keyed_producer(settings: Settings) -> None:
    topic = "test.partitioner"
    ensure_topics(settings, [topic], 7)
    assert partition_count(settings, topic) == 7
    keys = [f"person:11010519491231{i:04d}".encode() for i in range(150)] + [
        b"", b"a", b"ab", b"abc", b"company:91350100M000100Y43", "人:住址".encode()]
    landed: dict[bytes, int] = {}
    failures: list[str] = []

    def on_delivery(err: object, msg: object) -> None:
        if err is not None:
            failures.append(str(err))
        else:
            landed[msg.key()] = msg.partition()  # type: ignore[attr-defined]

    producer = Producer(producer_config(settings, partitioner="murmur2_random"))
    for key in keys:
        producer.produce(topic, key=key, value=b"x", on_delivery=on_delivery)
    assert producer.flush(30) == 0 and not failures, failures
    assert len(set(landed.values())) > 1  # the keys spread, so the check below means something
    wrong = {k: (p, murmur2_partition(k, 7)) for k, p in landed.items()
             if murmur2_partition(k, 7) != p}
    assert not wrong, wrong
