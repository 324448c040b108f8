"""Benchmark 1: the gate, i.e. the hot path judging with no grants, on the real broker,
against a plain passthrough loop.

N framed events (about 2% with a bad identifier, so the DLQ path runs) are published to the
ingest topics first, by ``Publisher``, so signed by each agency's key (``bench.env``
provisions and registers them). Then, one after the other, each with its own consumer group
and the same batch size:

- baseline: a plain confluent-kafka consume→produce loop, same producer settings, manual
  synchronous commit after flush, from the same ingest topics into a scratch topic;
- the hot path (``govbus.stream_apps.hotpath.HotPath``, as ``govbus up`` runs it) on a
  database with no grant in force: it verifies every event's signature and judges it,
  forwards the accepted ones to
  ``validated.*`` and the rejected ones to ``dlq.*``, feeds ``reconcile.values``, routes
  nothing (no grant) and settles each batch (``entity_state``, the counts, the quarantine,
  the accepted event ids, written by its settling process) before its offsets are committed.

Each runs in a thread of a forked process of its own, so both start from the same memory
state; the hot path's settling process is started before the clock, as in a running worker.
The clock starts when the first batch is consumed (so the consumer-group join, ~4 s on
Tansu, is excluded from both) and stops when the batch that completes N is done: for the
loop, flushed and committed; for the hot path, settled (its offsets are then handed to the
committer thread). The outputs are then counted by consuming them (not from watermarks:
Tansu counts a produce batch as one offset).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from govbus import runtime
from govbus.core import sharing_store
from govbus.core.batching import Acks, BatchStage, Pipelined, commit, next_offsets, produce, usable
from govbus.core.config import Settings
from govbus.core.entity_state import StateRows
from govbus.core.kafka import consumer_config, ensure_topics, producer_config
from govbus.producers.publisher import Publisher
from govbus.stream_apps.hotpath import INGEST_PATTERN, HotPath
from govbus.stream_apps.settle import Batch

from . import workload
from .env import Env
from .report import (
    BenchError,
    Memory,
    Result,
    Say,
    cores_busy,
    isolated,
    machine_seconds,
    table,
)

BATCH = 2000  # the hot path's batch (HotPath's default), the baseline loop's too
TIMEOUT = 120.0


class Loop(Protocol):
    def process(self, msgs: list[Any]) -> None: ...
    def run(self) -> Any: ...
    def stop(self, *_: Any) -> None: ...


class Passthrough(BatchStage):
    """The baseline: a consume→produce loop without the hot path's work (no verdict, no
    routing, nothing settled; one output topic)."""

    component = "bench_passthrough"
    eager = False  # consume(batch, 0.5), as a plain loop would

    def __init__(self, settings: Settings, group: str, out_topic: str, batch: int) -> None:
        super().__init__(Consumer(consumer_config(settings, group)), batch)
        self.out_topic = out_topic
        self.producer = Producer(producer_config(settings, **{"linger.ms": 20}))  # as the hot path
        self.consumer.subscribe([INGEST_PATTERN])

    def close(self) -> None:
        self.producer.flush(30)
        super().close()

    def process(self, msgs: list[Any]) -> None:
        acks = Acks("passthrough outputs")
        msgs = usable(msgs)
        for msg in msgs:
            produce(self.producer, self.out_topic, msg.key(), msg.value(), acks, msg.headers())
        acks.wait(self.producer)
        commit(self.consumer, next_offsets(msgs))


def hot_path(settings: Settings, group: str) -> HotPath:
    """A hot-path worker with no grant in force, its settling process started (one empty
    batch settled), as in a worker that has been running: the process's start is not timed."""
    stage = HotPath(settings, group=group, batch=BATCH)
    stage.settler.settle(Batch([], StateRows(None, None), []))
    return stage


class Clock:
    """First batch consumed → the batch that completes N is done (see :func:`timed_loop`)."""

    def __init__(self, target: int) -> None:
        self.target, self.count = target, 0
        self.first = self.last = 0.0
        self.busy: list[float | None] = [None, None]  # the machine's busy CPU at first, last
        self.done = threading.Event()
        self.error: BaseException | None = None

    def started(self) -> None:
        if not self.first:
            self.first, self.busy[0] = time.perf_counter(), machine_seconds()

    def finished(self, msgs: list[Any]) -> None:
        self.count += sum(1 for m in msgs if not m.error())
        if self.count >= self.target and not self.done.is_set():
            self.last, self.busy[1] = time.perf_counter(), machine_seconds()
            self.done.set()

    def wrap(self, process: Callable[[list[Any]], None]) -> Callable[[list[Any]], None]:
        """For a loop whose ``process`` returns once the batch's outputs are acknowledged and
        its input committed."""
        def timed(msgs: list[Any]) -> None:
            self.started()
            process(msgs)
            self.finished(msgs)
        return timed

    def wrap_pipelined(self, stage: Pipelined[Any]) -> None:
        """For a :class:`Pipelined` stage, whose ``process`` returns once the batch is decided:
        the batch is done when its ``settle`` returned (in order, after every output of the
        batch was acknowledged)."""
        process, settle = stage.process, stage.settle

        def timed_process(msgs: list[Any]) -> None:
            self.started()
            process(msgs)

        def timed_settle(msgs: list[Any], decided: Any) -> None:
            settle(msgs, decided)
            self.finished(msgs)

        stage.process = timed_process  # type: ignore[method-assign]
        stage.settle = timed_settle  # type: ignore[method-assign]


