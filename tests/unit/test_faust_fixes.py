"""The reconciler's three faust fixes (stream_apps.faust_fixes), each of which let it lose input:
the end of recovery resumed the input partitions before seeking them and before
``flow_control.resume()`` cleared the agents' queues; a fetch was handed faust's live set of
active partitions, which aiokafka reads as "all" once it empties; and offsets were committed
before the output of their processing was acknowledged. These tests pin all three on a real
faust app; no broker is needed because nothing here starts it."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
from faust.types import TP

from stream_apps.faust_fixes import App, OrderedRecovery, SafeConsumer


class Recorder:
    """Stands in for the app's consumer and fetcher, recording what recovery asks of them."""

    def __init__(self, calls: list[Any], assignment: set[TP]) -> None:
        self.calls, self._assignment = calls, assignment

    def assignment(self) -> set[TP]:
        return self._assignment

    async def perform_seek(self) -> None:
        self.calls.append("seek")

    def resume_flow(self) -> None:
        self.calls.append("resume_flow")

    def resume_partitions(self, tps: set[TP]) -> None:
        self.calls.append(("resume_partitions", sorted(tp.topic for tp in tps)))

    async def maybe_start(self) -> None:
        self.calls.append("fetcher")


def app_with(calls: list[Any], assignment: set[TP]) -> App:
    app = App("t", broker="kafka://127.0.0.1:1", web_enabled=False, store="memory://")
    app.Table("states", default=None)              # changelog topic t-states-changelog
    recorder = Recorder(calls, assignment)
    app.consumer = recorder
    app._fetcher = recorder  # type: ignore[attr-defined]
    resume = app.flow_control.resume

    def flow_control_resume() -> None:
        calls.append("flow_control.resume (clears agent queues)")
        resume()

    app.flow_control.resume = flow_control_resume  # type: ignore[method-assign]

    async def wait(coro: Any, timeout: float | None = None) -> None:
        await coro   # Recovery._wait, minus its watch on a service this test never starts

    app.tables.recovery._wait = wait  # type: ignore[method-assign]
    return app


def test_the_app_has_both_fixes() -> None:
    app = App("t", broker="kafka://127.0.0.1:1", web_enabled=False, store="memory://")
    assert isinstance(app.tables.recovery, OrderedRecovery)
    assert isinstance(app.consumer, SafeConsumer)


def test_the_reconciler_is_built_on_that_app() -> None:
    from stream_apps import reconciler
    assert "faust_fixes.App(" in inspect.getsource(reconciler.create_app)


def test_stream_partitions_resume_only_after_the_seek_and_the_queue_clear() -> None:
    calls: list[Any] = []
    app = app_with(calls, {TP("reconcile.values", 0), TP("reconcile.values", 1),
                           TP("t-states-changelog", 0)})
    asyncio.run(app.tables.recovery._seek_then_resume())
    assert calls == ["seek", "flow_control.resume (clears agent queues)", "resume_flow",
                     ("resume_partitions", ["reconcile.values", "reconcile.values"]),
                     "fetcher"]
    assert app.tables.recovery.completed.is_set()


def test_with_nothing_assigned_there_is_nothing_to_seek() -> None:
    calls: list[Any] = []
    app = app_with(calls, {TP("t-states-changelog", 0)})
    asyncio.run(app.tables.recovery._seek_then_resume())
    assert "seek" not in calls
    assert ("resume_partitions", []) in calls


class Thread:
    """Stands in for the consumer thread: records the partitions each fetch asked for."""

    def __init__(self) -> None:
        self.asked: list[Any] = []

    async def getmany(self, active: Any, timeout: float) -> dict[TP, list[int]]:
        self.asked.append(active)
        await asyncio.sleep(0)         # the fetch waits; meanwhile faust changes its set
        return {tp: [0] for tp in active} if active is not None else {}


def consumer_with(thread: Thread) -> SafeConsumer:
    app = App("t", broker="kafka://127.0.0.1:1", web_enabled=False, store="memory://")
    consumer = app.consumer
    assert isinstance(consumer, SafeConsumer)
    consumer._thread = thread  # type: ignore[assignment]
    return consumer


def test_a_fetch_keeps_the_partitions_it_asked_for_when_faust_pauses_them() -> None:
    thread = Thread()
    consumer = consumer_with(thread)
    live = {TP("t-states-changelog", 0)}

    async def fetch_while_recovery_pauses() -> Any:
        fetch = asyncio.ensure_future(consumer._getmany(live, 1.0))
        await asyncio.sleep(0)
        live.clear()                   # recovery pauses the changelog mid-fetch
        return await fetch

    records = asyncio.run(fetch_while_recovery_pauses())
    assert thread.asked == [{TP("t-states-changelog", 0)}]   # not the emptied set
    assert list(records) == [TP("t-states-changelog", 0)]


def test_with_no_active_partition_nothing_is_fetched_not_everything() -> None:
    thread = Thread()
    records = asyncio.run(consumer_with(thread)._getmany(set(), 1.0))
    assert records == {} and thread.asked == []


def test_a_client_only_fetch_still_asks_for_every_partition() -> None:
    thread = Thread()
    asyncio.run(consumer_with(thread)._getmany(None, 1.0))
    assert thread.asked == [None]


def test_offsets_are_committed_only_after_the_producer_is_flushed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    consumer = consumer_with(Thread())

    class Producer:
        async def flush(self) -> None:
            await asyncio.sleep(0)   # the broker acknowledging what was sent
            calls.append("producer flushed")

    async def commit(self: Any, offsets: Any, start_new_transaction: bool = True) -> bool:
        calls.append(("offsets committed", dict(offsets)))
        return True

    monkeypatch.setattr(consumer.app, "_producer", Producer(), raising=False)
    monkeypatch.setattr(type(consumer).__mro__[1], "_commit_offsets", commit)
    done = asyncio.run(consumer._commit_offsets({TP("reconcile.values", 0): 7}))
    assert done and calls == ["producer flushed",
                              ("offsets committed", {TP("reconcile.values", 0): 7})]
