"""The hot path (judge, route, feed and settle in one pass), on a real broker and a real
PostgreSQL: it rejects, routes, logs and feeds with one decode per event; and a ``kill -9``
mid-stream neither loses nor double-logs a delivery.
"""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from govbus.core import db
from govbus.core.catalogue import Catalogue
from govbus.core.config import Settings
from govbus.core.kafka import ensure_topics, murmur2_partition
from govbus.delivery_log import verify
from govbus.producers.publisher import Change
from govbus.stream_apps.feed import VALUES_TOPIC
from govbus.stream_apps.hotpath import HotPath
from tests.integration.helpers import SignedProducer, TopicReader, running, wait_until
from tests.integration.kills import N, Processes, further, logged, paced_feed
from tests.integration.stream_apps.test_routing import TAX, agency, company, grant, publish


@pytest.fixture
def hotpath(settings: Settings) -> Iterator[HotPath]:
    with running(HotPath(settings, group=f"test-hotpath-{uuid.uuid4().hex[:8]}",
                         batch=200)) as stage:
        yield stage


def test_one_pass_rejects_routes_logs_and_feeds(settings: Settings, catalogue: Catalogue,
                                                hotpath: HotPath) -> None:
    rng = random.Random(uuid.uuid4().int)
    recipient = agency("hot")
    grant(catalogue, settings.database_url, recipient, TAX, ["uscc", "taxpayer_name"])
    topic = f"deliver.{recipient}.tax_registration"
    ensure_topics(settings, [topic])
    readers = {name: TopicReader(settings, topics) for name, topics in (
        ("inbox", [topic]), ("validated", [f"validated.{TAX}"]), ("dlq", ["dlq.tax"]),
        ("values", [VALUES_TOPIC]))}
    try:
        companies = [company(rng) for _ in range(60)]
        ids = set(publish(settings, [Change("c", c) for c in companies]))
        garbage = f"garbage-{uuid.uuid4().hex}"
        producer = SignedProducer(settings)
        producer.produce(f"ingest.{TAX}", key=garbage.encode(), value=b"not avro at all")
        assert producer.flush(10) == 0

        wait_until(lambda: {e for e, _ in logged(settings.database_url, recipient)} >= ids, 60,
                   "every delivery logged")
        inbox = readers["inbox"].until(len(ids))
        delivered = [readers["inbox"].value(m) for m in inbox]
        assert {d["event_id"] for d in delivered} == ids
        assert all(set(d["after"]) == {"uscc", "taxpayer_name"} for d in delivered)
        assert sorted(e for e, _ in logged(settings.database_url, recipient)) == sorted(ids)

        def rejected() -> list[dict[str, object]]:
            return [json.loads(m.value() or b"{}") for m in readers["dlq"].poll()
                    if m.key() == garbage.encode()]
        wait_until(rejected, 30, "the garbage record in dlq.tax")
        assert rejected()[0]["rule"] == "wire.magic_byte"

        def accepted() -> set[str]:
            return {dict(m.headers() or [])["event_id"].decode()
                    for m in readers["validated"].poll()} & ids
        wait_until(lambda: accepted() == ids, 30, "every accepted event on validated.*")

        def fed() -> dict[str, tuple[int, dict[str, object]]]:
            out = {}
            for m in readers["values"].poll():
                for one in json.loads(m.value() or b"{}").get("bundle", []):
                    out[one["event_id"]] = (m.partition(), one)
            return out
        wait_until(lambda: ids <= set(fed()), 30, "every accepted event's values, bundled")
        by_event = fed()
        partitions = len(readers["values"].consumer.list_topics(VALUES_TOPIC, timeout=10)
                         .topics[VALUES_TOPIC].partitions)
        for event_id in ids:
            part, one = by_event[event_id]
            entity = str(one["entity"])
            assert part == murmur2_partition(entity.encode(), partitions), entity
            assert entity.startswith("company:")
            assert set(one["values"]) == {  # type: ignore[call-overload]
                "company.name", "company.legal_representative", "company.registered_address"}
        report = verify(settings.database_url)
        assert report.ok, report.lines()
        assert hotpath.stats["rejected wire.magic_byte"] >= 1
    finally:
        for reader in readers.values():
            reader.close()


