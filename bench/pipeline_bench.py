"""Benchmark 4: the governed pipeline end to end, against the peers a user could pick instead.

Runs on its own fresh broker and scratch database (``bench.env``), so every record on the
topics belongs to it. Grants in force (:data:`bench.pipeline.REQUESTS`) route each event to
zero to three agencies: unconditional, on application with projection and masking, not shared
(withheld). In order:

1. **1 worker**: one process running the hot path (gate, router, reconcile feed and delivery
   log in one pass, as ``govbus up`` runs it) and the cases sink as threads, the faust
   reconciler beside it. Warm-up; **latency** at a fixed offered load (1,000
   events/s by default): publish time in the envelope (``ts_ms``, stamped at send) to the
   delivered record's timestamp on ``deliver.*``; then N events (about 2% bad, so the DLQ
   path runs) fed at full speed, clock from the first event produced to the last of their
   deliveries logged.
2. **2 workers**: two such processes in the same consumer groups, N fresh events.
3. **stage capacities**, each in a forked process from the first record consumed to the
   commit of the N-th: the router alone over ``validated.*``; the delivery-log sink alone
   over ``govbus.deliveries``, filled with the logged deliveries of steps 1-2 as delivery
   records (log emptied first: its chain is verified before).
4. **outbox adapter** (:mod:`bench.outbox_bench`).
5. **baselines** (:mod:`bench.peers`) over the first N records of the same ingest topics.

Every throughput figure is printed with its ratio to each baseline of this run.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from govbus.consumers.delivery_log import DeliveryLogSink, verify
from govbus.core import db
from govbus.core.batching import produce, tune_gc
from govbus.core.kafka import consumer_config, ensure_topics, producer_config
from govbus.stream_apps.router import Router, json_bytes
from govbus.stream_apps.routing import DELIVERY_TOPIC

from . import outbox_bench, peers, workload
from .env import Env
from .gate_bench import timed_loop
from .pipeline import (
    Feeder,
    catalogue_ingest,
    file_grants,
    log_head,
    paced_feed,
    timed_feed,
    wait_log,
)
from .pipeline import workers as start_workers
from .report import (
    BenchError,
    Result,
    Say,
    cores_busy,
    isolated,
    machine_seconds,
    median,
    rates,
)
from .summary import Figures, reconciler_figure, summarise

TIMEOUT = 300.0


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by the nearest-rank method."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def delivered_latencies(env: Env, ids: set[str], expected: int) -> list[float]:
    """ms from envelope ``ts_ms`` to the deliver record's timestamp, for events in ``ids``."""
    consumer = Consumer(consumer_config(env.broker, f"bench-latency-{uuid.uuid4().hex[:8]}"))
    out: list[float] = []
    try:
        meta = consumer.list_topics(timeout=10)
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, m in meta.topics.items()
                         if t.startswith("deliver.") for p in m.partitions])
        deadline, idle = time.monotonic() + 60, 0
        while len(out) < expected and time.monotonic() < deadline and idle < 6:
            msgs = consumer.consume(2000, 0.5)
            idle = 0 if msgs else idle + 1
            for m in msgs:
                if m.error():
                    continue
                value = json.loads(m.value() or b"{}")
                if value.get("event_id") in ids:
                    out.append(m.timestamp()[1] - value["published_ms"])
    finally:
        consumer.close()
    if len(out) < expected:
        raise BenchError(f"latency: found {len(out)} of {expected} deliveries")
    return out


