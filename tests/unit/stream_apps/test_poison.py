"""A bad record's DLQ record is bounded whatever the input, and a record that can never be
produced is set aside per record, never retried with its batch."""

from __future__ import annotations

import hashlib
import json

import orjson
from confluent_kafka import Producer
from hypothesis import given, settings
from hypothesis import strategies as st

from govbus.core import quarantine
from govbus.core.batching import Acks, SetAside, produce
from govbus.core.errors import Violation
from govbus.stream_apps.judge import (
    DLQ_RECORD_MAX_BYTES,
    PAYLOAD_PREFIX_BYTES,
    Verdict,
    dlq_record,
)


def verdict(violations: int, message: str) -> Verdict:
    return Verdict("tax", "tax.tax_registration", violations=[
        Violation(f"rule.{i}", f"field{i}", "Art. 12", message) for i in range(violations)])


@settings(max_examples=30, deadline=None)
@given(size=st.integers(0, 3 * 1024 * 1024), key_len=st.integers(0, 200_000),
       violations=st.integers(1, 500), message_len=st.integers(0, 5000),
       char=st.sampled_from(["值", "\x01", "😀", "a"]))
def test_dlq_record_is_bounded_whatever_the_input(size: int, key_len: int, violations: int,
                                                  message_len: int, char: str) -> None:
    payload = b"\xff" * size
    key = (char * key_len).encode()
    record = dlq_record(verdict(violations, char * message_len), "ingest.tax.tax_registration",
                        1, 42, key, payload, char * key_len, 1)
    assert len(record) <= DLQ_RECORD_MAX_BYTES
    body = json.loads(record)
    assert body["payload"]["bytes"] == size
    assert body["payload"]["sha256"] == hashlib.sha256(payload).hexdigest()
    assert body["reasons_total"] == violations
    assert body["source"] == {"topic": "ingest.tax.tax_registration", "partition": 1,
                              "offset": 42}


def test_dlq_record_keeps_a_prefix_and_names_the_quarantined_payload() -> None:
    payload = bytes(range(256)) * 10
    body = json.loads(dlq_record(verdict(1, "bad"), "ingest.tax.tax_registration", 0, 7,
                                 b"k", payload, None, 5))
    import base64
    assert base64.b64decode(body["payload"]["prefix_b64"]) == payload[:PAYLOAD_PREFIX_BYTES]
    assert body["payload"]["quarantined"] is True
    assert body["rule"] == "rule.0" and body["key"] == "k"


def refusing_producer() -> Producer:
    """A client whose limit is 1,000 bytes: it refuses a larger record at ``produce``, before
    any broker is involved (no broker listens on port 1)."""
    return Producer({"bootstrap.servers": "127.0.0.1:1", "message.max.bytes": 1000,
                     "log_level": 0})


def test_a_record_refused_for_good_is_set_aside_not_failed() -> None:
    producer = refusing_producer()
    acks = Acks("outputs")
    produce(producer, "validated.tax.tax_registration", b"k", b"x" * 5000,
            acks.expect(("ingest.tax.tax_registration", 2, 9)))
    assert acks.failures == []
    assert acks.pending == 0
    acks.settle(producer, timeout=1)  # does not raise: the batch goes on
    [entry] = acks.set_aside
    assert entry.topic == "validated.tax.tax_registration"
    assert entry.error == "MSG_SIZE_TOO_LARGE"
    assert entry.source == ("ingest.tax.tax_registration", 2, 9)
    assert "5000-byte" in entry.reason


def test_without_a_callback_a_refused_record_still_raises() -> None:
    import pytest

    from govbus.core.errors import BrokerError
    with pytest.raises(BrokerError, match="cannot produce"):
        produce(refusing_producer(), "t", b"k", b"x" * 5000, None)


def test_quarantine_rows_of_set_aside_records_name_their_provider() -> None:
    sourced = quarantine.refused(SetAside("validated.tax.tax_registration", b"k", b"v" * 10,
                                          "MSG_SIZE_TOO_LARGE", "why",
                                          ("ingest.tax.tax_registration", 1, 3)))
    assert (sourced.agency, sourced.stage, sourced.topic, sourced.partition, sourced.offset) \
        == ("tax", "produce", "ingest.tax.tax_registration", 1, 3)
    assert sourced.payload_sha256 == hashlib.sha256(b"v" * 10).hexdigest()
    delivery = orjson.dumps({"provider": "public_security", "event_id": "e-1", "record": {}})
    row = quarantine.refused(SetAside("deliver.tax.population_register", "key", delivery,
                                      "MSG_SIZE_TOO_LARGE", "why", None))
    assert (row.agency, row.event_id, row.output_topic, row.partition) == \
        ("public_security", "e-1", "deliver.tax.population_register", -1)
    assert row.key == b"key"
