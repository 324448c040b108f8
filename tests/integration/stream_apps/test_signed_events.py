"""The gate refuses every event its provider did not sign, on a real broker and PostgreSQL:
unsigned, signed by another agency's key, changed after signing, replayed onto another
agency's topic, signed by an unregistered or a revoked key; each with its ``auth.*`` rule,
citing Art. 8 and 24, while the signed events around them pass (Art. 8, 24)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Producer

from govbus.core import keys_store, signatures
from govbus.core.config import Settings
from govbus.core.keyring import agency_signer
from govbus.producers.publisher import Change, Publisher
from govbus.stream_apps.hotpath import HotPath
from tests.integration.helpers import TopicReader, wait_until

PERSON = {"resident_id": "11010519491231002X", "name": "王芳", "gender": "F",
          "birth_date": "1949-12-31", "residence_address": "渝水区仙来东大道1号",
          "household_division": "360502"}
POP = "ingest.public_security.population_register"
TAX = "ingest.tax.tax_registration"


@pytest.fixture
def gate(settings: Settings) -> Iterator[HotPath]:
    worker = HotPath(settings, group=f"test-auth-{uuid.uuid4().hex[:8]}", batch=50,
                     refresh_s=0.2)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    yield worker
    worker.stop()
    thread.join(30)
    assert not thread.is_alive(), "the hot path did not stop"


def signed_event(settings: Settings) -> Any:
    """One signed population record as the broker holds it, read back from its topic."""
    pub = Publisher(settings)
    report = pub.publish("public_security", "population_register",
                         [Change("c", PERSON, event_id=str(uuid.uuid4()))])
    assert report.published == 1
    reader = TopicReader(settings, [POP])
    wanted = report.event_ids[0]
    wait_until(lambda: any(dict(m.headers())["event_id"].decode() == wanted
                           for m in reader.poll()), 30, "the signed event")
    msg = next(m for m in reader.messages if dict(m.headers())["event_id"].decode() == wanted)
    reader.close()
    return msg


def rules_of(settings: Settings, dlq: str, keys: set[str]) -> dict[str, dict[str, Any]]:
    reader = TopicReader(settings, [dlq])
    found: dict[str, dict[str, Any]] = {}

    def seen() -> bool:
        for m in reader.poll():
            if m.key() and m.key().decode() in keys:
                found[m.key().decode()] = json.loads(m.value())
        return set(found) == keys

    wait_until(seen, 40, f"{sorted(keys)} in {dlq}")
    reader.close()
    return found


def test_each_unsigned_or_misattributed_event_is_refused_with_its_rule(
        settings: Settings, gate: HotPath) -> None:
    msg = signed_event(settings)
    headers = list(msg.headers())
    raw = Producer({"bootstrap.servers": settings.bootstrap_servers})
    eid = [(n, v) for n, v in headers if n == "event_id"]
    # no signature at all: a client with no key publishing as public security
    raw.produce(POP, key="unsigned", value=msg.value(), headers=eid)
    # signed, properly, with tax's key: one agency speaking for another
    tax = agency_signer(settings, "tax").sign([(POP, b"by-tax", msg.value(), eid[0][1])])[0]
    raw.produce(POP, key="by-tax", value=msg.value(), headers=eid + tax)
    # signed by a key nobody registered
    stranger = signatures.Signer(signatures.generate())
    raw.produce(POP, key="stranger", value=msg.value(),
                headers=eid + stranger.sign([(POP, b"stranger", msg.value(), eid[0][1])])[0])
    raw.flush(10)
    # public security's signature kept, the value changed after signing, under its key
    raw.produce(POP, key=msg.key(), value=msg.value()[:-1] + b"\x00", headers=headers)
    # public security's signed event, replayed whole onto tax's topic
    raw.produce(TAX, key=msg.key(), value=msg.value(), headers=headers)
    assert raw.flush(10) == 0

    found = rules_of(settings, "dlq.public_security", {"unsigned", "by-tax", "stranger",
                                                       msg.key().decode()})
    assert {k: r["rule"] for k, r in found.items()} == {
        "unsigned": "auth.unsigned", "by-tax": "auth.wrong_agency",
        "stranger": "auth.unknown_key", msg.key().decode(): "auth.bad_signature"}
    assert all(r["reasons"][0]["article"] == "Art. 8, 24" for r in found.values())
    assert "tax's" in found["by-tax"]["reasons"][0]["message"]
    replayed = rules_of(settings, "dlq.tax", {msg.key().decode()})
    assert replayed[msg.key().decode()]["rule"] == "auth.wrong_agency"
    assert gate.stats["rejected auth.bad_signature"] == 1
    # the original, signed event passed
    valid = TopicReader(settings, ["validated.public_security.population_register"])
    assert valid.until(1)[0].value() == msg.value()
    valid.close()


def test_a_revoked_key_is_refused_and_a_rotated_one_accepted(
        settings: Settings, gate: HotPath, tmp_path: Any) -> None:
    """During a rotation both keys of an agency are valid; once the old one is revoked, what
    it signs is refused within the refresh interval, without a restart."""
    dsn = settings.database_url
    new = signatures.generate()
    keys_store.register(dsn, "public_security", new.public_key(), "tests")
    old_pub = Publisher(settings)  # the sample key of public security
    new_pub = Publisher(settings, signer=signatures.Signer(new))
    ok = [p.publish("public_security", "population_register",
                    [Change("u", PERSON | {"name": name})])
          for name, p in (("王芳一", old_pub), ("王芳二", new_pub))]
    assert all(r.published == 1 and not r.refused for r in ok), [r.as_dict() for r in ok]
    valid = TopicReader(settings, ["validated.public_security.population_register"])
    valid.until(2)
    valid.close()
    kid = new_pub.signer_for("public_security").key_id
    keys_store.revoke(dsn, "public_security", kid, "tests")
    wait_until(lambda: gate.control.verifier.keys[kid].revoked, 10, "the revocation loaded")
    late = new_pub.publish("public_security", "population_register",
                           [Change("u", PERSON | {"name": "王芳三"})])
    assert late.published == 1
    found = rules_of(settings, "dlq.public_security", {PERSON["resident_id"]})
    assert found[PERSON["resident_id"]]["rule"] == "auth.revoked_key"
