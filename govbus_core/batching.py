"""The batch loop every high-volume stage runs, and the Kafka chores around one batch.

Each stage (the hot path, the cases sink, the subscriber) does the same thing around its own
work: take a batch, process it, and only then commit its offsets; when PostgreSQL or the
broker fails mid-batch, seek back to the batch's first record per partition and retry with a
doubling back-off (0.5 s … 10 s), so nothing is skipped and nothing is committed that was not
done. :class:`BatchStage` is that loop, once; a stage subclasses it and writes
:meth:`BatchStage.process`. :class:`Pipelined` is the same loop with ordered settling: a stage
writes its decide and settle steps, and the loop settles up to ``depth`` batches in order
while it decides the next one.

Why not faust agents here: see docs/adr/0007-where-faust-is-used.md (per-event stream
machinery cost more than the work on this path) and docs/adr/0006-reconciler-state-in-postgresql.md
(its table lost reconciler input under ``kill -9``).
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from govbus.core import metrics
from govbus.core.errors import BrokerError, DatabaseError, GovbusError
from govbus.core.kafka import take

log = logging.getLogger("govbus.batch")
Offsets = dict[tuple[str, int], int]
DeliveryCallback = Callable[[Any, Any], None]
QUIET = (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART)
#: errors that no retry of the same record cures (the record itself is too large or invalid):
#: such a record is set aside with its reason, per record, and its batch goes on. Retrying the
#: batch would stop every agency's deliveries behind one record, for ever. Errors of the
#: broker or of the client's rights (unreachable, not authorized) are not here: the batch is
#: retried, and an alert fires on the retries (fail closed).
NON_RETRIABLE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG_SIZE,
                           KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD})
Source = tuple[str, int, int]  # topic, partition, offset of the record an output came from


class SetAside(NamedTuple):
    """An output the broker or the client refused for good, with what is known of it."""

    topic: str  # where it was to go
    key: Any
    value: bytes | None
    error: str  # the error's name, e.g. MSG_SIZE_TOO_LARGE
    reason: str
    source: Source | None


class Unsent:
    """What a delivery callback is given for a record the client refused at ``produce``."""

    def __init__(self, topic: str, key: Any, value: bytes | None) -> None:
        self._topic, self._key, self._value = topic, key, value

    def topic(self) -> str:
        return self._topic

    def key(self) -> Any:
        return self._key

    def value(self) -> bytes | None:
        return self._value


def set_aside(err: KafkaError | None) -> bool:
    """Whether ``err`` means that this record can never be produced as it is."""
    return err is not None and err.code() in NON_RETRIABLE


def usable(msgs: Iterable[Any]) -> list[Any]:
    """The records of a batch; consumer errors are dropped (and logged unless routine)."""
    good = []
    for msg in msgs:
        err = msg.error()
        if err is None:
            good.append(msg)
        elif err.code() not in QUIET:
            log.warning("consumer error: %s", err)
    return good


def next_offsets(msgs: Iterable[Any]) -> Offsets:
    """Per partition, the offset to commit once every record of ``msgs`` is done."""
    return {(m.topic(), m.partition()): m.offset() + 1 for m in msgs}


def commit(consumer: Any, offsets: Offsets) -> None:
    """Commit synchronously; BrokerError if the broker refuses (the batch is then replayed,
    which every stage tolerates: its outputs are keyed by event id)."""
    if not offsets:
        return
    try:
        consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                        asynchronous=False)
    except KafkaException as exc:
        raise BrokerError(f"offset commit failed: {exc}") from exc


class Committer:
    """Offsets committed off the settling thread and without waiting for the broker, for a
    stage that settles its batches in order in a thread of their own (:class:`Pipelined`).

    A commit there took up to a second now and then on Tansu, also with ``asynchronous=True``
    (p99 0.47-0.5 s in runs at 1,000 events/s, temporary timers), and every batch settling
    behind it waited, and the next batch's judging behind them: most of the tail of the
    delivery latency. So :meth:`submit` only records a settled batch's offsets; one thread of
    this committer commits them, merged per partition with whatever else was settled while it
    was busy. An offset is still committed only after its batch settled (batches settle in
    order, offsets only grow). A commit that fails or waits only means a batch replayed after
    a restart, which every output tolerates (keyed by event id): it is logged and counted,
    and the next commit of the partition supersedes it. :meth:`close` commits what was
    settled synchronously, for the partitions still assigned.

    Pass :meth:`answer` as the consumer's ``on_commit``."""

    def __init__(self, component: str) -> None:
        self.component = component
        self.settled: Offsets = {}
        self.failures: list[str] = []  # appended by the consumer's thread, read by ours
        self._pending: Offsets = {}
        self._queued = False
        self._lock = threading.Lock()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"{component}-commit")

    def answer(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is not None and err.code() != KafkaError._NO_OFFSET:
            self.failures.append(str(err))
        for tp in partitions or []:
            if tp.error is not None:
                self.failures.append(f"{tp.topic}[{tp.partition}]: {tp.error}")

    def submit(self, consumer: Any, offsets: Offsets) -> None:
        """Have the offsets of a settled batch committed; returns at once."""
        with self._lock:
            _merge(self._pending, offsets)
            if self._queued or not self._pending:
                return
            self._queued = True
        self._thread.submit(self._commit, consumer)

    def _commit(self, consumer: Any) -> None:
        with self._lock:
            offsets, self._pending, self._queued = self._pending, {}, False
        failed, self.failures = self.failures, []
        try:
            consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                            asynchronous=True)
            _merge(self.settled, offsets)
        except KafkaException as exc:
            failed.append(str(exc))
        if failed:
            metrics.OFFSET_COMMIT_FAILURES.labels(self.component).inc(len(failed))
            log.warning("%s: %d offset commit(s) failed (their batches are replayed after a "
                        "restart unless a later commit supersedes them): %s", self.component,
                        len(failed), failed[:3])

    def close(self, consumer: Any) -> None:
        """Wait for the commits under way; then commit, and wait for, everything settled of
        the partitions still assigned."""
        self._thread.shutdown()  # runs every queued commit: nothing is left pending
        try:
            mine = {(tp.topic, tp.partition) for tp in consumer.assignment()}
            commit(consumer, {k: o for k, o in self.settled.items() if k in mine})
        except (KafkaException, BrokerError, RuntimeError) as exc:
            log.warning("%s: last offsets not committed, the last batches will be replayed: "
                        "%s", self.component, exc)