def governed(env: Env, feeder: Feeder, workers: int, n: int, group: str, logs: Path,
             say: Say, latency: tuple[float, float] | None = None, repeats: int = 1
             ) -> dict[str, Any]:
    """``repeats`` timed runs of ``n`` fresh events with ``workers`` processes (the figure: the
    median run); with ``latency`` (rate, seconds) first the fixed-load latency phase."""
    out: dict[str, Any] = {}
    batches = [feeder.encode(workload.items(n, 0.02, seed=2018 + workers + 1000 * r))
               for r in range(repeats)]
    batch = batches[0]
    with start_workers(env, workers, group, logs, say) as procs:
        rounds = feeder.warm_up(procs)
        say(f"  {workers} worker(s) started ({procs[0].stages}); warm after {rounds} round(s) "
            "of 300 events")
        if latency:  # first, while the worker is idle: no backlog of the bulk run in the way
            rate, duration = latency
            items = workload.items(int(rate * duration), 0.02, seed=99)
            ids: set[str] = set()
            target = log_head(env.database_url)
            deliveries = paced_feed(feeder, items, rate, lambda e: ids.add(e.event_id))
            wait_log(env.database_url, target + deliveries, 60, "latency run")
            lat = delivered_latencies(env, ids, deliveries)
            out["latency"] = (percentile(lat, 0.5), percentile(lat, 0.99), len(lat), rate)
            say(f"  latency at {rate:,.0f} events/s offered for {duration:.0f} s: p50 "
                f"{out['latency'][0]:.0f} ms, p99 {out['latency'][1]:.0f} ms, max "
                f"{max(lat):.0f} ms, mean {statistics.fmean(lat):.0f} ms over {len(lat)} "
                "deliveries")
        runs: list[Result] = []
        for r, timed in enumerate(batches, 1):
            busy = machine_seconds()
            seconds, fed = timed_feed(feeder, timed, env.database_url, TIMEOUT)
            after = machine_seconds()
            cores = cores_busy(busy, after, seconds)
            runs.append(Result(f"governed, {workers} worker(s)", n, seconds, busy_cores=cores))
            say(f"  {workers} worker(s), run {r} of {repeats}: {n} events ({timed.bad} bad → "
                f"DLQ) → {timed.deliveries} deliveries logged in {seconds:.2f} s = "
                f"{n / seconds:,.0f} events/s (feeding took {fed:.2f} s"
                + (f"; {cores:.2f} of {os.cpu_count()} cores busy" if cores is not None else "")
                + ")")
        out["e2e"] = median(runs)
        if repeats > 1:
            say(f"  {workers} worker(s): median {out['e2e'].rate:,.0f} events/s "
                f"(runs: {rates(runs)})")
    out["deliveries_per_event"] = batch.deliveries / max(1, n - batch.bad)
    return out


def reset_log(dsn: str) -> None:
    """Empty the scratch database's delivery log, so the sink alone writes every row anew."""
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("TRUNCATE deliveries CASCADE")
        cur.execute("UPDATE delivery_log_head SET seq = 0, row_hash = repeat('0', 64), "
                    "logged_at = NULL WHERE id = 1")


def log_as_records(env: Env, limit: int) -> int:
    """Produce the first ``limit`` logged deliveries to ``govbus.deliveries`` as the delivery
    records the split router (and online queries) send the log sink; returns how many."""
    with db.transaction(env.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT event_id, channel, provider, recipient, resource_id, grant_id, "
                    "fields, masked_fields, topic, kafka_partition, kafka_offset, "
                    "floor(extract(epoch FROM delivered_at) * 1000)::bigint "
                    "FROM deliveries ORDER BY seq LIMIT %s", (limit,))
        rows = cur.fetchall()
    producer = Producer(producer_config(env.broker, **{"linger.ms": 20}))
    keys = ("event_id", "channel", "provider", "recipient", "resource", "grant_id", "fields",
            "masked_fields", "topic", "partition", "offset", "delivered_ms")
    ensure_topics(env.broker, [DELIVERY_TOPIC])
    for row in rows:
        record = dict(zip(keys, row, strict=True))
        produce(producer, DELIVERY_TOPIC, str(record["event_id"]), json_bytes(record), None)
    if producer.flush(60):
        raise BenchError("log sink alone: delivery records not acknowledged")
    return len(rows)


