"""The shared batch loop's bookkeeping: offsets, rewinds, retries (no broker: a scripted
consumer stands in for the client; the loop with a real broker is in every stage's
integration tests and the fault suite)."""

from __future__ import annotations

import gc
import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from prometheus_client import REGISTRY

from govbus.core.batching import (
    GC_THRESHOLDS,
    Acks,
    BatchStage,
    Committer,
    commit,
    next_offsets,
    rewind,
    tune_gc,
    usable,
)
from govbus.core.errors import BrokerError, DatabaseError


class Msg:
    def __init__(self, topic: str, partition: int, offset: int,
                 error: KafkaError | None = None) -> None:
        self._t, self._p, self._o, self._e = topic, partition, offset, error

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def error(self) -> KafkaError | None:
        return self._e


class ScriptedConsumer:
    """Hands out the scripted batches in turn (a rewind replays from the seek), records
    commits, seeks and close."""

    def __init__(self, batches: list[list[Msg]]) -> None:
        self.batches, self.commits, self.seeks, self.closed = batches, [], [], False
        self.refuse_seek = False

    def consume(self, n: int, timeout: float) -> list[Msg]:
        return self.batches.pop(0)[:n] if self.batches else []

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        assert asynchronous is False
        self.commits.append({(tp.topic, tp.partition): tp.offset for tp in offsets})

    def seek(self, tp: TopicPartition) -> None:
        if self.refuse_seek:
            raise KafkaException(KafkaError(KafkaError._STATE, "not assigned"))
        self.seeks.append((tp.topic, tp.partition, tp.offset))

    def close(self) -> None:
        self.closed = True


BATCH = [Msg("a", 0, 5), Msg("a", 1, 9), Msg("a", 0, 6), Msg("b", 0, 2)]


def test_next_offsets_are_one_past_the_last_record_per_partition() -> None:
    assert next_offsets(BATCH) == {("a", 0): 7, ("a", 1): 10, ("b", 0): 3}


def test_usable_drops_consumer_errors() -> None:
    eof = Msg("a", 0, 0, KafkaError(KafkaError._PARTITION_EOF))
    broken = Msg("a", 0, 0, KafkaError(KafkaError._TRANSPORT))
    assert usable([eof, BATCH[0], broken]) == [BATCH[0]]


def test_rewind_seeks_to_the_first_record_of_each_partition() -> None:
    consumer = ScriptedConsumer([])
    rewind(consumer, [*BATCH, Msg("a", 0, 0, KafkaError(KafkaError._PARTITION_EOF))])
    assert sorted(consumer.seeks) == [("a", 0, 5), ("a", 1, 9), ("b", 0, 2)]


def test_a_refused_seek_is_left_to_the_partitions_new_owner() -> None:
    consumer = ScriptedConsumer([])
    consumer.refuse_seek = True
    rewind(consumer, BATCH)  # no exception: the new owner replays from the commit
    assert consumer.seeks == []


def test_commit_of_nothing_does_not_call_the_broker_and_a_refusal_is_a_broker_error() -> None:
    class Refusing(ScriptedConsumer):
        def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
            raise KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS))

    consumer = ScriptedConsumer([])
    commit(consumer, {})
    assert consumer.commits == []
    with pytest.raises(BrokerError, match="offset commit failed"):
        commit(Refusing([]), {("a", 0): 1})


class Flaky(BatchStage):
    """Fails the first ``failures`` attempts, then commits; stops when the script is done."""

    component = "test"

    def __init__(self, consumer: ScriptedConsumer, failures: list[Exception]) -> None:
        super().__init__(consumer, batch=100)
        self.failures, self.done = failures, []

    def fetch(self) -> list[Any]:
        return list(self.consumer.consume(self.batch, 0))

    def idle(self) -> None:
        self.stop()

    def process(self, msgs: list[Any]) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.done.append([m.offset() for m in msgs])
        commit(self.consumer, next_offsets(msgs))


