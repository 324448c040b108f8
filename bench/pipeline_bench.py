"""Benchmark 4: the governed pipeline end to end, against the peers a user could pick instead.

Runs on its own fresh broker and scratch database (``bench.env``), so every record on the
topics belongs to it. Grants in force (:data:`bench.pipeline.REQUESTS`) route each event to
zero to three agencies: unconditional, on application with projection and masking, not shared
(withheld). In order:

1. **1 worker**: one process running the hot path (judge, route, feed and settle in one pass,
   as ``govbus up`` runs it) and the cases sink as threads, the reconciler beside it. The
   events are signed by their agencies' keys (pre-signed by the feeder, as a publisher signs:
   the producer's cost, measured by ``bench.publish_bench`` and ``bench.signatures_bench``),
   the hot path verifies them and signs its deliveries with the bus's key.
   Warm-up; **latency** at a fixed offered load (1,000 events/s by default): publish time in
   the envelope (``ts_ms``, stamped at send) to the delivered record's timestamp on
   ``deliver.*``; then N events (about 2% bad, so the DLQ path runs) fed at full speed, clock
   from the first event produced to the last of their deliveries logged.
   **Without signatures**, alternating with it run by run (:func:`one_worker`): the same
   runs with unsigned events and a worker that neither verifies nor signs (``bench.worker
   --unsigned``, a switch of the benchmark only); the summary prints the signed figure's
   ratio to it against its target.
2. **2 workers**: two such processes in the same consumer groups, N fresh events.
3. the delivery log of both verified (its hash chain, every row).
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
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from govbus.core.deliveries import Decoder, database_lookup
from govbus.core.kafka import consumer_config
from govbus.delivery_log import verify

from . import outbox_bench, peers, workload
from .env import Env
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
    machine_seconds,
    median,
    rates,
)
from .summary import Figures, pair_ratios, reconciler_figure, summarise

TIMEOUT = 300.0


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by the nearest-rank method."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def delivered_latencies(env: Env, ids: set[str], expected: int) -> list[float]:
    """ms from envelope ``ts_ms`` to the deliver record's timestamp, for events in ``ids``."""
    consumer = Consumer(consumer_config(env.broker, f"bench-latency-{uuid.uuid4().hex[:8]}"))
    decode = Decoder(database_lookup(env.database_url))
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
                value = decode(m.value())
                if value.get("event_id") in ids:
                    out.append(m.timestamp()[1] - value["ts_ms"])
    finally:
        consumer.close()
    if len(out) < expected:
        raise BenchError(f"latency: found {len(out)} of {expected} deliveries")
    return out


def lock_waits(procs: list[Any]) -> list[float]:
    """Every worker's log-writer lock wait per batch (seconds), from its ``stopped`` line."""
    waits: list[float] = []
    for w in procs:
        try:
            waits += json.loads(w.stopped.removeprefix("stopped "))["lock_waits"]
        except (ValueError, KeyError, TypeError):
            continue
    return waits


def log_against_routing(procs: list[Any]) -> tuple[float, float] | None:
    """The workers' log writing and their judging and routing, in seconds summed over every
    batch (the ``log write us`` and ``decide us`` of their hot path's ``stopped`` stats); None
    when no worker reported them."""
    log_us = decide_us = 0
    for w in procs:
        try:
            stats = json.loads(w.stopped.removeprefix("stopped "))["stats"]["hotpath"]
        except (ValueError, KeyError, TypeError):
            continue
        log_us += int(stats.get("log write us", 0))
        decide_us += int(stats.get("decide us", 0))
    return (log_us / 1e6, decide_us / 1e6) if decide_us else None


