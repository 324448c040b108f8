"""Smoke test of the pipeline bench's harness, tiny N: one worker process (gate,
router, delivery-log sink, reconciler feed as threads) on the test's own broker and
database, the warm-up, a timed run and the latency probe. Figures are not checked (speed
belongs to ``make bench``), only that every delivery the grants imply is logged, once, in a
chain that verifies, and that the worker stopped cleanly."""

from __future__ import annotations

from pathlib import Path

from bench import pipeline_bench
from bench.env import Env
from bench.pipeline import Feeder, file_grants, log_head
from govbus import runtime
from govbus.consumers.delivery_log import verify
from govbus.core import db, registry
from govbus.core.catalogue import Catalogue
from govbus.core.config import Settings
from govbus.core.kafka import ensure_topics


def test_one_worker_logs_every_delivery_of_a_small_run(
        tmp_path: Path, bootstrap: str, empty_database: str, catalogue: Catalogue) -> None:
    lines: list[str] = []
    db.migrate(empty_database)  # a log of this test's own: the head counts only its rows
    registry.sync(empty_database, catalogue)
    settings = Settings(bootstrap, empty_database, catalogue.root, session_timeout_ms=6000,
                        partitions=3)
    ensure_topics(settings, runtime.catalogue_topics(catalogue))
    env = Env(empty_database, catalogue, settings)
    recipients = file_grants(env)
    assert recipients["public_security.population_register"] == 3
    assert recipients["civil_affairs.adoption_register"] == 0   # not shared: withheld
    assert recipients["civil_affairs.marriage_register"] == 0   # online query only
    feeder = Feeder(env, recipients)
    try:
        out = pipeline_bench.governed(env, feeder, 1, 300, "smoke", tmp_path,
                                      lines.append, latency=(200.0, 1.0), repeats=2)
    finally:
        feeder.close()
    rows = log_head(env.database_url)
    report = verify(env.database_url)
    assert out["e2e"].events == 300 and out["e2e"].seconds > 0
    p50, p99, samples, rate = out["latency"]
    assert 0 <= p50 <= p99 and samples > 0 and rate == 200.0
    assert report.ok and report.rows == rows
    assert rows >= 2 * 300 * out["deliveries_per_event"] * 0.9  # both timed runs logged
    assert sum("run 2 of 2" in line for line in lines) == 1
    assert any("median" in line for line in lines)
    assert not [line for line in lines if "worker problems" in line], lines