def _merge(into: Offsets, offsets: Offsets) -> None:
    for key, offset in offsets.items():
        into[key] = max(offset, into.get(key, offset))


def rewind(consumer: Any, msgs: Iterable[Any]) -> None:
    """Seek back to the first record of a failed batch, per partition."""
    first: Offsets = {}
    for msg in msgs:
        offset = msg.offset()
        if msg.error() is None and offset is not None:
            key = (msg.topic(), msg.partition())
            first[key] = min(first.get(key, offset), offset)
    for (topic, part), offset in first.items():
        try:
            consumer.seek(TopicPartition(topic, part, offset))
        except KafkaException as exc:  # revoked meanwhile: its new owner replays it
            log.info("cannot rewind %s[%d]: %s", topic, part, exc)


def produce(producer: Producer, topic: str, key: Any, value: bytes | None,
            on_delivery: DeliveryCallback | None, headers: Any = None,
            partition: int | None = None) -> None:
    """Produce one message (to ``partition``, or where the producer's partitioner puts its
    key), waiting while the client's local queue is full. A record the client refuses for good
    (:data:`NON_RETRIABLE`: larger than ``message.max.bytes``, say) is answered to
    ``on_delivery`` as the broker's refusal would be, so that it is set aside with the rest
    of its batch's answers; without a callback it raises."""
    while True:
        try:
            if partition is None:
                producer.produce(topic, key=key, value=value, headers=headers,
                                 on_delivery=on_delivery)
            else:
                producer.produce(topic, key=key, value=value, headers=headers,
                                 on_delivery=on_delivery, partition=partition)
            return
        except BufferError:
            producer.poll(0.1)  # let acknowledgements drain
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if on_delivery is not None and isinstance(err, KafkaError) and set_aside(err):
                on_delivery(err, Unsent(topic, key, value))
                return
            raise BrokerError(f"cannot produce to {topic}: {exc}") from exc


