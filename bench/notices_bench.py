"""Benchmark: how long a provider waits for its notice (Art. 18(1)) — from an unconditional
request filed (``sharing_store.file_request``) to the notice read from
``notices.<provider>`` — with the duties app as its own process (``python -m govbus.duties``,
as under ``govbus up``), on an embedded Tansu broker and a scratch database on the local
PostgreSQL (dropped afterwards).

The first request includes the app's start and its first group join; the next ``--requests``
are filed one after another, each timed alone. Prints the first, the median and the worst.

``python -m bench.notices_bench [--requests 20] [--admin-dsn URL]`` (about 30 s).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from confluent_kafka import Consumer

from govbus import runtime
from govbus.core import db, registry, sharing_store, topics
from govbus.core.catalogue import load_catalogue
from govbus.core.config import Settings
from govbus.core.kafka import consumer_config

ROOT = Path(__file__).resolve().parents[1]
POPULATION = "public_security.population_register"  # unconditional (Art. 15)


def main() -> None:
    from govbus.stream_apps.duties.app import prepare
    from tests.integration.conftest import register_sample_keys, scratch_database
    from tests.integration.helpers import commitment

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    catalogue = load_catalogue()
    with scratch_database(args.admin_dsn) as dsn, tempfile.TemporaryDirectory() as tmp:
        db.migrate(dsn)
        registry.sync(dsn, catalogue)
        register_sample_keys(dsn)
        bootstrap, broker = runtime.start_broker(Path(tmp), runtime.free_port(29300))
        settings = Settings(bootstrap, dsn, catalogue.root, session_timeout_ms=6000,
                            partitions=3)
        prepare(settings, sorted(catalogue.agencies))
        env = os.environ | {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "DATABASE_URL": dsn}
        env.pop("GOVBUS_METRICS_PORT", None)
        with open(Path(tmp) / "duties.log", "wb") as log:
            app = subprocess.Popen([sys.executable, "-m", "govbus.duties"], env=env,
                                   stdout=log, stderr=log, cwd=ROOT)
        reader = Consumer(consumer_config(settings, f"bench-{uuid.uuid4().hex[:8]}"))
        reader.subscribe([topics.notices("public_security")])
        pledge = commitment(dsn, "tax", POPULATION)
        waits = []
        try:
            for _ in range(args.requests + 1):
                started = time.monotonic()
                out = sharing_store.file_request(dsn, catalogue.resources[POPULATION], "tax",
                                                 "tax registration checks", None, pledge)
                subject = f"request:{out['request_id']}"
                while True:
                    if time.monotonic() - started > 60:
                        raise SystemExit(f"no notice for {subject} within 60 s; see the log")
                    msgs = [m for m in reader.consume(100, 0.05) if not m.error()]
                    if any(orjson.loads(m.value() or b"{}").get("subject") == subject
                           for m in msgs):
                        break
                waits.append(time.monotonic() - started)
        finally:
            reader.close()
            app.kill()
            app.wait(10)
            runtime.stop_pid(broker, signal.SIGKILL)
    rest = waits[1:]
    print(f"first notice (the app's start and group join included): {waits[0]:.2f} s")
    print(f"next {len(rest)}: median {statistics.median(rest) * 1e3:.0f} ms, at most "
          f"{max(rest) * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