def governed(env: Env, feeder: Feeder, workers: int, n: int, group: str, logs: Path,
             say: Say, latency: tuple[float, float] | None = None, repeats: int = 1,
             signed: bool = True, first: int = 1, of: int | None = None) -> dict[str, Any]:
    """``repeats`` timed runs of ``n`` fresh events with ``workers`` processes (the figure: the
    median run, ``out["e2e"]``; every run in ``out["runs"]``); with ``latency`` (rate,
    seconds) first the fixed-load latency phase. With ``signed`` False the events are fed
    unsigned and the workers neither verify nor sign (``bench.worker --unsigned``). The runs
    are numbered ``first`` onwards of ``of`` (all of them here, unless a figure's runs are
    spread over several sessions: :func:`one_worker`)."""
    out: dict[str, Any] = {}
    kind = "" if signed else ", unsigned"
    of = of or repeats
    offset = 0 if signed else 500  # other rows for the unsigned runs; each run its own
    batches = [feeder.encode(workload.items(n, 0.02, seed=2018 + workers + offset
                                            + 1000 * (first - 1 + r)), signed)
               for r in range(repeats)]
    batch = batches[0]
    with start_workers(env, workers, group, logs, say, unsigned=not signed) as procs:
        rounds = feeder.warm_up(procs, signed=signed)
        say(f"  {workers} worker(s){kind} started ({procs[0].stages}); warm after {rounds} "
            "round(s) of 300 events")
        if latency:  # first, while the worker is idle: no backlog of the bulk run in the way
            rate, duration = latency
            items = workload.items(int(rate * duration), 0.02, seed=99)
            ids: set[str] = set()
            target = log_head(env.database_url)
            deliveries = paced_feed(feeder, items, rate, lambda e: ids.add(e.event_id),
                                    signed)
            wait_log(env.database_url, target + deliveries, 60, "latency run")
            lat = delivered_latencies(env, ids, deliveries)
            out["latency"] = (percentile(lat, 0.5), percentile(lat, 0.99), len(lat), rate)
            say(f"  latency at {rate:,.0f} events/s offered for {duration:.0f} s: p50 "
                f"{out['latency'][0]:.0f} ms, p99 {out['latency'][1]:.0f} ms, max "
                f"{max(lat):.0f} ms, mean {statistics.fmean(lat):.0f} ms over {len(lat)} "
                "deliveries")
        runs: list[Result] = []
        for r, timed in enumerate(batches, first):
            busy = machine_seconds()
            seconds, fed = timed_feed(feeder, timed, env.database_url, TIMEOUT)
            after = machine_seconds()
            cores = cores_busy(busy, after, seconds)
            runs.append(Result(f"governed, {workers} worker(s){kind}", n, seconds,
                               busy_cores=cores))
            say(f"  {workers} worker(s){kind}, run {r} of {of}: {n} events ({timed.bad} bad "
                f"→ DLQ) → {timed.deliveries} deliveries logged in {seconds:.2f} s = "
                f"{n / seconds:,.0f} events/s (feeding took {fed:.2f} s"
                + (f"; {cores:.2f} of {os.cpu_count()} cores busy" if cores is not None else "")
                + ")")
        out["e2e"], out["runs"] = median(runs), runs
        if repeats > 1 and repeats == of:
            say(f"  {workers} worker(s){kind}: median {out['e2e'].rate:,.0f} events/s "
                f"(runs: {rates(runs)})")
    if workers > 1:
        out["lock_waits"] = waits = lock_waits(procs)
        if waits:  # a chain per ingest partition: disjoint partitions never wait
            say(f"  {workers} worker(s){kind}: the log writers waited for their shards' "
                f"locks {statistics.median(waits) * 1000:.2f} ms per batch (median), "
                f"{max(waits) * 1000:.2f} ms at most, over {len(waits)} batches")
    spent = log_against_routing(procs)
    if spent is not None:  # the log writer keeps up with routing (target: no more time)
        out["log_vs_routing"] = ratio = spent[0] / spent[1]
        say(f"  {workers} worker(s){kind}: the log writers took {spent[0]:.2f} s for what "
            f"judging and routing took {spent[1]:.2f} s: {ratio:.2f}x (target ≤ 1x: "
            f"{'met' if ratio <= 1 else 'MISSED'}; the log is written in the settling "
            "process, beside the next batches' routing)")
    out["deliveries_per_event"] = batch.deliveries / max(1, n - batch.bad)
    return out


def sessions(repeats: int) -> list[tuple[bool, int]]:
    """The order of the 1-worker runs, signed (True) and unsigned, as (signed, runs) sessions:
    pairs of runs, signed first in every other pair (S U, U S, S U, ...), adjacent runs of a
    kind in one session. Each signed run has an unsigned one beside it, so that a change of
    the machine's speed falls on both kinds alike; a linear drift cancels every two pairs."""
    kinds = [k for i in range(repeats) for k in ((True, False) if i % 2 == 0 else (False, True))]
    out: list[tuple[bool, int]] = []
    for k in kinds:
        if out and out[-1][0] == k:
            out[-1] = (k, out[-1][1] + 1)
        else:
            out.append((k, 1))
    return out


