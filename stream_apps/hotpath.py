"""The hot path: gate, router, reconcile feed and delivery log in one pass over each batch.

Consumes ``^ingest\\..*`` and, per batch, decodes each event once and:

1. judges it (:func:`govbus.stream_apps.verdict.judge`: framing, registered schema, Art. 12
   identifiers, locality); a rejected one goes to ``dlq.<agency>`` with its reasons, an
   accepted one, unchanged, to ``validated.<agency>.<resource>`` (the accepted stream, for
   audit and for anyone who taps it; the hot path itself does not read it back);
2. routes an accepted one (:func:`govbus.stream_apps.routing.route`, grants reloaded every
   ``GOVBUS_GRANT_REFRESH_S``) to ``deliver.<recipient>.<resource>``, and sends its
   canonical values to ``reconcile.values``, bundled per partition
   (:class:`govbus.stream_apps.reconcile_feed.Bundles`);
3. waits until the broker acknowledged every output, then has its settling process
   (:mod:`govbus.stream_apps.settler`, a child process: off this one's interpreter lock) append one
   row per acknowledged delivery to the delivery log (hash chain,
   :func:`govbus.consumers.delivery_log.append`), keep ``entity_state`` and the gate's counts;
4. only then commits its input offsets (from a thread of its own, without waiting for the
   broker: :class:`govbus.core.batching.Committer`).

A crash replays the batch: deliveries may be sent again (subscribers de-duplicate by the
``event_id`` header), the log filters keys it already holds, the reconciler absorbs values it
holds, the counts skip offsets they counted. Nothing is lost, nothing is logged twice.

Why one pass and not four stages joined by topics (the router and the reconcile feed reading
``validated.*``, the log sink reading ``govbus.deliveries``): each hop fetched and decoded
every event or delivery again, in the same process, on the same cores. The split stages
(:mod:`govbus.stream_apps.gate`, :mod:`govbus.stream_apps.router`,
:mod:`govbus.stream_apps.reconcile_feed`, :mod:`govbus.consumers.delivery_log`) share every
function used here and stay available for a
deployment that wants them as separate processes (never beside a hot path on the same
ingest topics: both would route). See the README's architecture section for the figures.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, Producer

from govbus.consumers.delivery_chain import Delivery as LogEntry
from govbus.core import metrics, quarantine
from govbus.core.batching import (
    Acks,
    BatchStage,
    Committer,
    next_offsets,
    produce,
    serve,
    usable,
)
from govbus.core.catalogue import Resource, load_catalogue
from govbus.core.config import Settings
from govbus.core.errors import BrokerError, DatabaseError
from govbus.core.event_counts import Judged
from govbus.core.kafka import KnownTopics, consumer_config, producer_config
from govbus.core.registry import SchemaRegistry
from govbus.core.sharing import Grant
from govbus.stream_apps import event_ids, gate, router_metrics
from govbus.stream_apps.gate import INGEST_PATTERN, NegativeCache, judged, reject
from govbus.stream_apps.reconcile_feed import VALUES_TOPIC, Bundles, ValueFeed, owners
from govbus.stream_apps.router import (
    Acked,
    ControlPlane,
    queue_deliveries,
    refresh_interval,
    routing_from,
    state_rows,
)
from govbus.stream_apps.routing import Delivery, RoutePlan, by_resource, with_meta
from govbus.stream_apps.settler import Batch, Settled, Settler
from govbus.stream_apps.verdict import Verdict, judge

log = logging.getLogger("govbus.hotpath")
GROUP = "govbus-hotpath"
#: batches past judging and routing at once, waiting for their acknowledgements or being
#: written, in order. With 2, judging the batch after next waited for this one's acknowledgements
#: *and* its writing (70 + 98 ms per batch of 1,800 against about 100 ms of judging: the judging
#: thread waited 24% of its time, temporary timers); with 4 the acknowledgements of later
#: batches arrive while one is written. One worker, 30,000-event runs alternated (medians of
#: 6-12 runs, events/s): 2 → 10.6k, 3 → 11.3k, 4 → 11.3-12.0k; 6 → 10.6k against 4's 11.3k
SETTLING = 4


def log_entry(acked: Acked) -> LogEntry:
    """The delivery-log entry of one acknowledged delivery: what the split router's record on
    ``govbus.deliveries`` (:func:`govbus.stream_apps.routing.delivery_record`) gives the log sink,
    without the record and its JSON round trip."""
    return LogEntry._make(log_fields(acked))


def log_fields(acked: Acked) -> tuple[Any, ...]:
    """:func:`log_entry`'s fields as a plain tuple: what the settling process is sent (it
    pickles five times faster than the named tuple, which need not be built first)."""
    d, partition, offset, delivered_ms = acked
    value = d.value
    return (value["event_id"], "exchange", value["provider"], d.recipient, value["resource"],
            d.grant_id, tuple(d.fields), tuple(d.masked), d.topic, partition, offset,
            delivered_ms)


@dataclass
class Decided:
    """What judging and routing one batch produced, before anything is settled."""

    acks: Acks
    judged: list[Judged] = field(default_factory=list)
    accepted: list[tuple[Any, Resource, dict[str, Any]]] = field(default_factory=list)
    routed: list[router_metrics.Routed] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    acked: list[Acked] = field(default_factory=list)  # filled by the broker's callbacks
    counts: Counter[str] = field(default_factory=Counter)
    fed: Counter[str] = field(default_factory=Counter)
    quarantined: list[quarantine.Row] = field(default_factory=list)  # rejected, whole
    accepted_ids: list[event_ids.Row] = field(default_factory=list)


@dataclass
class _Plan:
    """One resource's share of a batch: how its events are routed and fed, and its counts."""

    resource: Resource
    route: RoutePlan
    feed: ValueFeed
    accepted: int = 0
    delivered: int = 0
    withheld: int = 0
    fed: int = 0

    def count(self, out: Decided) -> None:
        rid = self.resource.id
        out.counts.update({f"accepted {rid}": self.accepted, f"delivered {rid}": self.delivered,
                           f"withheld {rid}": self.withheld})
        out.fed.update({"fed": self.fed, "no_canonical_values": self.accepted - self.fed})


