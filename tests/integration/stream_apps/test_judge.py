"""The gate against a real broker and PostgreSQL: valid events pass unchanged, every bad
payload ends in ``dlq.<agency>`` with its rule, and the gate keeps running."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer

from govbus.core.config import Settings
from govbus.core.registry import SchemaRegistry
from govbus.core.serde import frame
from govbus.producers.publisher import Change, Publisher
from govbus.stream_apps.hotpath import HotPath
from tests.integration.helpers import TopicReader

PERSON = {"resident_id": "11010519491231002X", "name": "王芳", "gender": "F",
          "birth_date": "1949-12-31", "residence_address": "渝水区仙来东大道1号",
          "household_division": "360502"}
TOPIC = "ingest.public_security.population_register"


@pytest.fixture
def gate(settings: Settings) -> Iterator[HotPath]:
    worker = HotPath(settings, group=f"test-gate-{uuid.uuid4().hex[:8]}", batch=50)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    yield worker
    worker.stop()
    thread.join(30)
    assert not thread.is_alive(), "the hot path did not stop"


def test_bad_bytes_go_to_dlq_and_gate_keeps_running(settings: Settings, gate: HotPath) -> None:
    pub = Publisher(settings)
    reg = SchemaRegistry(settings.database_url).latest("public_security.population_register")
    first = pub.publish("public_security", "population_register", [Change("c", PERSON)])
    assert first.published == 1
    good_bytes = None
    bad = {
        "garbage": b"\xde\xad\xbe\xef garbage",
        "magic": b"\x07" + frame(reg.schema_id, b"")[1:] + b"\x02",
        "unknown": frame(987654, b"\x02x"),
        "short": b"\x00\x00",
    }
    for key, payload in bad.items():  # signed by public security: the contents are bad
        pub.produce_raw(TOPIC, key, payload, f"raw-{key}-{uuid.uuid4()}")
    pub.flush(10)
    valid = TopicReader(settings, ["validated.public_security.population_register"])
    good_bytes = valid.until(1)[0].value()
    # a truncated copy of a real event, and a bad check digit from a faulty adapter
    pub.produce_raw(TOPIC, "truncated", good_bytes[:-7], f"raw-truncated-{uuid.uuid4()}")
    pub.flush(10)
    faulty = pub.publish("public_security", "population_register",
                         [Change("c", PERSON | {"resident_id": "110105194912310021"})],
                         validate=False)
    after = pub.publish("public_security", "population_register",
                        [Change("u", PERSON | {"name": "王芳芳"})])
    assert faulty.published == 1 and after.published == 1

    dlq = TopicReader(settings, ["dlq.public_security"])
    reasons = {}
    for msg in dlq.until(6):
        record = json.loads(msg.value())
        key = msg.key().decode() if msg.key() else None
        reasons[key] = record
    assert {k: r["rule"] for k, r in reasons.items()} == {
        "garbage": "wire.magic_byte", "magic": "wire.magic_byte",
        "unknown": "schema.unknown_id", "short": "wire.too_short",
        "truncated": "avro.decode", "110105194912310021": "identifier.resident_id"}
    check = reasons["110105194912310021"]["reasons"][0]
    assert (check["field"], check["article"]) == ("resident_id", "Art. 12")
    assert reasons["unknown"]["source"]["topic"] == TOPIC
    # nothing corrupted: the valid events after the bad ones pass through byte for byte
    passed = valid.until(2)
    assert len(passed) == 2 and passed[0].value() == good_bytes
    event_ids = {dict(m.headers())["event_id"].decode() for m in passed}
    assert event_ids == {first.event_ids[0], after.event_ids[0]}
    assert gate.stats["rejected wire.magic_byte"] == 2
    valid.close()
    dlq.close()


def test_unknown_agency_gets_its_own_dlq(settings: Settings, gate: HotPath) -> None:
    raw = Producer({"bootstrap.servers": settings.bootstrap_servers})
    raw.produce("ingest.forged_bureau.people", key="x", value=frame(1, b"\x02"))
    raw.flush(10)
    dlq = TopicReader(settings, ["dlq.forged_bureau"])
    record = json.loads(dlq.until(1, timeout=40)[0].value())
    assert record["rule"] == "auth.unsigned"  # no agency of that name holds a key
    assert record["resource"] == "forged_bureau.people"
    dlq.close()