def test_a_failed_batch_is_rewound_and_retried_before_the_next() -> None:
    consumer = ScriptedConsumer([BATCH, BATCH, [Msg("a", 0, 7)]])
    stage = Flaky(consumer, [DatabaseError("down")])
    stage.stopping.wait = lambda _s: False  # type: ignore[method-assign]  # no back-off wait
    stats = stage.run()
    assert stats["retries"] == 1
    assert sorted(consumer.seeks) == [("a", 0, 5), ("a", 1, 9), ("b", 0, 2)]
    assert stage.done == [[5, 9, 6, 2], [7]]
    assert consumer.commits == [{("a", 0): 7, ("a", 1): 10, ("b", 0): 3}, {("a", 0): 8}]
    assert consumer.closed


def test_any_other_error_stops_the_loop_and_still_closes() -> None:
    consumer = ScriptedConsumer([BATCH])
    stage = Flaky(consumer, [ValueError("a bug")])
    with pytest.raises(ValueError):
        stage.run()
    assert consumer.commits == [] and consumer.closed


def test_acks_raise_unless_every_output_was_acknowledged() -> None:
    class Producer:
        def __init__(self, remaining: int) -> None:
            self.remaining = remaining

        def flush(self, timeout: float) -> int:
            return self.remaining

    acks = Acks("outputs")
    acks(None, None)
    acks.wait(Producer(0))  # type: ignore[arg-type]
    with pytest.raises(BrokerError, match="0 outputs failed, 2 unacknowledged"):
        acks.wait(Producer(2))  # type: ignore[arg-type]
    acks(KafkaError(KafkaError._MSG_TIMED_OUT), None)
    with pytest.raises(BrokerError, match="1 outputs failed"):
        acks.wait(Producer(0))  # type: ignore[arg-type]


class Pipelined(Flaky):
    """Settles each batch only at the next call (as the hot path does in its thread): a
    failure of an earlier batch surfaces from :meth:`process` or :meth:`idle` later."""

    def __init__(self, consumer: ScriptedConsumer, fail_settle: int) -> None:
        super().__init__(consumer, [])
        self.fail_settle = fail_settle  # how many settles fail
        self.held: list[Any] | None = None
        self.failed: list[Any] = []
        self.idles = 0

    def _settle_held(self) -> None:
        held, self.held = self.held, None
        if held is None:
            return
        if self.fail_settle:
            self.fail_settle -= 1
            self.failed = held
            raise BrokerError("acks lost")
        self.done.append([m.offset() for m in held])
        commit(self.consumer, next_offsets(held))

    def process(self, msgs: list[Any]) -> None:
        self._settle_held()
        self.held = msgs

    def idle(self) -> None:
        self.idles += 1
        self._settle_held()
        if self.idles > 3:
            self.stop()

    def unsettled(self) -> list[Any]:
        failed, self.failed = self.failed, []
        return failed


def test_an_earlier_batch_failing_later_is_rewound_with_the_current_one() -> None:
    second = [Msg("a", 0, 7), Msg("b", 0, 3)]
    consumer = ScriptedConsumer([BATCH, second, BATCH, second])
    stage = Pipelined(consumer, fail_settle=1)
    stage.stopping.wait = lambda _s: False  # type: ignore[method-assign]
    stage.run()
    # BATCH's settle failed when `second` came: both rewound, to BATCH's first records
    assert sorted(consumer.seeks) == [("a", 0, 5), ("a", 1, 9), ("b", 0, 2)]
    assert stage.done == [[5, 9, 6, 2], [7, 3]]  # the last one settled while idle
    assert consumer.commits[-1] == {("a", 0): 8, ("b", 0): 4}


def test_a_batch_failing_while_idle_is_rewound_then() -> None:
    consumer = ScriptedConsumer([BATCH, [], BATCH])  # nothing new came; then the replay
    stage = Pipelined(consumer, fail_settle=1)
    stage.stopping.wait = lambda _s: False  # type: ignore[method-assign]
    stats = stage.run()
    assert stats["retries"] == 1
    assert sorted(consumer.seeks) == [("a", 0, 5), ("a", 1, 9), ("b", 0, 2)]
    assert stage.done == [[5, 9, 6, 2]]