def rejected(msg: Any, verdict: Verdict) -> quarantine.Row:
    """The quarantine row of a rejected record: its whole payload, for its provider."""
    event_id = dict(msg.headers() or []).get("event_id")
    first = verdict.violations[0]
    return quarantine.rejected(
        verdict.agency, first.rule, str(first)[:1000], msg.topic(), msg.partition(),
        msg.offset(),
        event_id.decode("utf-8", "replace")[:200] if isinstance(event_id, bytes) else None,
        msg.key(), msg.value())


class Decider:
    """What the hot path does with a batch before anything is settled: judge every record,
    route the accepted ones over the grants in force, bundle their canonical values for the
    reconciler, and produce all of it through the producer it is given, without waiting.
    Holds what that needs from one batch to the next (the schema lookup, the control plane's
    grants and catalogue metadata, the catalogue's owners, the bundles, the topics known to
    exist); :mod:`bench.inprocess` builds one without a broker."""

    max_skew_ms = Settings.max_clock_skew_ms  # GOVBUS_MAX_CLOCK_SKEW_MS, set by HotPath

    def __init__(self, lookup: NegativeCache, control: ControlPlane,
                 owner_of: dict[str, str], bundles: Bundles, topics: KnownTopics,
                 ids: event_ids.EventIds) -> None:
        self.lookup, self.control, self.owner_of = lookup, control, owner_of
        self.bundles, self.topics, self.ids = bundles, topics, ids

    def decide(self, msgs: list[Any], producer: Producer) -> Decided:
        """Judge and route every record; produce DLQ and validated records, collect the
        deliveries and the reconciler's values, and produce them (without waiting)."""
        grants = by_resource(self.control.current())
        at = dt.datetime.now(dt.UTC)
        plans: dict[int | None, _Plan] = {}  # schema id -> what this batch does with its events
        out = Decided(Acks("outputs"))
        bundles, ids = self.bundles, self.ids
        ids.prefetch(msgs)
        for msg in msgs:
            verdict = judge(msg.topic(), msg.value(), self.lookup,
                            now_ms=int(at.timestamp() * 1000), max_skew_ms=self.max_skew_ms)
            if verdict.accepted:  # an event id names one event (Art. 19)
                event = verdict.event
                assert event is not None  # accepted: decoded
                event_id = str(event["event_id"])
                mine = ids.check(event_id, msg.value(), event.get("ts_ms"))
                if mine is None:
                    verdict.violations.append(event_ids.reused(event_id))
                else:
                    out.accepted_ids.append((event_id, mine, verdict.resource_id))
            out.judged.append(judged(msg, verdict))
            if not verdict.accepted:
                out.counts[f"rejected {verdict.violations[0].rule}"] += 1
                source = (msg.topic(), msg.partition(), msg.offset())
                out.quarantined.append(rejected(msg, verdict))
                reject(producer, self.topics, msg, verdict, out.acks.expect(source))
                continue
            raw, event = verdict.resource, verdict.event
            assert raw is not None and event is not None  # accepted: decoded
            # the accepted record, unchanged, for whoever audits or taps the accepted stream
            produce(producer, verdict.output_topic, msg.key(), msg.value(),
                    out.acks.expect((msg.topic(), msg.partition(), msg.offset())),
                    msg.headers())
            plan = plans.get(verdict.schema_id)
            if plan is None:
                plan = plans[verdict.schema_id] = self._plan(raw, grants, at)
            out.accepted.append((msg, plan.resource, event))
            result = plan.route.route(event)
            out.routed.append((plan.resource, event, result))
            out.deliveries += result.deliveries
            plan.accepted += 1
            plan.delivered += len(result.deliveries)
            plan.withheld += result.withheld
            values = plan.feed(event)
            if values:
                bundles.add(*values)
                plan.fed += 1
        for plan in plans.values():
            plan.count(out)
        self.topics.ensure({d.topic for d in out.deliveries})
        bundles.send(producer, out.acks)
        queue_deliveries(producer, out.deliveries, out.acks, out.acked)
        return out

    def _plan(self, raw: Resource, grants: dict[str, list[Grant]], at: dt.datetime) -> _Plan:
        """What this batch does with ``raw``'s events, looked up once: today's catalogue
        metadata, the route over the grants in force, the canonical values to feed."""
        resource = with_meta(raw, self.control.meta.get(raw.id))
        return _Plan(resource, RoutePlan(resource, grants.get(raw.id, []), at),
                     ValueFeed(raw, self.owner_of))


