"""``govbus up`` under crashes, as a user runs it: real broker, real PostgreSQL, real
supervisord, and ``kill -9``.

- A stream app that dies is restarted by the supervisor, without ``govbus up``, and
  ``govbus status --json`` counts the restart for that app and for no other.
- PostgreSQL killed: ``govbus up`` restarts PostgreSQL alone, on its data directory and URL;
  the memory-only broker keeps its pid and port, so the events acknowledged to producers before
  and during the outage are still gated and logged, each once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from govbus.core import db
from govbus.core.catalogue import load_catalogue
from govbus.core.config import Settings
from govbus.delivery_log import verify
from govbus.producers.publisher import Change, Publisher
from govbus.runtime import STREAM_APPS
from tests.integration.govbus.test_cli import govbus
from tests.integration.helpers import TopicReader, wait_until
from tests.integration.stream_apps.test_routing import TAX, agency, company, grant


class Runtime:
    """A ``govbus up`` in its own state dir; ``down`` at teardown, however the test ends."""

    def __init__(self, base: Path) -> None:
        self.env = {"GOVBUS_STATE_DIR": str(base), "GOVBUS_GRANT_REFRESH_S": "0.5"}

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return govbus(*args, env=self.env)

    def up(self) -> subprocess.CompletedProcess[str]:
        out = self.run("up")
        assert out.returncode == 0, out.stdout + out.stderr
        return out

    def status(self) -> dict[str, Any]:
        return json.loads(self.run("status", "--json").stdout)  # type: ignore[no-any-return]


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    rt = Runtime(tmp_path / "state")
    try:
        yield rt
    finally:
        down = rt.run("down")
        if down.returncode != 0:  # the command itself broken: stop the runtime all the same
            from govbus import runtime as embedded

            monkeypatch.setenv("GOVBUS_STATE_DIR", rt.env["GOVBUS_STATE_DIR"])
            embedded.down(say=lambda _m: None)
        assert down.returncode == 0, down.stdout + down.stderr


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.split(")")[-1].split()[0] != "Z"


def test_a_killed_stream_app_is_restarted_by_the_supervisor_and_counted(
        runtime: Runtime) -> None:
    runtime.up()
    before = runtime.status()
    assert before["up"], before
    assert {n: before["components"][n]["restarts"] for n in STREAM_APPS} == {
        n: 0 for n in STREAM_APPS}
    victim = before["components"]["reconciler"]["pid"]
    os.kill(victim, signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        now = runtime.status()
        app = now["components"]["reconciler"]
        return now if app["restarts"] == 1 and app["state"] == "RUNNING" and \
            app["pid"] != victim else None

    after = wait_until(restarted, 45, "the supervisor to restart the reconciler")
    assert not alive(victim)
    assert after["up"] and after["restarts"] == {"reconciler": 1}
    assert {n: after["components"][n]["restarts"] for n in STREAM_APPS} == {
        n: int(n == "reconciler") for n in STREAM_APPS}
    unchanged = [n for n in after["components"] if n != "reconciler"]
    assert {n: after["components"][n]["pid"] for n in unchanged} == {
        n: before["components"][n]["pid"] for n in unchanged}
    text = runtime.run("status")
    assert text.returncode == 0 and "restarts 1" in text.stdout

    again = runtime.up()  # nothing is down: up restarts nothing, and says so
    assert "nothing restarted" in again.stdout
    assert runtime.status()["components"]["reconciler"]["pid"] == after["components"][
        "reconciler"]["pid"]


def logged(dsn: str, recipient: str) -> list[str]:
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT event_id FROM deliveries WHERE recipient = %s", (recipient,))
        return [r[0] for r in cur.fetchall()]


def test_postgres_killed_up_restarts_it_alone_and_keeps_the_broker_and_its_events(
        runtime: Runtime) -> None:
    runtime.up()
    before = runtime.status()
    assert before["up"], before
    dsn, bootstrap = before["database_url"], before["bootstrap_servers"]
    catalogue = load_catalogue()
    # the runtime's state folder: the sample keys `up` generated and registered
    settings = Settings(bootstrap, dsn, catalogue.root, state_dir=Path(before["state_dir"]))
    recipient = agency("supervision")
    grant(catalogue, dsn, recipient, TAX, ["uscc", "taxpayer_name"])
    rng = random.Random(uuid.uuid4().int)
    publisher = Publisher(settings)
    validated = TopicReader(settings, ["validated.tax.tax_registration"])
    try:
        probes: list[str] = []

        def grant_seen() -> bool:  # the hot path refreshes its grants every 0.5 s
            probes.extend(publisher.publish("tax", "tax_registration",
                                            [Change("c", company(rng))]).event_ids)
            return bool(logged(dsn, recipient))

        wait_until(grant_seen, 60, "the hot path to route under the new grant", step=0.5)
        first = publisher.publish("tax", "tax_registration",
                                  [Change("c", company(rng)) for _ in range(300)])
        assert first.published == 300 and not first.failed
        os.kill(before["components"]["postgres"]["pid"], signal.SIGKILL)
        wait_until(lambda: not alive(before["components"]["postgres"]["pid"]), 10,
                   "PostgreSQL to die")
        # the broker still acknowledges while the database is down
        during = publisher.publish("tax", "tax_registration",
                                   [Change("c", company(rng)) for _ in range(200)])
        assert during.published == 200 and not during.failed

        mended = runtime.up()
        assert "restarted: postgres\n" in mended.stdout, mended.stdout
        assert "PostgreSQL (embedded" in mended.stdout and "BROKER LOST" not in mended.stdout
        after = runtime.status()
        assert after["up"], after
        assert after["components"]["broker"]["pid"] == before["components"]["broker"]["pid"]
        assert after["bootstrap_servers"] == bootstrap and after["database_url"] == dsn
        assert after["components"]["postgres"]["pid"] != before["components"]["postgres"]["pid"]
        assert after["components"]["supervisord"]["pid"] == before["components"][
            "supervisord"]["pid"]

        wanted = set(probes) | set(first.event_ids) | set(during.event_ids)
        wait_until(lambda: set(logged(dsn, recipient)) >= wanted, 120,
                   f"all {len(wanted)} events to be logged (logs in {after['state_dir']})")
        rows = logged(dsn, recipient)
        assert sorted(rows) == sorted(wanted)  # each exactly once, nothing foreign

        def gated() -> set[str]:
            ids = (dict(m.headers() or []).get("event_id") for m in validated.poll())
            return {i.decode() if isinstance(i, bytes) else str(i) for i in ids}

        wait_until(lambda: gated() >= wanted, 60, "every event on the validated topic")
        report = verify(dsn)
        assert report.ok, report.lines()
        print(f"\npostgres killed: {len(wanted)} events, {len(during.event_ids)} of them "
              f"published while it was down; supervisor restarts {runtime.status()['restarts']}")
    finally:
        validated.close()
        publisher.close()


def test_supervisord_killed_then_broker_killed_up_restarts_each_and_down_leaves_nothing(
        runtime: Runtime) -> None:
    from govbus.runtime import supervised_orphans

    runtime.up()
    before = runtime.status()
    apps = {n: before["components"][n]["pid"] for n in STREAM_APPS}
    os.kill(before["components"]["supervisord"]["pid"], signal.SIGKILL)
    wait_until(lambda: not runtime.status()["components"]["supervisord"]["alive"], 10,
               "status to see supervisord gone")
    mended = runtime.up()
    assert "supervisord started again (supervisord had stopped)" in mended.stdout
    assert "BROKER LOST" not in mended.stdout
    after = runtime.status()
    assert after["up"], after
    assert after["components"]["broker"]["pid"] == before["components"]["broker"]["pid"]
    assert after["components"]["postgres"]["pid"] == before["components"]["postgres"]["pid"]
    assert not any(alive(pid) for pid in apps.values())  # no app runs twice
    assert all(after["components"][n]["pid"] not in apps.values() for n in STREAM_APPS)

    broker = after["components"]["broker"]["pid"]
    os.kill(broker, signal.SIGKILL)
    wait_until(lambda: not alive(broker), 10, "the broker to die")
    lost = runtime.up()
    assert "!! BROKER LOST" in lost.stdout, lost.stdout
    for what in ("acknowledged to producers but not yet judged", "consumer offsets",
                 "re-send what they published since", "Deliveries already logged stay"):
        assert what in lost.stdout, what
    assert "restarted: broker, supervisord" in lost.stdout
    final = runtime.status()
    assert final["up"], final
    assert final["bootstrap_servers"] == before["bootstrap_servers"]  # the port was free
    assert final["components"]["broker"]["pid"] != broker
    assert final["components"]["postgres"]["pid"] == before["components"]["postgres"]["pid"]

    seen = [c["pid"] for c in final["components"].values()]
    down = runtime.run("down")
    assert down.returncode == 0 and down.stdout.count("stopped ") == len(seen)
    wait_until(lambda: not any(alive(pid) for pid in seen), 10, "every process to be gone")
    assert supervised_orphans(Path(final["state_dir"])) == []
    assert runtime.status() == {"up": False, "state_dir": final["state_dir"]}
