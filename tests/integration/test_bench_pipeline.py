"""Smoke tests of the bench's harnesses, tiny N, on the test's own broker and database.
Figures are not checked (speed belongs to ``make bench``), only that what is timed is done.

- The pipeline: one worker process (the hot path and the cases sink as threads, the
  reconciler beside it), the warm-up, two timed runs and the latency probe: every delivery
  the grants imply is logged, once, in a chain that verifies, and the worker stopped cleanly.
- The gate benchmark: the baseline loop and the hot path with no grants, each timed to the
  batch that completes N; every event reached ``validated.*`` or ``dlq.*`` and the hot path's
  clock stopped only once every batch was settled (each accepted event id kept, each rejected
  payload quarantined)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bench import gate_bench, pipeline_bench
from bench.env import Env
from bench.pipeline import Feeder, file_grants, log_head
from govbus import runtime
from govbus.core import db, registry
from govbus.core.catalogue import Catalogue
from govbus.core.config import Settings
from govbus.core.kafka import ensure_topics
from govbus.delivery_log import verify


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


def test_gate_bench_times_the_hot_path_to_its_last_settled_batch(
        tansu: Any, empty_database: str, catalogue: Catalogue) -> None:
    """Its own broker (the ``tansu`` fixture, even with KAFKA_BOOTSTRAP_SERVERS set): the
    benchmark reads the ingest topics from the beginning and counts every output."""
    lines: list[str] = []
    db.migrate(empty_database)
    registry.sync(empty_database, catalogue)
    settings = Settings(tansu.bootstrap, empty_database, catalogue.root, session_timeout_ms=6000,
                        partitions=3)
    ensure_topics(settings, runtime.catalogue_topics(catalogue))
    gate_bench.run(Env(empty_database, catalogue, settings), 400, lines.append)
    text = "\n".join(lines)
    row = next(line for line in lines if "hot path, no grants" in line)
    assert row[2 + 36:].split()[0] == "400", text  # the events column, after the name
    counted = next(line for line in lines if "counted by consuming" in line)
    bad = int(counted.split("(expected ")[1].split(" + ")[1].rstrip(")"))
    assert 0 < bad < 400 and counted.endswith(f"(expected {400 - bad} + {bad})"), counted
    with db.transaction(empty_database) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM accepted_events")
        accepted = cur.fetchone()
        cur.execute("SELECT count(*) FROM quarantine")
        quarantined = cur.fetchone()
    assert accepted is not None and quarantined is not None
    assert (accepted[0], quarantined[0]) == (400 - bad, bad)  # every batch settled
    assert "settling process" in text and "peak RSS" in text


def test_gate_bench_refuses_to_run_with_grants_in_force(
        empty_database: str, catalogue: Catalogue) -> None:
    db.migrate(empty_database)
    registry.sync(empty_database, catalogue)
    settings = Settings("127.0.0.1:9", empty_database, catalogue.root)  # never reached
    env = Env(empty_database, catalogue, settings)
    file_grants(env)
    with pytest.raises(gate_bench.BenchError, match="grants are in force"):
        gate_bench.run(env, 400, lambda _line: None)


class _Record:
    def error(self) -> None:
        return None


def test_the_clock_of_a_pipelined_stage_stops_when_its_batches_are_settled() -> None:
    """Its ``process`` returns once a batch is decided; the batch is done when settled."""
    settled: list[int] = []
    stage = SimpleNamespace(process=lambda msgs: None,
                            settle=lambda msgs, decided: settled.append(len(msgs)))
    clock = gate_bench.Clock(4)
    clock.wrap_pipelined(stage)  # type: ignore[arg-type]
    batch = [_Record(), _Record()]
    stage.process(batch)
    stage.process(batch)
    assert clock.first > 0 and clock.count == 0 and not clock.done.is_set()  # decided only
    stage.settle(batch, None)
    assert clock.count == 2 and not clock.done.is_set()
    stage.settle(batch, None)
    assert settled == [2, 2] and clock.count == 4 and clock.done.is_set()
    assert clock.last >= clock.first