class Acks:
    """Collects delivery failures of one batch; :meth:`wait` raises unless all were acked.

    Used as the delivery callback. :meth:`wait` flushes the whole producer; a stage that
    produces the next batch while this one settles counts its own messages instead
    (:meth:`expect` per message, then :meth:`settle`). Callbacks may run in either thread:
    answers are list appends, which need no lock.

    A record refused for good (:func:`set_aside`) is no failure of the batch: it is kept in
    :attr:`set_aside`, with its reason and, when :meth:`expect` was given it, the position of
    the record it came from, for the stage to file (the hot path's ``quarantine``), and
    counted in ``govbus_records_set_aside_total``."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failures: list[str] = []
        self.set_aside: list[SetAside] = []
        self.expected = 0
        self.uncounted = 0
        self._answers: list[bool] = []

    def __call__(self, err: KafkaError | None, msg: Any) -> None:
        self.uncounted += 1  # produced without expect(): fine for wait(), a bug for settle()
        self.answer(err, "", msg)

    def _counted(self, err: KafkaError | None, msg: Any) -> None:
        self.answer(err, "", msg)

    def _sourced(self, source: Source, err: KafkaError | None, msg: Any) -> None:
        self.answer(err, "", msg, source)

    def answer(self, err: KafkaError | None, where: str = "", msg: Any = None,
               source: Source | None = None) -> None:
        """Record one acknowledgement, failure or record set aside (``where``: a prefix for
        its message; ``msg``: the record, as the delivery callback has it)."""
        if err is not None:
            if set_aside(err) and msg is not None:
                self._set_aside(err, msg, source)
            else:
                self.failures.append(f"{where}{err}")
        self._answers.append(err is None)

    def _set_aside(self, err: KafkaError, msg: Any, source: Source | None) -> None:
        value = msg.value()
        size = len(value) if value is not None else 0
        reason = (f"{err.name()}: the broker or the client refused this {size}-byte record "
                  f"for {msg.topic()} ({err.str()}); set aside, not retried")
        self.set_aside.append(SetAside(msg.topic(), msg.key(), value, err.name(), reason,
                                       source))
        metrics.RECORDS_SET_ASIDE.labels(err.name()).inc()
        log.error("%s: %s", self.what, reason)

    @property
    def pending(self) -> int:
        """Messages counted by :meth:`expect` and not answered yet."""
        return self.expected - len(self._answers)

    def expect(self, source: Source | None = None) -> DeliveryCallback:
        """Count one more message; returns the callback to produce it with (``source``: the
        position of the record it comes from, kept if it is set aside)."""
        self.expected += 1
        return self._counted if source is None else partial(self._sourced, source)

    def wait(self, producer: Producer, timeout: float = 60.0) -> None:
        remaining = producer.flush(timeout)
        self._check(remaining)

    def settle(self, producer: Producer, timeout: float = 60.0) -> None:
        """Wait for this batch's acknowledgements only (others may be in flight)."""
        deadline = time.monotonic() + timeout
        while self.pending > 0 and time.monotonic() < deadline:
            producer.poll(0.05)  # serves the callbacks of whatever was acknowledged
        if self.uncounted:  # settle() would return before every message was answered
            raise RuntimeError(f"{self.what}: {self.uncounted} message(s) produced without "
                               "expect(); settle() cannot count them")
        self._check(self.pending)

    def _check(self, remaining: int) -> None:
        if self.failures or remaining:
            raise BrokerError(f"{len(self.failures)} {self.what} failed, {remaining} "
                              f"unacknowledged: {self.failures[:3]}")