def test_acks_settle_counts_only_their_own_messages() -> None:
    class Producer:
        """Answers two of the queued callbacks per poll."""

        def __init__(self) -> None:
            self.queued: list[Any] = []

        def poll(self, timeout: float) -> int:
            for callback in self.queued[:2]:
                callback(None, None)
            del self.queued[:2]
            return 0

    acks, producer = Acks("outputs"), Producer()
    producer.queued = [acks.expect() for _ in range(4)]
    acks.settle(producer)  # type: ignore[arg-type]
    assert acks.pending == 0
    acks.expect()  # never answered
    with pytest.raises(BrokerError, match="1 unacknowledged"):
        acks.settle(Producer(), timeout=0.1)  # type: ignore[arg-type]


def test_settle_refuses_a_message_produced_without_expect() -> None:
    """Such a message's answer would count for another one: settle() could return while a
    delivery is still unacknowledged, and its log row would be missing."""
    class Producer:
        def poll(self, timeout: float) -> int:
            return 0

    acks = Acks("outputs")
    answer = acks.expect()
    acks(None, None)  # the uncounted one answers first
    answer(None, None)
    with pytest.raises(RuntimeError, match="without expect"):
        acks.settle(Producer())  # type: ignore[arg-type]


class CommitRecorder:
    """Records commits; the first one waits until released (a broker that is slow to
    answer); ``assignment`` is what the consumer still owns."""

    def __init__(self, assignment: list[tuple[str, int]]) -> None:
        self.commits: list[tuple[bool, dict[tuple[str, int], int]]] = []
        self.release = threading.Event()
        self.entered = threading.Event()
        self._assignment = assignment

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.entered.set()
        if not self.commits:
            assert self.release.wait(10)
        self.commits.append((asynchronous,
                             {(tp.topic, tp.partition): tp.offset for tp in offsets}))

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self._assignment]


def test_committer_merges_what_settles_while_a_commit_waits_and_commits_the_rest_at_close(
        ) -> None:
    consumer = CommitRecorder(assignment=[("a", 0), ("a", 1)])
    committer = Committer("unit")
    committer.submit(consumer, {("a", 0): 6})
    assert consumer.entered.wait(10)  # the first commit is under way, and slow
    committer.submit(consumer, {("a", 0): 9, ("a", 1): 4})  # returns at once
    committer.submit(consumer, {("a", 1): 7, ("b", 0): 3})
    consumer.release.set()
    committer.close(consumer)
    assert consumer.commits[0] == (True, {("a", 0): 6})
    assert consumer.commits[1] == (True, {("a", 0): 9, ("a", 1): 7, ("b", 0): 3})  # merged
    # at close, synchronously, what was settled of the partitions still assigned
    assert consumer.commits[2] == (False, {("a", 0): 9, ("a", 1): 7})
    assert len(consumer.commits) == 3


def test_committer_counts_and_survives_commits_the_broker_refused() -> None:
    consumer = CommitRecorder(assignment=[])
    consumer.release.set()
    committer = Committer("unit_refused")
    before = REGISTRY.get_sample_value("govbus_offset_commit_failures_total",
                                       {"component": "unit_refused"}) or 0.0
    committer.answer(KafkaError(KafkaError.REBALANCE_IN_PROGRESS), [])
    committer.answer(None, [TopicPartition("a", 0, 5)])  # fine
    committer.answer(KafkaError(KafkaError._NO_OFFSET), [])  # nothing to commit: fine
    committer.submit(consumer, {("a", 0): 6})
    committer.close(consumer)
    assert REGISTRY.get_sample_value("govbus_offset_commit_failures_total",
                                     {"component": "unit_refused"}) == before + 1
    assert consumer.commits == [(True, {("a", 0): 6})]  # none at close: nothing assigned


def test_tune_gc_freezes_what_start_up_built_and_collects_less_often() -> None:
    old = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS and GC_THRESHOLDS[0] > old[0]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*old)
