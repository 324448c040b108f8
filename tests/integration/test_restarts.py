"""Killing the router and the delivery-log sink mid-stream (SIGKILL) and restarting them leaves
exactly one log row per delivery: the delivery log is exactly-once across crashes.

The gate runs in a thread; the router and the sink run as their own processes, as under
``govbus up``, so that ``kill -9`` is a real crash: no flush, no commit, no goodbye. The router
is at-least-once (it may re-send a batch whose input offsets it had not committed); the log
sink makes the log exactly-once by its unique key and its offsets-after-commit rule.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from govbus.consumers.delivery_log import verify
from govbus.core import db
from govbus.core.catalogue import Catalogue
from govbus.core.config import Settings
from govbus.core.kafka import ensure_topics
from govbus.producers.publisher import Change, Publisher
from govbus.stream_apps.gate import Gate
from govbus.stream_apps.routing import DELIVERY_TOPIC
from tests.integration.helpers import TopicReader, wait_until
from tests.integration.test_router import TAX, agency, company, grant

ROOT = Path(__file__).resolve().parents[2]
N = 1200


class Processes:
    """The router and the sink as child processes, restartable, killed at teardown."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.env = os.environ | {"KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
                                 "DATABASE_URL": settings.database_url,
                                 "GOVBUS_GRANT_REFRESH_S": "0.5"}
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, module: str) -> None:
        with open(self.logs / f"{name}.log", "ab") as out:
            self.procs[name] = subprocess.Popen([sys.executable, "-m", module], env=self.env,
                                                stdout=out, stderr=out, cwd=ROOT)

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.kill()
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def processes(settings: Settings, tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(settings, tmp_path)
    yield procs
    procs.stop_all()


HELD_BACK = 2 * N // 3  # events published before the feed waits for the kills


def further(dsn: str, recipient: str, more: int = 100) -> int:
    """A count of logged deliveries to wait for before the next kill: ``more`` than now, but
    never beyond what is published before the kills (a fast worker may have logged nearly all
    of it already; waiting for more would wait for the feed, which waits for the kill)."""
    return min(len(logged(dsn, recipient)) + more, HELD_BACK)


def paced_feed(settings: Settings, rng: random.Random, published: list[str],
               kills: list[threading.Event]) -> None:
    """N tax creates in paced batches of 50, the last third held back until every event of
    ``kills`` is set, so that the crashes land mid-stream, with work before and after."""
    publisher = Publisher(settings)
    for batch in range(N // 50):
        if batch * 50 == HELD_BACK:
            for killed in kills:
                killed.wait(120)
        changes = [Change("c", company(rng)) for _ in range(50)]
        published.extend(publisher.publish("tax", "tax_registration", changes).event_ids)
        time.sleep(0.2)  # paces the feed; nothing waits on it


def logged(dsn: str, recipient: str) -> list[tuple[str, str]]:
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT event_id, channel FROM deliveries WHERE recipient = %s",
                    (recipient,))
        return [tuple(r) for r in cur.fetchall()]


def test_router_and_sink_killed_mid_stream_log_every_delivery_once(
        settings: Settings, catalogue: Catalogue, processes: Processes, tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    rng = random.Random(uuid.uuid4().int)
    recipient = agency("restart")
    grant(catalogue, settings.database_url, recipient, TAX, ["uscc", "taxpayer_name"])
    topic = f"deliver.{recipient}.tax_registration"
    ensure_topics(settings, [topic, DELIVERY_TOPIC])
    inbox = TopicReader(settings, [topic])
    request.addfinalizer(inbox.close)  # however the test ends

    gate = Gate(settings, group=f"test-gate-{uuid.uuid4().hex[:8]}", batch=100)
    gate_thread = threading.Thread(target=gate.run, daemon=True)
    gate_thread.start()
    processes.start("router", "govbus.stream_apps.router")
    processes.start("sink", "govbus.consumers.delivery_log")

    published: list[str] = []

    router_killed, sink_killed = threading.Event(), threading.Event()

    feeder = threading.Thread(target=paced_feed, args=(
        settings, rng, published, [router_killed, sink_killed]), daemon=True)
    feeder.start()
    dsn = settings.database_url
    try:
        wait_until(lambda: len(logged(dsn, recipient)) >= 50, 90,
                   f"the first deliveries to be logged (logs in {tmp_path})")
        processes.kill("router")
        router_killed.set()
        at_router_kill = len(logged(dsn, recipient))
        target = further(dsn, recipient)
        processes.start("router", "govbus.stream_apps.router")
        wait_until(lambda: len(logged(dsn, recipient)) >= target, 90,
                   f"the restarted router's deliveries to be logged (logs in {tmp_path})")
        processes.kill("sink")
        sink_killed.set()
        at_sink_kill = len(logged(dsn, recipient))
        processes.start("sink", "govbus.consumers.delivery_log")
        assert at_sink_kill < N, "the kills came after the stream's end"
        feeder.join(120)
        assert len(published) == N
        wait_until(lambda: len(logged(dsn, recipient)) >= N, 120,
                   f"all {N} deliveries to be logged (logs in {tmp_path})")
    finally:
        gate.stop()
        gate_thread.join(30)

    rows = logged(dsn, recipient)
    assert sorted(e for e, _ in rows) == sorted(published)          # each exactly once
    assert {c for _, c in rows} == {"exchange"}

    def delivered() -> set[str]:
        return {json.loads(m.value() or b"{}")["event_id"] for m in inbox.poll()}

    # re-sends after the router's crash count too, so wait for the ids, not a number
    wait_until(lambda: delivered() >= set(published), 60, "every event on the deliver topic")
    assert delivered() == set(published)                             # none lost, none foreign
    report = verify(dsn)
    assert report.ok, report.lines()
    print(f"\nrestarts: {N} events; router killed at {at_router_kill} logged, sink at "
          f"{at_sink_kill}; {len(rows)} log rows, {len(inbox.messages)} messages delivered "
          f"(re-sends after the router's crash: {len(inbox.messages) - N}); chain intact")
