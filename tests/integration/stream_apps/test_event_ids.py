"""An event id names one event (Art. 19), on a real broker and PostgreSQL: another record under
an accepted id is rejected (``envelope.event_id_reused``) and not delivered; the same record
again (a producer's retry) is accepted again and logged once."""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

from confluent_kafka import Producer

from govbus.core import db
from govbus.core.catalogue import Catalogue
from govbus.core.config import Settings
from govbus.core.kafka import ensure_topics, producer_config
from govbus.producers.publisher import Change
from govbus.stream_apps.hotpath import HotPath
from tests.integration.helpers import TopicReader, wait_until
from tests.integration.kills import logged
from tests.integration.stream_apps.test_poison import hotpath  # noqa: F401  (fixture)
from tests.integration.stream_apps.test_routing import TAX, agency, company, grant, publish


def test_an_accepted_event_id_reused_for_another_record_is_rejected(
        settings: Settings, catalogue: Catalogue, hotpath: HotPath) -> None:  # noqa: F811
    rng = random.Random(uuid.uuid4().int)
    recipient = agency("ids")
    grant(catalogue, settings.database_url, recipient, TAX, ["uscc"])
    inbox_topic = f"deliver.{recipient}.tax_registration"
    ensure_topics(settings, [inbox_topic])
    readers = {n: TopicReader(settings, t) for n, t in (
        ("ingest", [f"ingest.{TAX}"]), ("dlq", ["dlq.tax"]), ("inbox", [inbox_topic]))}
    try:
        first_id = f"evt-{uuid.uuid4().hex}"
        first = company(rng)
        publish(settings, [Change("c", first, event_id=first_id)])
        wait_until(lambda: first_id in {e for e, _ in logged(settings.database_url, recipient)},
                   60, "the first event delivered and logged")

        # another record, another company, under the same id
        other = company(rng)
        publish(settings, [Change("c", other, event_id=first_id)])

        def rejected() -> list[dict[str, object]]:
            return [json.loads(m.value() or b"{}") for m in readers["dlq"].poll()
                    if json.loads(m.value() or b"{}").get("event_id") == first_id]
        [record] = wait_until(rejected, 60, "the reuse rejected on dlq.tax")
        assert record["rule"] == "envelope.event_id_reused"
        assert record["reasons"][0]["article"] == "Art. 19"  # type: ignore[index]

        # the first record again, byte for byte, then an event on the same key: once that is
        # logged, the retry has been judged (same partition, in order)
        def firsts() -> list[Any]:  # the first record: the other one has the same id
            return [m for m in readers["ingest"].poll() if m.key() == first["uscc"].encode()]
        [original] = wait_until(firsts, 30, "the first record read back")
        raw = Producer(producer_config(settings))
        raw.produce(original.topic(), key=original.key(), value=original.value(),
                    headers=original.headers(), partition=original.partition())
        assert raw.flush(10) == 0
        after = publish(settings, [Change("u", {**first, "taxpayer_name": "后来的名称"})])[0]
        wait_until(lambda: after in {e for e, _ in logged(settings.database_url, recipient)},
                   60, "the event after the retry logged")
        assert len(rejected()) == 1, "the retry of the same record is no reuse"
        delivered = [dict(m.headers() or [])["event_id"].decode()
                     for m in readers["inbox"].poll()]
        keys = {readers["inbox"].value(m)["key"] for m in readers["inbox"].messages
                if dict(m.headers() or [])["event_id"].decode() == first_id}
        assert first_id in delivered and keys == {first["uscc"]}, "only the first record"
        assert [e for e, _ in logged(settings.database_url, recipient)].count(first_id) == 1
        with db.transaction(settings.database_url) as conn, conn.cursor() as cur:
            cur.execute("SELECT resource_id FROM accepted_events WHERE event_id = %s",
                        (first_id,))
            assert cur.fetchall() == [(TAX,)]
    finally:
        for reader in readers.values():
            reader.close()


def test_purge_forgets_ids_accepted_before_the_window(database_url: str) -> None:
    import datetime as dt

    from govbus.core import retention
    old, new = f"old-{uuid.uuid4().hex}", f"new-{uuid.uuid4().hex}"
    now = dt.datetime.now(dt.UTC)
    with db.transaction(database_url) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO accepted_events (event_id, digest, resource_id, accepted_at) "
                    "VALUES (%s, '\\x00', %s, %s), (%s, '\\x00', %s, %s)",
                    (old, TAX, now - dt.timedelta(days=401), new, TAX,
                     now - dt.timedelta(days=399)))
    days = {t: 400 for t in retention.TABLES}
    [dry] = retention.purge(database_url, days, only=["accepted_events"], dry_run=True)
    assert dry.deleted >= 1
    [done] = retention.purge(database_url, days, only=["accepted_events"], batch=1)
    assert done.deleted == dry.deleted
    with db.transaction(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT event_id FROM accepted_events WHERE event_id = ANY(%s)",
                    ([old, new],))
        assert [r[0] for r in cur.fetchall()] == [new]