def stage_capacities(env: Env, n: int, records: int, say: Say, repeats: int = 1
                     ) -> tuple[Result, Result]:
    """The router alone over ``validated.*``; the log sink alone over ``govbus.deliveries``
    (filled from the governed runs' log, since the hot path logs without that topic). Each
    the median of ``repeats`` runs, each in a group of its own (the sink into an emptied log
    every time): one run on these shared cores moved its figure by half."""
    report = verify(env.database_url)
    rows = log_head(env.database_url)
    if not report.ok:
        raise BenchError(f"the delivery log of the governed runs does not verify: {report}")
    records = log_as_records(env, records)
    say(f"  delivery log of the governed runs: {rows} rows, hash chain verified; the first "
        f"{records} sent to govbus.deliveries as delivery records, then the log emptied for "
        "each sink-alone run")
    sinks, routers = [], []
    for _ in range(repeats):
        reset_log(env.database_url)
        sinks.append(isolated(partial(_sink_alone, env, records)))
        written = log_head(env.database_url)
        if written < records:
            raise BenchError(f"sink alone: {written} rows written for {records} records")
    for _ in range(repeats):
        routers.append(isolated(partial(_router_alone, env, n)))
    if repeats > 1:
        say(f"  router alone runs: {rates(routers)} events/s; log sink alone runs: "
            f"{rates(sinks)} rows/s")
    return median(routers), median(sinks)


def _sink_alone(env: Env, records: int) -> Result:
    group = f"bench-sink-{uuid.uuid4().hex[:8]}"
    return timed_loop("delivery-log sink alone (rows)",
                      lambda: _served(DeliveryLogSink(env.broker, group=group)), records)


def _router_alone(env: Env, n: int) -> Result:
    group = f"bench-router-{uuid.uuid4().hex[:8]}"
    return timed_loop("router alone (events)",
                      lambda: _served(Router(env.broker, group=group)), n)


def _served(stage: Any) -> Any:
    """``stage`` as ``serve()`` runs it: built, then the collector tuned."""
    tune_gc()
    return stage


def run(env: Env, n: int, say: Say, latency_rate: float = 1000.0,
        latency_seconds: float = 10.0, outbox_rows: int | None = None,
        reconcile: list[str] | None = None, repeats: int = 3) -> Figures:
    """The whole pipeline benchmark; ``reconcile``: the lines the reconciler's memory
    benchmark printed in this run, if it ran (its figure goes into the summary)."""
    say(f"\n== 4. governed pipeline: {n} events per run, {len(list(env.catalogue))} ingest "
        f"topics x {env.broker.partitions} partitions")
    recipients = file_grants(env)
    say("  grants in force, recipients per event: " + ", ".join(
        f"{rid} {k}" for rid, k in recipients.items()))
    figures = Figures(n=n, reconcile=reconciler_figure(reconcile or []))
    group = f"bench-gov-{uuid.uuid4().hex[:8]}"
    feeder = Feeder(env, recipients)
    try:
        with tempfile.TemporaryDirectory(prefix="govbus-bench-workers-") as tmp:
            one = governed(env, feeder, 1, n, group, Path(tmp), say,
                           latency=(latency_rate, latency_seconds), repeats=repeats)
            two = governed(env, feeder, 2, n, group, Path(tmp), say, repeats=repeats)
    finally:
        feeder.close()
        del feeder  # no client alive in this process when the next phases fork
    figures.one, figures.two = one["e2e"], two["e2e"]
    figures.latency = one.get("latency")
    figures.deliveries_per_event = one["deliveries_per_event"]
    records = min(log_head(env.database_url), int(n * figures.deliveries_per_event))
    figures.router, figures.sink = stage_capacities(env, n, records, say, repeats)
    say(f"  router alone {figures.router.rate:,.0f} events/s "
        f"(× {figures.deliveries_per_event:.2f} deliveries each = "
        f"{figures.router.rate * figures.deliveries_per_event:,.0f} delivery records/s); "
        f"log sink alone {figures.sink.rate:,.0f} rows/s")
    figures.outbox = outbox_bench.run(env, outbox_rows or max(1000, n // 4), say)
    say(f"  baselines over the first {n} records of the same ingest topics:")
    figures.peers = peers.measure(env.broker, catalogue_ingest(env.catalogue), n, say,
                                  repeats=repeats)
    summarise(figures, say)
    return figures
