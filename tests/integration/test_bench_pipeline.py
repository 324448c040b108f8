"""Smoke tests of the bench's harnesses, tiny N, on the test's own broker and database.
Figures are not checked (speed belongs to ``make bench``), only that what is timed is done.

- The pipeline: one worker process (the hot path and the cases sink as threads, the
  reconciler beside it), the warm-up, two timed runs and the latency probe, the events
  signed by their agencies' keys and verified: every delivery the grants imply is logged,
  once, in a chain that verifies, and the worker stopped cleanly. Then the comparison without
  signatures, alternating (signed, unsigned, signed sessions of one worker): unsigned events
  through a worker started ``--unsigned`` are delivered too, unsigned, and the signed ones
  carry the bus's signature.
- The gate benchmark: the baseline loop and the hot path with no grants, each timed to the
  batch that completes N; every event reached ``validated.*`` or ``dlq.*`` and the hot path's
  clock stopped only once every batch was settled (each accepted event id kept, each rejected
  payload quarantined)."""

from __future__ import annotations

import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from bench import gate_bench, pipeline_bench, workload
from bench.env import Env
from bench.pipeline import Feeder, file_grants, log_head
from govbus import runtime
from govbus.core import db, keyring, registry
from govbus.core.catalogue import Catalogue
from govbus.core.config import Settings
from govbus.core.kafka import consumer_config, ensure_topics
from govbus.core.signatures import SIG_HEADER
from govbus.delivery_log import verify
from tests.integration.conftest import register_sample_keys


def scratch_env(bootstrap: str, dsn: str, catalogue: Catalogue) -> Env:
    """The test's own log and keys (the session's pairs, registered in ``dsn``), its topics."""
    db.migrate(dsn)  # a log of this test's own: the head counts only its rows
    registry.sync(dsn, catalogue)
    register_sample_keys(dsn)
    settings = Settings(bootstrap, dsn, catalogue.root, session_timeout_ms=6000, partitions=3)
    ensure_topics(settings, runtime.catalogue_topics(catalogue))
    return Env(dsn, catalogue, settings)


def delivered_signatures(settings: Settings) -> dict[str, bool]:
    """Each delivered record's event id: whether it carries the bus's signature."""
    consumer = Consumer(consumer_config(settings, f"bench-test-{uuid.uuid4().hex[:8]}"))
    found: dict[str, bool] = {}
    try:
        meta = consumer.list_topics(timeout=10)
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, m in meta.topics.items()
                         if t.startswith("deliver.") for p in m.partitions])
        idle = 0
        while idle < 4:
            msgs = [m for m in consumer.consume(2000, 0.5) if not m.error()]
            idle = 0 if msgs else idle + 1
            for m in msgs:
                headers = dict(m.headers() or [])
                found[headers["event_id"].decode()] = SIG_HEADER in headers
    finally:
        consumer.close()
    return found


def test_one_worker_logs_every_delivery_of_a_small_run(
        tmp_path: Path, bootstrap: str, empty_database: str, catalogue: Catalogue) -> None:
    lines: list[str] = []
    env = scratch_env(bootstrap, empty_database, catalogue)
    assert env.keys == Path(env.broker.state_dir) / keyring.KEYS_DIR
    assert (env.keys / f"{keyring.BUS}.key").exists()
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


def test_signed_and_unsigned_sessions_alternate_and_deliver(
        tmp_path: Path, bootstrap: str, empty_database: str, catalogue: Catalogue) -> None:
    lines: list[str] = []
    env = scratch_env(bootstrap, empty_database, catalogue)
    feeder = Feeder(env, file_grants(env))
    try:
        out = pipeline_bench.one_worker(env, feeder, 300, "smoke-signing", tmp_path,
                                        lines.append, (200.0, 1.0), repeats=2)
        signed = feeder.encode(workload.items(10, 0.0, seed=5))
        unsigned = feeder.encode(workload.items(10, 0.0, seed=6), signed=False)
    finally:
        feeder.close()
    text = "\n".join(lines)
    assert len(out["runs"]) == 2 and len(out["unsigned_runs"]) == 2, text
    assert out["e2e"].events == 300 and out["unsigned"].events == 300
    assert "latency" in out
    # run by run, alternating: S U, U S (three sessions: signed, unsigned twice, signed)
    order = [line.split(":")[0].strip() for line in lines if ", run " in line]
    assert order == ["1 worker(s), run 1 of 2", "1 worker(s), unsigned, run 1 of 2",
                     "1 worker(s), unsigned, run 2 of 2", "1 worker(s), run 2 of 2"], order
    assert sum("started (stages" in line for line in lines) == 3
    assert "(unsigned: no verification, no delivery signatures)" in text
    assert "1 worker with signatures" in lines[-1] and "(run by run: " in lines[-1]
    assert not [line for line in lines if "worker problems" in line], lines
    assert all(e.headers and dict(e.headers).get(SIG_HEADER) for e in signed.events)
    assert all(e.headers is None for e in unsigned.events)
    report = verify(env.database_url)
    assert report.ok and report.rows == log_head(env.database_url)
    marks = delivered_signatures(env.broker)
    assert True in marks.values() and False in marks.values()  # both kinds were delivered


def test_gate_bench_times_the_hot_path_to_its_last_settled_batch(
        tansu: Any, empty_database: str, catalogue: Catalogue) -> None:
    """Its own broker (the ``tansu`` fixture, even with KAFKA_BOOTSTRAP_SERVERS set): the
    benchmark reads the ingest topics from the beginning and counts every output."""
    lines: list[str] = []
    env = scratch_env(tansu.bootstrap, empty_database, catalogue)
    gate_bench.run(env, 400, lines.append)
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
