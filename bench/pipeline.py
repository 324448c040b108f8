"""The governed pipeline under load: grants in force, worker processes, feeding, counting.

Building blocks of :mod:`bench.pipeline_bench`: the grant mix that makes events route to
several agencies, the worker processes (:mod:`bench.worker`), a feeder that produces
pre-encoded, pre-signed events (each agency's key, as its publisher signs them: the signing
is the producer's cost, not the bus's; ``bench.publish_bench`` and
``bench.signatures_bench`` measure it), and the delivery log's head as the finishing line
(every delivery the hot path made is logged exactly once, so the head's seq counts deliveries
without a scan).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import psycopg2.extensions
from confluent_kafka import Producer

from govbus.core import commitments_store, db, sharing_store
from govbus.core.batching import produce
from govbus.core.catalogue import Catalogue
from govbus.core.kafka import producer_config
from govbus.core.registry import SchemaRegistry
from govbus.core.routing import grants_in_force, offers, withheld_reason

from . import workload
from .env import Env
from .report import BenchError, Say

ROOT = Path(__file__).resolve().parent.parent
# Processes that run next to the workers during every governed run, when their module exists:
# the reconciler (a process of its own, as `govbus up` runs it; one is enough for its volume).
COMPANIONS = [("reconciler", "govbus.stream_apps.reconciler")]

# (requester, resource, fields or None for all, confidentiality agreement, provider's answer)
# unconditional to three agencies (one projected with the phone masked), on application
# approved with masking, one rejected, and the not-shared adoption register (refused: withheld)
REQUESTS: list[tuple[str, str, list[str] | None, str | None, str | None]] = [
    ("tax", "public_security.population_register", ["name", "residence_address", "phone"],
     None, None),
    ("hrss", "public_security.population_register", None, "CA-2026-031", None),
    ("civil_affairs", "public_security.population_register", None, None, None),
    ("hrss", "market_regulation.legal_entity_register", None, "CA-2026-032", None),
    ("tax", "market_regulation.legal_entity_register", None, None, None),
    ("market_regulation", "tax.tax_registration", None, None, "approve"),
    ("public_security", "hrss.social_insurance_enrolment", None, None, "approve"),
    ("civil_affairs", "hrss.social_insurance_enrolment", None, None, "reject"),
    ("public_security", "civil_affairs.marriage_register", None, None, "approve"),  # query only
    ("tax", "civil_affairs.adoption_register", None, None, None),
]


def file_grants(env: Env) -> dict[str, int]:
    """File :data:`REQUESTS`; returns the recipients in force per resource id."""
    signed = commitments_store.sample_commitments(env.database_url, REQUESTS,
                                                  "statutory duties (bench)")
    for requester, resource_id, fields, agreement, answer in REQUESTS:
        resource = env.catalogue.get(*resource_id.split("."))
        out = sharing_store.file_request(env.database_url, resource, requester,
                                         "statutory duties (bench)", fields,
                                         signed[requester], agreement)
        if answer:
            sharing_store.decide(env.database_url, out["request_id"], str(resource.provider),
                                 answer == "approve", "bench")
    grants = sharing_store.load_grants(env.database_url)
    at = dt.datetime.now(dt.UTC)
    # as govbus.core.routing.route decides: not shared (Art. 15) or online query only
    # (Art. 17) reaches nobody, the rest reaches every grant in force
    return {r.id: (0 if withheld_reason(r) or not offers(r, "data_exchange")
                   else len(grants_in_force(grants, r, at))) for r in env.catalogue}


def log_head(dsn: str) -> int:
    """Rows in the delivery log: its shards' head seqs added up (each numbers from 1, no
    gaps)."""
    with db.transaction(dsn) as conn:
        return _head_seq(conn)


def _head_seq(conn: psycopg2.extensions.connection) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT coalesce(sum(seq), 0) FROM delivery_log_head")
        row = cur.fetchone()
    return int(row[0]) if row else 0


def wait_log(dsn: str, target: int, timeout: float, what: str, step: float = 0.02) -> float:
    """Wait until the log holds ``target`` rows; returns the perf_counter when it did.

    One connection for the whole wait: a connection per look (50 a second) had PostgreSQL
    start and end a backend each time, a tenth of the machine's CPU during a governed run
    (``perf``: fork and page-table copies in the postgres processes)."""
    deadline = time.monotonic() + timeout
    conn = db.connect(dsn, autocommit=True)
    try:
        while True:
            rows = _head_seq(conn)
            if rows >= target:
                return time.perf_counter()
            if time.monotonic() > deadline:
                raise BenchError(f"{what}: {rows} of {target} delivery-log rows after "
                                 f"{timeout:.0f} s")
            time.sleep(step)
    finally:
        conn.close()


@dataclass
class Batch:
    """Events encoded for one phase, with the deliveries they must cause."""

    events: list[workload.Encoded]
    deliveries: int
    bad: int


class Feeder:
    """Produces pre-encoded events to the ingest topics, as an agency's publisher would:
    signed with the agency's key (:func:`bench.workload.sign`, as ``Publisher`` signs), or,
    for the comparison without signatures, unsigned."""

    def __init__(self, env: Env, recipients: dict[str, int]) -> None:
        self.env, self.recipients = env, recipients
        self.encoder = workload.Encoder(env.catalogue, SchemaRegistry(env.database_url))
        self.signers = workload.Signers(env.keys)
        self.producer = Producer(producer_config(env.broker))
        self.failures: list[str] = []

    def encode(self, items: list[workload.Item], signed: bool = True) -> Batch:
        """Fresh envelopes (new event ids, ``ts_ms`` now) for ``items``; with ``signed``
        signed now, before any clock starts (the agency's producer pays for it)."""
        events = [self.encoder.encode(i) for i in items]
        if signed:
            workload.sign(events, self.signers)
        deliveries = sum(self.recipients[f"{i.agency}.{i.name}"] for i in items if not i.bad)
        return Batch(events, deliveries, sum(i.bad for i in items))

    def send(self, e: workload.Encoded) -> None:
        produce(self.producer, e.topic, e.key, e.payload, self._delivered,
                e.record_headers())

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.failures.append(str(err))

    def flush(self) -> None:
        if self.producer.flush(60) or self.failures:
            raise BenchError(f"feeding failed: {self.failures[:3]}")

    def warm_up(self, procs: list[Worker], timeout: float = 120.0, signed: bool = True) -> int:
        """Valid events on every partition through the whole pipeline until every stage of
        every worker has processed a batch (schemas cached, topics created, consumer groups
        settled: a stage that processed data holds partitions). Returns the rounds needed."""
        deadline = time.monotonic() + timeout
        for round_ in range(1, 1000):
            batch = self.encode(workload.items(300, 0.0, seed=round_), signed)
            target = log_head(self.env.database_url) + batch.deliveries
            for e in batch.events:
                self.send(e)
            self.flush()
            wait_log(self.env.database_url, target, deadline - time.monotonic(), "warm-up")
            if all(_seen(w, "ready", 0.5) for w in procs):
                return round_
            if time.monotonic() > deadline:
                break
        raise BenchError(f"warm-up: not every worker stage processed data in {timeout:.0f} s")

    def close(self) -> None:
        self.producer.flush(10)


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    stages: str = ""
    said: str = ""
    stopped: str = ""


def _reader(stream: BinaryIO, lines: queue.Queue[str]) -> None:
    for raw in stream:
        lines.put(raw.decode(errors="replace").rstrip())


def _seen(w: Worker, prefix: str, wait: float) -> bool:
    """Whether ``w`` said ``prefix`` (now or within ``wait`` seconds); remembers it."""
    if w.said.startswith(prefix):
        return True
    try:
        w.said = _expect(w, prefix, time.monotonic() + wait)
        return True
    except BenchError:
        return False


def _expect(w: Worker, prefix: str, deadline: float) -> str:
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or (w.proc.poll() is not None and w.lines.empty()):
            raise BenchError(f"worker pid {w.proc.pid} did not say {prefix!r} "
                             f"(exit {w.proc.poll()})")
        try:
            line = w.lines.get(timeout=min(left, 0.5))
        except queue.Empty:
            continue
        if line.startswith(prefix):
            return line


# the key files a deployment names: never the bench's processes, which use the run's own keys
KEY_VARIABLES = ("GOVBUS_SIGNING_KEY_FILE", "GOVBUS_BUS_KEY_FILE", "GOVBUS_BUS_PUBLIC_KEY_FILE")


@contextmanager
def workers(env: Env, count: int, group: str, log_dir: Path, say: Say,
            ready_timeout: float = 60.0, unsigned: bool = False) -> Iterator[list[Worker]]:
    """``count`` worker processes sharing ``group``; yields once all have started (warm them
    up with :meth:`Feeder.warm_up`). They find the run's keys in its state folder
    (``GOVBUS_STATE_DIR``); with ``unsigned`` they neither verify nor sign
    (``bench.worker --unsigned``: the comparison without signatures, never a setting)."""
    proc_env = {**{k: v for k, v in os.environ.items() if k not in KEY_VARIABLES},
                "KAFKA_BOOTSTRAP_SERVERS": env.broker.bootstrap_servers,
                "DATABASE_URL": env.database_url, "GOVBUS_SCHEMAS_DIR": str(env.catalogue.root),
                "GOVBUS_STATE_DIR": str(env.state), "PYTHONPATH": str(ROOT)}
    started: list[Worker] = []
    companions: list[subprocess.Popen[bytes]] = []
    try:
        for name, module in COMPANIONS:
            if importlib.util.find_spec(module) is None:
                say(f"  {name}: not present ({module}), not running")
                continue
            with open(log_dir / f"{name}-{count}.log", "ab") as out:
                companions.append(subprocess.Popen(
                    [sys.executable, "-m", module], stdout=out, stderr=subprocess.STDOUT,
                    env={**proc_env, "GOVBUS_RECONCILER_ID": f"{group}-reconciler"}, cwd=ROOT))
            say(f"  {name}: {module} running alongside, pid {companions[-1].pid}")
        for i in range(count):
            err = open(log_dir / f"worker-{count}-{i}.log", "ab")  # noqa: SIM115
            proc = subprocess.Popen([sys.executable, "-m", "bench.worker", "--group", group,
                                     *(["--unsigned"] if unsigned else [])],
                                    stdout=subprocess.PIPE, stderr=err, env=proc_env,
                                    cwd=ROOT)
            err.close()
            w = Worker(proc)
            threading.Thread(target=_reader, args=(proc.stdout, w.lines), daemon=True).start()
            started.append(w)
        deadline = time.monotonic() + ready_timeout
        for w in started:
            w.stages = _expect(w, "stages", deadline)
        yield started
    finally:
        for w in started:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        for w in started:
            try:
                w.stopped = _expect(w, "stopped", time.monotonic() + 60)
            except BenchError:
                pass
            try:
                w.proc.wait(30)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait(10)
        errors = [w.stopped for w in started if '"errors": []' not in w.stopped]
        for proc in companions:
            if proc.poll() is not None:
                errors.append(f"companion pid {proc.pid} exited early ({proc.returncode})")
            proc.send_signal(signal.SIGTERM)
        for proc in companions:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if errors:
            say(f"  worker problems: {errors[:2]}")


def timed_feed(feeder: Feeder, batch: Batch, dsn: str, timeout: float
               ) -> tuple[float, float]:
    """Feed ``batch`` at full speed; (seconds to the last delivery logged, feeding seconds)."""
    target = log_head(dsn) + batch.deliveries
    started = time.perf_counter()
    for e in batch.events:
        feeder.send(e)
    feeder.flush()
    fed = time.perf_counter() - started
    done = wait_log(dsn, target, timeout, "governed run")
    return done - started, fed


def paced_feed(feeder: Feeder, items: list[workload.Item], rate: float,
               on_sent: Callable[[workload.Encoded], None], signed: bool = True) -> int:
    """Encode and send ``items`` at ``rate`` events/s (envelope ``ts_ms`` = send time);
    returns the deliveries they must cause. With ``signed`` each event is signed alone as it
    is sent (a batch of one, as a publisher flushing every event signs: nothing waits for a
    batch to fill, and every event costs the hot path a whole Ed25519 verification)."""
    deliveries = 0
    start = time.perf_counter()
    for i, item in enumerate(items):
        due = start + i / rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)  # pacing the offered load, not waiting for a result
        e = feeder.encoder.encode(item)
        if signed:
            workload.sign([e], feeder.signers)
        feeder.send(e)
        feeder.producer.poll(0)
        on_sent(e)
        if not item.bad:
            deliveries += feeder.recipients[f"{item.agency}.{item.name}"]
    feeder.flush()
    return deliveries


def catalogue_ingest(catalogue: Catalogue) -> list[str]:
    return [r.ingest_topic for r in catalogue]