def test_hotpath_killed_mid_stream_logs_every_delivery_once(
        settings: Settings, catalogue: Catalogue, tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    """``kill -9`` twice while events flow: every published event logged exactly once for
    the recipient, delivered at least once, and the chain intact."""
    rng = random.Random(uuid.uuid4().int)
    recipient = agency("hotkill")
    grant(catalogue, settings.database_url, recipient, TAX, ["uscc"])
    topic = f"deliver.{recipient}.tax_registration"
    ensure_topics(settings, [topic])
    inbox = TopicReader(settings, [topic])
    request.addfinalizer(inbox.close)
    processes = Processes(settings, tmp_path)
    request.addfinalizer(processes.stop_all)
    processes.start("hotpath", "govbus.stream_apps.hotpath")

    published: list[str] = []
    kills_done = threading.Event()  # the last third of the feed comes after both crashes
    feeder = threading.Thread(target=paced_feed, args=(settings, rng, published, [kills_done]),
                              daemon=True)
    feeder.start()
    dsn = settings.database_url
    marks = []
    for _ in range(2):
        target = further(dsn, recipient)
        wait_until(lambda t=target: len(logged(dsn, recipient)) >= t, 90,  # type: ignore[misc]
                   f"deliveries logged before the kill (logs in {tmp_path})")
        processes.kill("hotpath")
        marks.append(len(logged(dsn, recipient)))
        processes.start("hotpath", "govbus.stream_apps.hotpath")
    kills_done.set()
    assert marks[-1] < N, "the kills came after the stream's end"
    feeder.join(120)
    assert len(published) == N
    wait_until(lambda: len(logged(dsn, recipient)) >= N, 120,
               f"all {N} deliveries logged (logs in {tmp_path})")
    rows = logged(dsn, recipient)
    assert sorted(e for e, _ in rows) == sorted(published)          # each exactly once

    def delivered() -> set[str]:
        return {inbox.value(m)["event_id"] for m in inbox.poll()}
    wait_until(lambda: delivered() >= set(published), 60, "every event on the deliver topic")
    assert delivered() == set(published)
    report = verify(dsn)
    assert report.ok, report.lines()
    print(f"\nhot path killed at {marks} logged; {len(rows)} log rows, {len(inbox.messages)} "
          f"messages delivered (re-sends: {len(inbox.messages) - N}); chain intact")


FAIL_ONE = """
CREATE TABLE IF NOT EXISTS test_refused_deliveries (event_id text PRIMARY KEY);
CREATE OR REPLACE FUNCTION test_refuse_delivery() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM test_refused_deliveries WHERE event_id = NEW.event_id) THEN
        RAISE EXCEPTION 'test: the log refuses %', NEW.event_id;
    END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS test_refuse_delivery ON deliveries;
CREATE TRIGGER test_refuse_delivery BEFORE INSERT ON deliveries
    FOR EACH ROW EXECUTE FUNCTION test_refuse_delivery();
"""


def test_no_offset_is_committed_past_a_batch_that_failed(
        settings: Settings, catalogue: Catalogue, request: pytest.FixtureRequest) -> None:
    """Batches settle in a pipeline. The log refuses one event's delivery, so only the batch
    holding it fails; the batches after it, already settling, must not commit their offsets
    past it. A worker that then takes over the group (the first one stopped while the
    refusal lasts) must still log every delivery, exactly once."""
    dsn = settings.database_url
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute(FAIL_ONE)

    def undo() -> None:
        with db.transaction(dsn) as conn, conn.cursor() as cur:
            cur.execute("DROP TRIGGER IF EXISTS test_refuse_delivery ON deliveries; "
                        "DROP TABLE IF EXISTS test_refused_deliveries")
    request.addfinalizer(undo)
    rng = random.Random(uuid.uuid4().int)
    recipient = agency("hotfail")
    grant(catalogue, dsn, recipient, TAX, ["uscc"])
    ensure_topics(settings, [f"deliver.{recipient}.tax_registration"])
    group = f"test-hotfail-{uuid.uuid4().hex[:8]}"
    companies = [company(rng) for _ in range(200)]
    ids = publish(settings, [Change("c", c) for c in companies])
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO test_refused_deliveries VALUES (%s)", (ids[0],))
    with running(HotPath(settings, group=group, batch=20)) as first:
        wait_until(lambda: first.stats["retries"] >= 2, 60, "the refused batch retried")
        assert ids[0] not in {e for e, _ in logged(dsn, recipient)}
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM test_refused_deliveries")
    with running(HotPath(settings, group=group, batch=20)):
        wait_until(lambda: len(logged(dsn, recipient)) >= len(ids), 90,
                   "every delivery logged by the worker that took over")
    assert sorted(e for e, _ in logged(dsn, recipient)) == sorted(ids)  # each exactly once
    report = verify(dsn)
    assert report.ok, report.lines()
