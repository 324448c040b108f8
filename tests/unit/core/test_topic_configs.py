"""Topic kinds and configs from the topic's name and the settings (docs/deployment.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from govbus.core.config import DAY_MS, Settings
from govbus.core.errors import ConfigError
from govbus.core.kafka import TOPIC_FRAMING_HEADROOM, producer_config, topic_kind, topic_spec

TOPIC_ENV = ("GOVBUS_REPLICATION_FACTOR", "GOVBUS_RETENTION_INGEST_MS",
             "GOVBUS_RETENTION_VALIDATED_MS", "GOVBUS_RETENTION_DELIVER_MS",
             "GOVBUS_RETENTION_DLQ_MS", "GOVBUS_MESSAGE_MAX_BYTES")

SETTINGS = Settings("127.0.0.1:9092", "postgresql://x/y", Path("schemas"),
                    retention_ingest_ms=11 * 3600_000, retention_validated_ms=12 * 3600_000,
                    retention_deliver_ms=13 * 3600_000, retention_dlq_ms=14 * 3600_000,
                    message_max_bytes=500_000)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    monkeypatch.setenv("GOVBUS_STATE_DIR", str(tmp_path))  # no runtime.json
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    monkeypatch.setenv("DATABASE_URL", "postgresql://x/y")
    for name in TOPIC_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("name, kind", [
    ("ingest.tax.tax_registration", "ingest"),
    ("validated.public_security.population_register", "validated"),
    ("deliver.hrss.tax_registration", "deliver"),
    ("dlq.tax", "dlq"),
    ("dlq.not-an-agency.x", "dlq"),  # whatever follows the prefix: still a DLQ
    ("notices.tax", "notices"),
    ("reconcile.values", "reconcile_values"),
    ("reconcile.cases", "reconcile_cases"),
    ("govbus.log.checkpoints", "checkpoints"),
    ("govbus.control", "control"),
    ("test.partitioner", "other"),
    ("reconcile.cases.copy", "other"),
    ("ingest", "other"),
    ("xingest.tax.tax_registration", "other"),
])
def test_the_kind_of_a_topic_follows_from_its_name(name: str, kind: str) -> None:
    assert topic_kind(name) == kind


@pytest.mark.parametrize("name, retention", [
    ("ingest.tax.tax_registration", 11 * 3600_000),
    ("validated.tax.tax_registration", 12 * 3600_000),
    ("reconcile.values", 12 * 3600_000),
    ("deliver.hrss.tax_registration", 13 * 3600_000),
    ("dlq.tax", 14 * 3600_000),
    ("govbus.log.checkpoints", -1),
])
def test_streams_are_deleted_after_their_kinds_retention(name: str, retention: int) -> None:
    configs = topic_spec(SETTINGS, name).configs
    assert configs["cleanup.policy"] == "delete"
    assert configs["retention.ms"] == str(retention)


def test_notices_are_compacted_by_notice_id_and_deleted_after_the_deliveries_retention(
        ) -> None:
    configs = topic_spec(SETTINGS, "notices.hrss").configs
    assert configs["cleanup.policy"] == "compact,delete"
    assert configs["retention.ms"] == str(13 * 3600_000)


@pytest.mark.parametrize("name", ["reconcile.cases", "govbus.control"])
def test_latest_state_topics_are_compacted(name: str) -> None:
    configs = topic_spec(SETTINGS, name).configs
    assert configs["cleanup.policy"] == "compact"
    assert "retention.ms" not in configs  # compaction keeps every key's latest record


def test_a_topic_outside_the_table_gets_the_brokers_defaults_but_the_size_limit() -> None:
    spec = topic_spec(SETTINGS, "test.partitioner")
    assert spec.kind == "other"
    assert dict(spec.configs) == {"max.message.bytes": str(500_000 + TOPIC_FRAMING_HEADROOM)}


def test_replication_factor_is_the_brokers_default_unless_set() -> None:
    assert topic_spec(SETTINGS, "dlq.tax").replication_factor == -1  # KIP-464
    three = Settings("b", "d", Path("s"), replication_factor=3)
    assert {topic_spec(three, n).replication_factor
            for n in ("dlq.tax", "reconcile.cases", "test.x")} == {3}


@given(limit=st.integers(256 * 1024, 64 * 1024 * 1024))
def test_a_record_the_producer_accepts_fits_every_topic(limit: int) -> None:
    """librdkafka refuses a record whose wire size exceeds message.max.bytes and may send a
    record that large alone in a batch, which adds the 61-byte batch header; the topic must
    take that (36 more bytes: as if the record's varint framing were not counted)."""
    settings = Settings("b", "d", Path("s"), message_max_bytes=limit)
    producer = producer_config(settings)["message.max.bytes"]
    assert producer == limit
    largest_batch = producer + 36 + 61
    for name in ("ingest.a.r", "validated.a.r", "deliver.b.r", "dlq.a", "reconcile.values",
                 "reconcile.cases", "govbus.control", "govbus.log.checkpoints", "x"):
        assert int(topic_spec(settings, name).configs["max.message.bytes"]) >= largest_batch


def test_settings_read_the_topic_variables(env: pytest.MonkeyPatch) -> None:
    env.setenv("GOVBUS_REPLICATION_FACTOR", "3")
    env.setenv("GOVBUS_RETENTION_INGEST_MS", str(2 * DAY_MS))
    env.setenv("GOVBUS_RETENTION_VALIDATED_MS", str(3 * DAY_MS))
    env.setenv("GOVBUS_RETENTION_DELIVER_MS", str(4 * DAY_MS))
    env.setenv("GOVBUS_RETENTION_DLQ_MS", str(DAY_MS))
    env.setenv("GOVBUS_MESSAGE_MAX_BYTES", "2097152")
    s = Settings.from_env()
    assert (s.replication_factor, s.retention_ingest_ms, s.retention_validated_ms,
            s.retention_deliver_ms, s.retention_dlq_ms, s.message_max_bytes) == (
        3, 2 * DAY_MS, 3 * DAY_MS, 4 * DAY_MS, DAY_MS, 2097152)


def test_unset_topic_variables_give_the_defaults(env: pytest.MonkeyPatch) -> None:
    env.setenv("GOVBUS_REPLICATION_FACTOR", "")
    s = Settings.from_env()
    assert s.replication_factor is None
    assert s.retention_dlq_ms == 3 * DAY_MS < s.retention_ingest_ms == 7 * DAY_MS
    assert s.retention_deliver_ms == 14 * DAY_MS
    assert s.message_max_bytes == 1024 * 1024
    assert Settings("b", "d", Path("s")) == Settings(
        "b", "d", Path("s"), replication_factor=s.replication_factor,
        retention_ingest_ms=s.retention_ingest_ms,
        retention_validated_ms=s.retention_validated_ms,
        retention_deliver_ms=s.retention_deliver_ms, retention_dlq_ms=s.retention_dlq_ms,
        message_max_bytes=s.message_max_bytes)  # the class defaults are the env defaults


@pytest.mark.parametrize("name, value, why", [
    ("GOVBUS_REPLICATION_FACTOR", "0", "out of range"),
    ("GOVBUS_REPLICATION_FACTOR", "-1", "out of range"),  # unset it for the broker's default
    ("GOVBUS_REPLICATION_FACTOR", "three", "not an integer"),
    ("GOVBUS_RETENTION_DLQ_MS", "1000", "out of range"),
    ("GOVBUS_RETENTION_INGEST_MS", "-1", "out of range"),
    ("GOVBUS_MESSAGE_MAX_BYTES", "1000", "out of range"),  # a DLQ record must fit
    ("GOVBUS_MESSAGE_MAX_BYTES", str(200 * 1024 * 1024), "out of range"),
])
def test_bad_topic_variables_are_refused_by_name(env: pytest.MonkeyPatch, name: str,
                                                 value: str, why: str) -> None:
    env.setenv(name, value)
    with pytest.raises(ConfigError, match=f"{name}=.*{why}"):
        Settings.from_env()
