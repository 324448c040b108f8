"""Helpers for the tests that kill stream apps mid-stream (SIGKILL) and restart them: the
apps run as their own processes, as under ``govbus up``, so that ``kill -9`` is a real crash
(no flush, no commit, no goodbye), fed by a paced stream of tax registrations."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from govbus.core import db
from govbus.core.config import Settings
from govbus.producers.publisher import Change, Publisher
from tests.integration.stream_apps.test_routing import company

ROOT = Path(__file__).resolve().parents[2]
N = 1200


class Processes:
    """Stream apps as child processes, restartable, killed at teardown."""

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
