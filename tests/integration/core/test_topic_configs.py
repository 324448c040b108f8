"""Topics created through ``ensure_topics`` on the real broker carry the configs of their kind.

Measured on Tansu: it accepts ``replication_factor=-1`` (KIP-464, the broker's default: one
replica on its single node) and topic configs in CreateTopics, and returns them through
DescribeConfigs; it does not enforce ``max.message.bytes`` nor compaction, so what the test
can read back is what was asked for, not how the broker acts on it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import ConfigResource, ResourceType

from govbus.core.config import Settings
from govbus.core.kafka import admin, ensure_topics, producer_config, topic_spec

pytestmark = pytest.mark.integration

TOPICS = ["ingest.tax.tax_registration", "validated.tax.tax_registration",
          "deliver.hrss.tax_registration", "dlq.tax", "reconcile.values", "reconcile.cases",
          "govbus.log.checkpoints", "govbus.control", "notices.hrss"]


def described(settings: Settings, topic: str) -> dict[str, str]:
    client = admin(settings)  # held until the answer is in
    futures = client.describe_configs([ConfigResource(ResourceType.TOPIC, topic)],
                                      request_timeout=15)
    (future,) = futures.values()
    return {name: entry.value for name, entry in future.result(timeout=15).items()}


def replicas(settings: Settings, topic: str) -> set[int]:
    meta = admin(settings).list_topics(topic, timeout=15).topics[topic]
    assert meta.error is None, meta.error
    return {len(p.replicas) for p in meta.partitions.values()}


def test_topics_are_created_with_the_configs_of_their_kind(bootstrap: str) -> None:
    settings = Settings(bootstrap, "postgresql://unused/x", Path("schemas"), partitions=2,
                        retention_ingest_ms=5 * 3600_000, retention_dlq_ms=2 * 3600_000,
                        message_max_bytes=300_000)
    assert sorted(ensure_topics(settings, TOPICS)) == sorted(TOPICS)
    assert ensure_topics(settings, TOPICS) == [], "an existing topic is left as it is"
    for topic in TOPICS:
        want = dict(topic_spec(settings, topic).configs)
        got = described(settings, topic)
        assert {k: got.get(k) for k in want} == want, topic
        assert replicas(settings, topic) == {1}, "the broker's default on a single node"
    assert described(settings, "dlq.tax")["retention.ms"] == str(2 * 3600_000)
    assert described(settings, "ingest.tax.tax_registration")["retention.ms"] == str(5 * 3600_000)
    assert described(settings, "reconcile.cases")["cleanup.policy"] == "compact"
    assert int(described(settings, "dlq.tax")["max.message.bytes"]) > 300_000


def test_an_explicit_replication_factor_is_asked_for(bootstrap: str) -> None:
    """GOVBUS_REPLICATION_FACTOR reaches CreateTopics (Tansu records the factor asked for
    even beyond its one node; Apache Kafka refuses more replicas than brokers)."""
    settings = Settings(bootstrap, "postgresql://unused/x", Path("schemas"), partitions=1,
                        replication_factor=2)
    ensure_topics(settings, ["deliver.hrss.population_register"])
    assert replicas(settings, "deliver.hrss.population_register") == {2}


def test_a_record_of_the_largest_size_the_producer_takes_is_stored(bootstrap: str) -> None:
    settings = Settings(bootstrap, "postgresql://unused/x", Path("schemas"), partitions=1,
                        message_max_bytes=256 * 1024)
    ensure_topics(settings, ["validated.tax.tax_registration"])
    """The largest value librdkafka takes under ``message.max.bytes`` (it counts the record's
    framing too), found by bisection, is acknowledged by the topic."""
    producer = Producer(producer_config(settings))
    errors: list[object] = []

    def taken(size: int) -> bool:
        try:
            producer.produce("validated.tax.tax_registration", key=b"k" * 20,
                             value=b"v" * size, on_delivery=lambda err, _m: errors.append(err))
        except KafkaException as exc:
            assert exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE, exc
            return False
        return True

    low, high = 0, settings.message_max_bytes + 1  # taken(low), not taken(high)
    assert not taken(high)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if taken(mid) else (low, mid)
    assert settings.message_max_bytes - 100 < low < settings.message_max_bytes
    assert producer.flush(30) == 0
    assert errors and set(errors) == {None}, errors


def test_govbus_up_creates_its_topics_with_the_environments_topic_settings(
        bootstrap: str, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded runtime's topics follow the same settings as a production broker's."""
    from govbus import runtime

    monkeypatch.setenv("GOVBUS_RETENTION_DLQ_MS", str(5 * 3600 * 1000))
    catalogue = runtime.prepare(bootstrap, database_url, None, 1, lambda _line: None)
    settings = Settings(bootstrap, database_url, catalogue.root)
    assert described(settings, "dlq.tax")["retention.ms"] == str(5 * 3600 * 1000)