class BatchStage:
    """Take a batch, :meth:`process` it, repeat until :meth:`stop`; on a DatabaseError or
    BrokerError rewind the batch and retry it after a back-off. Subclasses set ``component``
    (the ``govbus_batch_retries_total`` label) and may set ``eager``; they may override
    :meth:`fetch`, :meth:`idle`, :meth:`finished` and :meth:`close`."""

    component = "stage"
    #: ``True``: return as soon as one record is there (what the latency path wants);
    #: ``False``: wait up to 0.5 s for a full batch (fewer, larger batches for stages off the
    #: latency path, which then take the GIL less often from the ones on it).
    eager = True

    def __init__(self, consumer: Any, batch: int) -> None:
        self.consumer, self.batch = consumer, batch
        self.stats: Counter[str] = Counter()
        self.stopping = threading.Event()

    def process(self, msgs: list[Any]) -> None:
        raise NotImplementedError

    def fetch(self) -> list[Any]:
        """The next batch (may hold consumer errors: :func:`usable` drops them)."""
        if self.eager:
            return take(self.consumer, self.batch, 0.5)
        return list(self.consumer.consume(self.batch, 0.5))

    def idle(self) -> None:
        """Called when a fetch brought nothing; a DatabaseError or BrokerError raised here
        rewinds :meth:`unsettled` and backs off, as for a failed batch."""

    def unsettled(self) -> list[Any]:
        """Records of earlier batches that failed after :meth:`process` returned (a stage
        that settles a batch while it takes the next); rewound with the failing batch."""
        return []

    def finished(self) -> bool:
        """True ends the loop (a bounded run); the default runs until :meth:`stop`."""
        return False

    def close(self) -> None:
        self.consumer.close()

    def stop(self, *_: Any) -> None:
        self.stopping.set()

    def run(self) -> Counter[str]:
        """Process batches until stopped; then :meth:`close`. Returns :attr:`stats`."""
        backoff = 0.5
        try:
            while not self.stopping.is_set() and not self.finished():
                msgs = self.fetch()
                try:
                    if not msgs:
                        self.idle()  # may report an earlier batch that failed (unsettled)
                        continue
                    self.process(msgs)
                    backoff = 0.5
                except (DatabaseError, BrokerError) as exc:
                    self.stats["retries"] += 1
                    metrics.BATCH_RETRIES.labels(self.component).inc()
                    log.warning("%s: batch not done, will retry in %.1f s: %s",
                                self.component, backoff, exc)
                    rewind(self.consumer, [*self.unsettled(), *msgs])
                    self.stopping.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
        finally:
            self.close()
        return self.stats


class Decision(Protocol):
    """What :meth:`Pipelined.decide` returns: at least the batch's outputs, to wait for."""

    acks: Acks


D = TypeVar("D", bound=Decision)


