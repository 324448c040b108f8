"""Three fixes to faust-streaming 0.15.3, each of which let the reconciler lose input.

The first two showed up as one symptom: a reconciler killed with ``kill -9`` and started again
recovers its table, says "Worker ready", and never processes the values published while it
was down, about once in five restarts on the embedded broker (where its input comes in few,
large bundles that one fetch returns whole). Each drops records that the consumer has already
fetched, so the consumer's position is past them and nothing fetches them again until the
next restart. Found by logging every fetch, seek and queue clear of failing runs.

1. **A live set where a snapshot was meant.** faust checks that its set of active
   (unpaused) partitions is not empty, then hands *the same set object* to the consumer
   thread. If recovery pauses the changelog partitions before that thread drains its
   buffer, the set is empty by then, and aiokafka's ``fetched_records`` reads an empty set
   as *every* assigned partition: it returns the still-paused input partitions' records,
   which faust then discards as not active. :class:`SafeConsumer` hands over a copy and
   asks for nothing when the copy is empty.
2. **Resuming before seeking.** faust ends a recovery by resuming the input partitions,
   then seeking them to their committed offsets, then ``app.flow_control.resume()``, which
   clears every agent queue. A record fetched in between is cleared from the queue while the
   position has moved past it. :class:`OrderedRecovery` seeks while the partitions are still
   paused, resumes the flow (its clear finds nothing of theirs), and only then resumes them.
   (faust-streaming issues #216 and #596 describe the same family of races.)
3. **Committing before the output is out.** faust commits the offsets of processed input
   without waiting for what processing sent (case messages, table changelog): they may still
   sit in its producer buffer or in a 20 ms linger. A ``kill -9`` in that window loses them
   while the input counts as done: the fault suite, killing the reconciler mid-stream, missed
   one case in about ten runs. :class:`SafeConsumer` flushes the producer before every commit.

:class:`App` installs all three: it is ``faust.App`` with this consumer and this recovery, and
nothing else changed. The fixes touch faust internals, so ``pyproject.toml`` pins
faust-streaming to the 0.15 series they were written against; ``tests/unit/
test_faust_fixes.py`` pins the behaviour; the reconciler restart test in
``tests/integration/test_reconcile.py`` and the fault suite are the end-to-end checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Set
from typing import Any

import faust
from faust.tables.manager import TableManager as FaustTableManager
from faust.tables.recovery import Recovery
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP


class OrderedRecovery(Recovery):
    """faust's Recovery, resuming input partitions only after the seek and the flow."""

    async def _resume_streams(self, generation_id: int = 0) -> None:
        # faust's path for an app without tables; kept in step with on_recovery_completed
        await self.app.on_rebalance_complete.send()
        if self.app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again")
            return
        await self._seek_then_resume()
        self.tables.on_actives_ready()
        self.tables.on_standbys_ready()
        self.app.on_rebalance_end()
        self.log.info("Worker ready")

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        self.log.info("Restore complete!")
        await self.app.on_rebalance_complete.send()
        self._set_recovery_ended()
        callbacks = [asyncio.ensure_future(table.on_recovery_completed(
            self.actives_for_table[table], self.standbys_for_table[table]))
            for table in self.tables.values()]
        if callbacks:
            await asyncio.wait(callbacks)
        if self.app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again app id %r param %r",
                             self.app.consumer_generation_id, generation_id)
            return
        await self._seek_then_resume()
        self.tables.on_actives_ready()
        if not self.app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        self.app.on_rebalance_end()
        self.log.info("Worker ready")

    async def _seek_then_resume(self) -> None:
        consumer = self.app.consumer
        streams = {tp for tp in consumer.assignment() if not self._is_changelog_tp(tp)}
        if streams:
            self.log.info("Seek stream partitions to committed offsets.")
            await self._wait(consumer.perform_seek(),
                             timeout=self.app.conf.broker_request_timeout)
        self.completed.set()
        self.app.flow_control.resume()   # clears the agents' queues: nothing of `streams` yet
        consumer.resume_flow()
        consumer.resume_partitions(streams)
        fetcher: Any = self.app._fetcher  # type: ignore[attr-defined]
        await fetcher.maybe_start()


class TableManager(FaustTableManager):
    """faust's TableManager with :class:`OrderedRecovery`."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = OrderedRecovery(self.app, self, beacon=self.beacon,
                                             loop=self.loop)
        return self._recovery


class SafeConsumer(AIOKafkaConsumer):
    """faust's aiokafka consumer, fetching only from the partitions active when it asks and
    committing input only once everything sent so far has been acknowledged."""

    async def _getmany(self, active_partitions: Set[TP] | None, timeout: float) -> Any:
        if active_partitions is None:          # a client-only app: every partition
            return await super()._getmany(None, timeout)
        snapshot = set(active_partitions)      # faust's own set changes under the fetch
        if not snapshot:                       # never "all partitions" by accident
            await asyncio.sleep(min(timeout, 0.1))
            return {}
        return await super()._getmany(snapshot, timeout)

    async def _commit_offsets(self, offsets: Any, start_new_transaction: bool = True) -> bool:
        # the offsets are of input already processed: whatever that processing sent is
        # queued by now, and the flush waits until the broker has acknowledged all of it
        await self.app.producer.flush()
        return await super()._commit_offsets(offsets,
                                             start_new_transaction=start_new_transaction)


class App(faust.App):
    """``faust.App`` with :class:`SafeConsumer` and :class:`OrderedRecovery`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("TableManager", TableManager)
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        transport = super()._new_transport()
        # create_consumer() builds self.Consumer; only this app's transport gets ours
        transport.Consumer = SafeConsumer  # type: ignore[misc]
        return transport