def one_worker(env: Env, feeder: Feeder, n: int, group: str, logs: Path, say: Say,
               latency: tuple[float, float], repeats: int) -> dict[str, Any]:
    """1 worker with signatures (the events signed by their agencies, verified by the hot
    path, the deliveries signed by the bus) and without them, ``repeats`` runs of each,
    alternating (:func:`sessions`: for 3, signed 1, unsigned 2, signed 2, unsigned 1), each
    session a fresh worker of the same consumer groups; the latency phase opens the first.
    Both figures are medians; the signed one is the 1-worker figure of every other target."""
    done: dict[bool, list[Result]] = {True: [], False: []}
    first: dict[str, Any] = {}
    for signed, count in sessions(repeats):
        out = governed(env, feeder, 1, n, group, logs, say,
                       latency=None if first else latency, repeats=count, signed=signed,
                       first=len(done[signed]) + 1, of=repeats)
        first = first or out
        done[signed] += out["runs"]
    runs, unsigned = done[True], done[False]
    out = {**first, "e2e": median(runs), "runs": runs, "unsigned": median(unsigned),
           "unsigned_runs": unsigned}
    for kind, got in (("", runs), (", unsigned", unsigned)):
        if repeats > 1:
            say(f"  1 worker(s){kind}: median {median(got).rate:,.0f} events/s "
                f"(runs: {rates(got)})")
    ratio = out["e2e"].rate / out["unsigned"].rate
    say(f"  1 worker with signatures {out['e2e'].rate:,.0f} events/s, without "
        f"{out['unsigned'].rate:,.0f} events/s: {ratio:.2f}x (run by run: "
        f"{pair_ratios(runs, unsigned)})")
    return out


def verify_log(env: Env, say: Say) -> None:
    """The governed runs' delivery log, every row re-hashed and checked against the chain."""
    report = verify(env.database_url)
    if not report.ok:
        raise BenchError(f"the delivery log of the governed runs does not verify: {report}")
    say(f"  delivery log of the governed runs: {report.rows} rows, hash chain verified")


def run(env: Env, n: int, say: Say, latency_rate: float = 1000.0,
        latency_seconds: float = 10.0, outbox_rows: int | None = None,
        reconcile: list[str] | None = None, repeats: int = 3,
        signing: str | None = None) -> Figures:
    """The whole pipeline benchmark; ``reconcile``: the lines the reconciler's memory
    benchmark printed in this run, if it ran (its figure goes into the summary); ``signing``:
    the per-record costs ``bench.signatures_bench`` measured in this run, if it ran."""
    say(f"\n== 4. governed pipeline: {n} events per run, {len(list(env.catalogue))} ingest "
        f"topics x {env.broker.partitions} partitions")
    recipients = file_grants(env)
    say("  grants in force, recipients per event: " + ", ".join(
        f"{rid} {k}" for rid, k in recipients.items()))
    figures = Figures(n=n, reconcile=reconciler_figure(reconcile or []), signing=signing)
    group = f"bench-gov-{uuid.uuid4().hex[:8]}"
    feeder = Feeder(env, recipients)
    try:
        with tempfile.TemporaryDirectory(prefix="govbus-bench-workers-") as tmp:
            one = one_worker(env, feeder, n, group, Path(tmp), say,
                             (latency_rate, latency_seconds), repeats)
            two = governed(env, feeder, 2, n, group, Path(tmp), say, repeats=repeats)
    finally:
        feeder.close()
        del feeder  # no client alive in this process when the next phases fork
    figures.one, figures.two = one["e2e"], two["e2e"]
    figures.unsigned = one["unsigned"]
    figures.signed_runs, figures.unsigned_runs = one["runs"], one["unsigned_runs"]
    figures.latency = one.get("latency")
    figures.deliveries_per_event = one["deliveries_per_event"]
    verify_log(env, say)
    figures.outbox = outbox_bench.run(env, outbox_rows or max(1000, n // 4), say)
    say(f"  baselines over the first {n} records of the same ingest topics:")
    figures.peers = peers.measure(env.broker, catalogue_ingest(env.catalogue), n, say,
                                  repeats=repeats)
    summarise(figures, say)
    return figures