def timed_loop(name: str, make: Callable[[], Loop], n: int) -> Result:
    """Build the loop, run it in a thread until it has committed ``n`` records, stop it."""
    mem = Memory()
    mem.start()
    clock = Clock(n)
    loop = make()
    if isinstance(loop, Pipelined):
        clock.wrap_pipelined(loop)
    else:
        loop.process = clock.wrap(loop.process)  # type: ignore[method-assign,assignment]

    def target() -> None:
        try:
            loop.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the waiting thread
            clock.error = exc
            clock.done.set()

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    try:
        finished = clock.done.wait(TIMEOUT)
        peak, growth = mem.peak()
        settler = getattr(loop, "settler", None)
        child_peak = peak_kib(settler.pid) if settler is not None and settler.pid else 0
        if clock.error is not None:
            raise BenchError(f"{name} crashed: {clock.error!r}") from clock.error
        if not finished:
            raise BenchError(f"{name}: only {clock.count} of {n} records committed after "
                             f"{TIMEOUT:.0f} s")
    finally:
        loop.stop()
        thread.join(60)
    seconds = clock.last - clock.first
    cores = cores_busy(clock.busy[0], clock.busy[1], seconds)
    return Result(name, n, seconds, peak, growth, busy_cores=cores, child_peak_kib=child_peak)


def peak_kib(pid: int) -> int:
    """Peak resident memory of another process so far (``VmHWM``), KiB; 0 if unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), 0)
    except OSError:
        return 0


def count_outputs(settings: Settings, topics: list[str], expected: int) -> Counter[str]:
    """Records per topic family (``validated``, ``dlq``, ...), read from the beginning."""
    consumer = Consumer(consumer_config(settings, f"bench-count-{uuid.uuid4().hex[:8]}"))
    try:
        meta = consumer.list_topics(timeout=10)
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING)
                         for t in topics for p in meta.topics[t].partitions])
        counts: Counter[str] = Counter()
        deadline = time.monotonic() + 60
        idle_after_done = 0
        while time.monotonic() < deadline and idle_after_done < 2:  # then 1 s more for extras
            msgs = [m for m in consumer.consume(1000, 0.5) if not m.error()]
            counts.update(str(m.topic()).split(".", 1)[0] for m in msgs)
            if sum(counts.values()) >= expected and not msgs:
                idle_after_done += 1
        return counts
    finally:
        consumer.close()


def publish_input(settings: Settings, env: Env, n: int) -> int:
    """Publish the workload to the ingest topics; returns how many are bad on purpose."""
    pub = Publisher(settings, catalogue=env.catalogue)
    work = workload.items(n, 0.02)
    sent = 0
    for (agency, name, bad), changes in workload.grouped(work).items():
        report = pub.publish(agency, name, changes, validate=not bad)
        if report.refused or report.failed:
            raise BenchError(f"input {agency}.{name}: {len(report.refused)} refused, "
                             f"failures {report.failed[:3]}")
        sent += report.published
    pub.close()
    if sent != n:
        raise BenchError(f"published {sent} input events, wanted {n}")
    return sum(item.bad for item in work)


def run(env: Env, n: int, say: Say) -> None:
    settings = env.broker
    say(f"\n== 1. gate: the hot path judging, no grant in force; {n} framed events on "
        f"{len(list(env.catalogue))} ingest topics x {settings.partitions} partitions, "
        f"batch {BATCH}")
    if sharing_store.load_grants(env.database_url):
        raise BenchError("grants are in force: this benchmark measures judging without routing")
    started = time.monotonic()
    bad = publish_input(settings, env, n)
    say(f"  input: {n} events published (signed by each agency's key) in "
        f"{time.monotonic() - started:.1f} s ({bad} with a bad check character)")
    say("  clock: from the first consumed batch to the batch completing N committed (loop) or "
        "settled (hot path); group join excluded, for both")
    run_id = uuid.uuid4().hex[:8]
    scratch = f"bench.passthrough.{run_id}"
    ensure_topics(settings, [scratch])
    base = isolated(lambda: timed_loop("baseline: consume→produce loop", lambda: Passthrough(
        settings, f"bench-passthrough-{run_id}", scratch, BATCH), n))
    copied = count_outputs(settings, [scratch], n)
    hot = isolated(lambda: timed_loop("hot path, no grants (judging)", lambda: hot_path(
        settings, f"bench-gate-{run_id}"), n))
    outputs = [t for t in runtime.catalogue_topics(env.catalogue)
               if not t.startswith("ingest.")]
    counted = count_outputs(settings, outputs, n)
    table(say, base, [hot])
    say(f"  the hot path's settling process (a child of it, not in the figures above): peak "
        f"RSS {hot.child_peak_kib / 1024:.1f} MiB")
    say(f"  counted by consuming: passthrough {copied['bench']} of {n}; hot path "
        f"{counted['validated']} validated + {counted['dlq']} dlq = "
        f"{counted['validated'] + counted['dlq']} of {n} (expected {n - bad} + {bad})")
    if copied["bench"] < n or counted["validated"] + counted["dlq"] < n:
        raise BenchError("outputs missing: the figures above do not cover every event")
    if counted["dlq"] != bad:
        raise BenchError(f"the hot path rejected {counted['dlq']}, expected {bad}")