class HotPath(BatchStage):
    """One hot-path worker; several may run in the same consumer group."""

    component = "hotpath"

    def __init__(self, settings: Settings, group: str = GROUP, pattern: str = INGEST_PATTERN,
                 batch: int = 2000, refresh_s: float | None = None) -> None:
        self.committer = Committer(self.component)
        super().__init__(Consumer(consumer_config(settings, group,
                                                  on_commit=self.committer.answer)), batch)
        self.settings = settings
        dsn = settings.database_url
        self.control = ControlPlane(dsn, refresh_s or refresh_interval(), group)
        self.decider = Decider(NegativeCache(SchemaRegistry(dsn)), self.control,
                               owners(load_catalogue(settings.schemas_dir)),
                               Bundles.on_broker(settings),
                               KnownTopics(settings, [VALUES_TOPIC]),
                               event_ids.EventIds(dsn))
        self.decider.max_skew_ms = settings.max_clock_skew_ms
        # lz4: the broker stores and serves each batch as it is, so it copies less (Tansu's
        # CPU per event 61-82 against 84-101 µs, bench.cpu); consumers decompress, any client
        self.producer = Producer(producer_config(settings, **{"linger.ms": 20,
                                                             "compression.type": "lz4"}))
        self.consumer.subscribe([pattern])
        # batches settle in a pipeline while the next is judged and routed: one thread waits
        # for a batch's acknowledgements while another has the batch before it written, by
        # the settling process (govbus.stream_apps.settler), off this process's interpreter lock
        self._acker = ThreadPoolExecutor(1, thread_name_prefix="hotpath-acks")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="hotpath-write")
        self._inflight: deque[tuple[list[Any], Future[None]]] = deque()
        self._failed: list[Any] = []
        self.settler = Settler(dsn)

    def idle(self) -> None:
        self.control.refresh_idle()
        while self._inflight and self._inflight[0][1].done():
            self._join(len(self._inflight) - 1)  # one that failed while none came: replay now

    def close(self) -> None:
        try:
            self._join(0)  # let the batches in flight commit
        except (DatabaseError, BrokerError) as exc:
            log.warning("last batches not settled, they will be replayed: %s", exc)
        for pool in (self._acker, self._writer):
            pool.shutdown()
        self.committer.close(self.consumer)
        self.producer.flush(30)
        super().close()
        self.settler.close()
        self.control.close()
        self.decider.ids.close()

    def process(self, msgs: list[Any]) -> None:
        """Judge, route and produce this batch while earlier ones settle; then hand it to the
        settling pipeline (at most :data:`SETTLING` batches in it)."""
        msgs = usable(msgs)
        try:
            out = self.decider.decide(msgs, self.producer)
        finally:
            self._join(SETTLING - 1)  # or this raises and every unsettled batch is replayed
        acked = self._acker.submit(out.acks.settle, self.producer)
        before = self._inflight[-1][1] if self._inflight else None
        self._inflight.append((msgs, self._writer.submit(self._settle, msgs, out, acked,
                                                         before)))

    def _settle(self, msgs: list[Any], out: Decided, acked: Future[None],
                before: Future[None] | None) -> None:
        """Once the broker acknowledged every output: have the settling process log, keep
        state and count; then commit (in that order). Runs in the writer thread, batch after
        batch; a batch whose predecessor failed fails too, so that no offset is committed
        past a batch that was not settled."""
        acked.result()
        if before is not None:
            before.result()
        filed = [*out.quarantined, *map(quarantine.refused, out.acks.set_aside)]
        logged = self.settler.settle(Batch([log_fields(a) for a in out.acked],
                                           state_rows(out.accepted),
                                           [tuple(j) for j in out.judged], filed,
                                           out.accepted_ids))
        out.quarantined = filed
        self.committer.submit(self.consumer, next_offsets(msgs))
        self._observe(out, logged)

    def _join(self, keep: int) -> None:
        """Wait until at most ``keep`` batches are settling; if one failed, wait for all
        (each fails after it) and keep their records for the rewind."""
        while len(self._inflight) > keep:
            msgs, settling = self._inflight[0]
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

    def unsettled(self) -> list[Any]:
        failed, self._failed = self._failed, []
        return failed

    def _observe(self, out: Decided, logged: Settled) -> None:
        """Statistics and Prometheus counters of a finished batch, once per label set."""
        self.stats.update(+out.counts)
        gate.observe(out.judged)
        router_metrics.observe(out.routed, out.acked)
        for outcome, n in out.fed.items():
            metrics.RECONCILE_FEED.labels(outcome).inc(n)
        for (agency, stage), n in Counter((q.agency, q.stage) for q in out.quarantined).items():
            metrics.QUARANTINED.labels(agency, stage).inc(n)
        if out.acks.set_aside:
            self.stats["set aside"] += len(out.acks.set_aside)
        if out.acked:
            self.stats["logged"] += logged.written
            self.stats["duplicates"] += logged.duplicates
            metrics.LOG_RECORDS.labels("written").inc(logged.written)
            metrics.LOG_RECORDS.labels("duplicate").inc(logged.duplicates)


def main() -> None:
    """``python -m govbus.stream_apps.hotpath``: run one hot-path worker until SIGTERM or SIGINT."""
    serve("hot path", lambda: HotPath(Settings.from_env()), routing_from(INGEST_PATTERN))


if __name__ == "__main__":
    main()
