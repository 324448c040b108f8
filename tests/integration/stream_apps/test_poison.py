"""One bad record never stops the bus: garbage records of 2 MB and 760 KB between valid
events, on a real broker and a real PostgreSQL. The valid events are delivered and logged; each
bad record is set aside exactly once: one bounded record on ``dlq.<agency>`` and one row with
its whole payload in ``quarantine`` for its provider (Art. 19); no batch is retried."""

from __future__ import annotations

import hashlib
import json
import os
import random
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from govbus.core import db
from govbus.core.catalogue import Catalogue
from govbus.core.config import Settings
from govbus.core.kafka import ensure_topics, producer_config
from govbus.producers.publisher import Change
from govbus.stream_apps.hotpath import HotPath
from govbus.stream_apps.judge import DLQ_RECORD_MAX_BYTES
from tests.integration.govbus.test_access import cli
from tests.integration.govbus.test_sharing_cli import token  # one token per agency and database
from tests.integration.helpers import SignedProducer, TopicReader, running, wait_until
from tests.integration.kills import logged
from tests.integration.stream_apps.test_routing import TAX, agency, company, grant, publish


@pytest.fixture
def hotpath(settings: Settings) -> Iterator[HotPath]:
    with running(HotPath(settings, group=f"test-poison-{uuid.uuid4().hex[:8]}",
                         batch=200)) as stage:
        yield stage


def quarantined(dsn: str, keys: list[bytes]) -> list[tuple[bytes, str, int, bytes]]:
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT record_key, payload_sha256, payload_bytes, payload FROM quarantine "
                    "WHERE record_key = ANY(%s)", ([bytes(k) for k in keys],))
        return [(bytes(k), d, n, bytes(p)) for k, d, n, p in cur.fetchall()]


def test_oversized_garbage_is_set_aside_once_and_valid_events_flow(
        settings: Settings, catalogue: Catalogue, hotpath: HotPath, tmp_path: Path) -> None:
    rng = random.Random(uuid.uuid4().int)
    recipient = agency("poison")
    grant(catalogue, settings.database_url, recipient, TAX, ["uscc", "taxpayer_name"])
    inbox_topic = f"deliver.{recipient}.tax_registration"
    ensure_topics(settings, [inbox_topic])
    dlq = TopicReader(settings, ["dlq.tax"])
    try:
        # random bytes but the first, never the wire format's magic byte 0 (a random 0 first
        # would be read as framed, with an unknown schema id: another rule)
        big = {f"poison-2mb-{uuid.uuid4().hex}".encode():
               b"\xff" + os.urandom(2 * 1024 * 1024 - 1),
               f"poison-760kb-{uuid.uuid4().hex}".encode(): b"\xff" + os.urandom(760 * 1024 - 1)}
        raw = SignedProducer(settings, producer_config(
            settings, **{"message.max.bytes": 4 * 1024 * 1024}))
        ids: set[str] = set()
        for key, garbage in big.items():  # valid events before, between and after them
            ids |= set(publish(settings, [Change("c", company(rng)) for _ in range(15)]))
            raw.produce(f"ingest.{TAX}", key=key, value=garbage)
            assert raw.flush(30) == 0, "the broker took the garbage record"
        ids |= set(publish(settings, [Change("c", company(rng)) for _ in range(15)]))

        wait_until(lambda: {e for e, _ in logged(settings.database_url, recipient)} >= ids, 90,
                   "every valid event delivered and logged despite the garbage")

        def dlq_records() -> list[tuple[bytes, bytes]]:
            return [(m.key(), m.value()) for m in dlq.poll() if m.key() in big]
        wait_until(lambda: len(dlq_records()) >= len(big), 60, "both garbage records on dlq.tax")
        wait_until(lambda: len(quarantined(settings.database_url, list(big))) >= len(big), 30,
                   "both garbage records in quarantine")
        seen = dlq_records()  # everything read so far: a duplicate would show here
        assert sorted(k for k, _ in seen) == sorted(big), "each set aside exactly once"
        for key, value in seen:
            assert len(value) <= DLQ_RECORD_MAX_BYTES, len(value)
            record = json.loads(value)
            assert record["rule"] == "wire.magic_byte"
            assert record["payload"]["bytes"] == len(big[key])
            assert record["payload"]["sha256"] == hashlib.sha256(big[key]).hexdigest()
        rows = quarantined(settings.database_url, list(big))
        assert len(rows) == len(big)
        for key, digest, size, payload in rows:
            assert payload == big[key] and size == len(big[key])
            assert digest == hashlib.sha256(payload).hexdigest()
        assert hotpath.stats["retries"] == 0, "no batch was retried"
        provider_reads_its_quarantine(settings.database_url, big, tmp_path)
    finally:
        dlq.close()


def provider_reads_its_quarantine(dsn: str, big: dict[bytes, bytes], folder: Path) -> None:
    """``govbus quarantine``: the provider lists its rows and writes a whole payload out (mode
    600); another agency's token sees no such row (Art. 24)."""
    digests = {hashlib.sha256(p).hexdigest(): p for p in big.values()}
    code, out, err = cli(dsn, "quarantine", "list", "--agency", "tax", "--json",
                         token=token(dsn, "tax"))
    assert code == 0, err
    mine = [r for r in json.loads(out) if r["payload_sha256"] in digests]
    assert len(mine) == len(big) and {r["stage"] for r in mine} == {"gate"}
    row = mine[0]
    target = folder / "payload.bin"
    code, _, err = cli(dsn, "quarantine", "show", str(row["id"]), "--agency", "tax", "--out",
                       str(target), token=token(dsn, "tax"))
    assert code == 0, err
    assert target.read_bytes() == digests[row["payload_sha256"]]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    code, _, err = cli(dsn, "quarantine", "show", str(row["id"]), "--agency", "hrss",
                       token=token(dsn, "hrss"))
    assert code == 1 and f"no quarantined record {row['id']} of hrss" in err, err
