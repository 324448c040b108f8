"""The publisher signs what it produces, per batch, and the gate's judge checks it first:
pure, without broker or database (a recording producer, the catalogue in memory)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from govbus.core import signatures
from govbus.core.catalogue import load_catalogue
from govbus.core.config import Settings
from govbus.core.envelope import now_ms
from govbus.core.errors import ConfigError
from govbus.producers.publisher import Change, Publisher
from govbus.stream_apps.judge import judge
from tests.unit.stream_apps.test_bad_input import MemoryRegistry

PERSON = {"resident_id": "11010519491231002X", "name": "王芳", "gender": "F",
          "birth_date": "1949-12-31", "residence_address": "渝水区仙来东大道1号",
          "household_division": "360502"}


class Recorder:
    """Stands where the producer would be; keeps what was produced, acknowledges it all."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def produce(self, topic: str, key: Any = None, value: Any = None, headers: Any = None,
                on_delivery: Any = None) -> None:
        self.records.append({"topic": topic, "key": key, "value": value, "headers": headers})
        if on_delivery:
            on_delivery(None, None)

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def flush(self, _timeout: float = 0) -> int:
        return 0


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Publisher, Recorder, signatures.Signer, MemoryRegistry]:
    cat = load_catalogue()
    registry = MemoryRegistry(cat)
    signer = signatures.Signer(signatures.generate())
    recorder = Recorder()
    settings = Settings("127.0.0.1:1", "postgresql://unused", cat.root, state_dir=tmp_path)
    pub = Publisher(settings, cat, registry=registry, producer=recorder,  # type: ignore[arg-type]
                    signer=signer)
    return pub, recorder, signer, registry


def test_records_are_held_and_signed_once_per_batch(setup: Any) -> None:
    pub, recorder, signer, _ = setup
    changes = [Change("u", PERSON | {"name": f"王芳{i}"}) for i in range(300)]
    report = pub.publish("public_security", "population_register", changes)
    assert report.published == 300 and len(recorder.records) == 300
    sigs = {dict(r["headers"])["govbus-sig"][9:73] for r in recorder.records}  # signature
    assert len(sigs) == 3  # 128 + 128 + 44
    verifier = signatures.Verifier([signatures.PublicKey(
        signer.key_id, "public_security", signer.private.public_key())])
    for r in recorder.records:
        assert verifier.check(r["topic"], r["key"].encode(), r["value"], r["headers"],
                              "public_security") is None
    assert verifier.verifications == 3
    ids = [dict(r["headers"])["event_id"].decode() for r in recorder.records]
    assert ids == report.event_ids  # produced in the order published


def test_nothing_is_produced_before_flush_and_a_partial_batch_is_sealed_by_it(setup: Any
                                                                              ) -> None:
    pub, recorder, _, _ = setup
    resource = pub.catalogue.get("public_security", "population_register")
    event, problems = pub.prepare("public_security", resource, Change("c", PERSON))
    assert not problems
    pub.send(resource, event)
    assert recorder.records == []
    pub.flush()
    assert len(recorder.records) == 1


def test_the_judge_checks_the_signature_before_the_contents(setup: Any) -> None:
    pub, recorder, signer, registry = setup
    pub.publish("public_security", "population_register", [Change("c", PERSON)])
    r = recorder.records[0]
    keys = signatures.Verifier([signatures.PublicKey(signer.key_id, "public_security",
                                                     signer.private.public_key())])

    def decide(topic: str, value: bytes, headers: Any) -> list[str]:
        v = judge(topic, value, registry.by_id, now_ms=now_ms(), max_skew_ms=300_000,
                  verifier=keys, key=r["key"].encode(), headers=headers)
        return [x.rule for x in v.violations]

    assert decide(r["topic"], r["value"], r["headers"]) == []
    assert decide(r["topic"], r["value"] + b"x", r["headers"]) == ["auth.bad_signature"]
    assert decide(r["topic"], b"garbage", []) == ["auth.unsigned"]
    assert decide("ingest.tax.tax_registration", r["value"], r["headers"]) == \
        ["auth.wrong_agency"]
    v = judge(r["topic"], r["value"], registry.by_id, now_ms=now_ms(), max_skew_ms=1,
              verifier=keys, key=r["key"].encode(), headers=[])
    assert (v.violations[0].field, v.violations[0].article) == ("headers", "Art. 8, 24")


def test_no_key_for_an_agency_is_refused_before_anything_is_held(tmp_path: Path) -> None:
    cat = load_catalogue()
    settings = Settings("127.0.0.1:1", "postgresql://unused", cat.root, state_dir=tmp_path)
    pub = Publisher(settings, cat, registry=MemoryRegistry(cat),  # type: ignore[arg-type]
                    producer=Recorder())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="GOVBUS_SIGNING_KEY_FILE.*auth.unsigned"):
        pub.publish("public_security", "population_register", [Change("c", PERSON)])
    named = replace(settings, signing_key_file=tmp_path / "missing.key")
    with pytest.raises(ConfigError, match="cannot read signing key file"):
        Publisher(named, cat, registry=MemoryRegistry(cat),  # type: ignore[arg-type]
                  producer=Recorder()).signer_for("tax")  # type: ignore[arg-type]