class Pipelined(BatchStage, Generic[D]):
    """A batch stage that settles its batches in order, up to :attr:`depth` at once, while it
    decides the next one.

    A subclass writes two steps: :meth:`decide` judges a batch and produces its outputs
    through :attr:`producer` without waiting (every output counted by the ``acks`` of what it
    returns); :meth:`settle` writes what the batch leaves to write. For each batch the loop
    then, in order: waits for the broker's acknowledgement of every output (one thread), has
    the batch settled once the batch before it settled (another thread), and only then
    submits its offsets to the :class:`Committer`. So no offset is committed past a batch that
    was not settled: when one fails, every batch behind it fails too, and all of their
    records are rewound and replayed with the next :meth:`BatchStage.run` retry."""

    depth = 2  # batches decided and not yet settled, at most

    def __init__(self, make_consumer: Callable[[Callable[..., None]], Any], batch: int,
                 producer: Producer) -> None:
        self.committer = Committer(self.component)
        super().__init__(make_consumer(self.committer.answer), batch)
        self.producer = producer
        self._acker = ThreadPoolExecutor(1, thread_name_prefix=f"{self.component}-acks")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix=f"{self.component}-settle")
        self._inflight: deque[tuple[list[Any], Future[None]]] = deque()
        self._failed: list[Any] = []

    def decide(self, msgs: list[Any]) -> D:
        raise NotImplementedError

    def settle(self, msgs: list[Any], decided: D) -> None:
        raise NotImplementedError

    def process(self, msgs: list[Any]) -> None:
        """Decide this batch while earlier ones settle; then put it in the pipeline."""
        msgs = usable(msgs)
        try:
            decided = self.decide(msgs)
        finally:
            self._join(self.depth - 1)  # or this raises and every unsettled batch is replayed
        acked = self._acker.submit(decided.acks.settle, self.producer)
        before = self._inflight[-1][1] if self._inflight else None
        self._inflight.append((msgs, self._writer.submit(self._settle, msgs, decided, acked,
                                                         before)))

    def _settle(self, msgs: list[Any], decided: D, acked: Future[None],
                before: Future[None] | None) -> None:
        acked.result()
        if before is not None:
            before.result()  # a batch whose predecessor failed fails too
        self.settle(msgs, decided)
        self.committer.submit(self.consumer, next_offsets(msgs))

    def _join(self, keep: int) -> None:
        """Wait until at most ``keep`` batches are settling; if one failed, wait for all
        (each fails after it) and keep their records for the rewind."""
        while len(self._inflight) > keep:
            _msgs, settling = self._inflight[0]
            try:
                settling.result()
            except (DatabaseError, BrokerError):
                failed = [m for batch, _ in self._inflight for m in batch]
                for _, later in self._inflight:
                    later.exception()  # wait: it fails on this one
                self._inflight.clear()
                self._failed = failed
                raise
            self._inflight.popleft()

    def idle(self) -> None:
        """Report a batch that failed while no records came, so that it is replayed now."""
        while self._inflight and self._inflight[0][1].done():
            self._join(len(self._inflight) - 1)

    def unsettled(self) -> list[Any]:
        failed, self._failed = self._failed, []
        return failed

    def close(self) -> None:
        """Let the batches in flight settle and commit; then close the clients."""
        try:
            self._join(0)
        except (DatabaseError, BrokerError) as exc:
            log.warning("%s: last batches not settled, they will be replayed: %s",
                        self.component, exc)
        for pool in (self._acker, self._writer):
            pool.shutdown()
        self.committer.close(self.consumer)
        self.producer.flush(30)
        super().close()


#: the collector's thresholds for a long-running stage (Python's default: 700, 10, 10)
GC_THRESHOLDS = (100_000, 10, 10)


def tune_gc() -> None:
    """For a long-running stage, once it is built: what start-up made (modules, schemas,
    codecs, the catalogue) is moved out of the collector's sight (``gc.freeze``), and the
    youngest generation is collected every 100,000 allocations instead of every 700. A stage
    allocates dicts and tuples for every event, almost none of them in reference cycles;
    scanning them was 5% of the hot path's instructions (cachegrind over ``bench.inprocess``:
    589k against 558k per event). Cycles are still collected, a little later."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def serve(name: str, make: Callable[[], BatchStage], describe: Callable[[Any], str]) -> None:
    """A stage's ``python -m`` entry point: build it from the environment, serve its metrics,
    run it until SIGTERM or SIGINT. A configuration or connection error at start exits 1 with
    one line saying why."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        stage = make()
        metrics.serve()  # on the port `govbus up` assigned (GOVBUS_METRICS_PORT), if any
    except GovbusError as exc:
        log.error("%s not started: %s", name, exc)
        raise SystemExit(1) from exc
    signal.signal(signal.SIGTERM, stage.stop)
    signal.signal(signal.SIGINT, stage.stop)
    tune_gc()
    log.info("%s started: %s", name, describe(stage))
    stage.run()
    log.info("%s stopped: %s", name, dict(stage.stats))
