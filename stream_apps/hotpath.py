"""The hot path: one pass over each batch of ingest events, composed of four steps.

Consumes ``^ingest\\..*`` and, per batch, decodes each event once and:

1. **judges** it (:mod:`govbus.stream_apps.judge`: the provider's signature, framing,
   registered schema, Art. 12 identifiers, locality, time, event id); a rejected one goes
   to ``dlq.<agency>`` with its reasons and, whole, to quarantine; an accepted one,
   unchanged, to
   ``validated.<agency>.<resource>`` (the accepted stream, for audit and for anyone who taps
   it; the hot path itself does not read it back);
2. **routes** an accepted one (:mod:`govbus.core.routing`, grants and keys reloaded every
   ``GOVBUS_GRANT_REFRESH_S``) to ``deliver.<recipient>.<resource>``, signed with the bus's
   key (:mod:`govbus.stream_apps.route`);
3. **feeds** its canonical values to ``reconcile.values``, bundled per partition
   (:mod:`govbus.stream_apps.feed`);
4. **settles** it once the broker acknowledged every output: its settling process
   (:mod:`govbus.stream_apps.settle`, off this one's interpreter lock) appends one row per
   acknowledged delivery to the delivery log and keeps ``entity_state``, the gate's counts,
   the quarantine and the accepted event ids; only then are its input offsets committed.
   :class:`govbus.core.batching.Pipelined` orders that, :data:`DEPTH` batches deep.

A crash replays the batch: deliveries may be sent again (subscribers de-duplicate by the
``event_id`` header), the log filters keys it already holds, the reconciler absorbs values it
holds, the counts skip offsets they counted. Nothing is lost, nothing is logged twice.

There is one topology: the steps are never run as stages of their own joined by topics (each
hop fetched and decoded every event again, on the same cores; docs/adr/0005-one-topology.md).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, Producer

from govbus.core import metrics, quarantine, topics
from govbus.core.batching import Acks, Pipelined, produce, serve
from govbus.core.catalogue import Resource, load_catalogue
from govbus.core.config import Settings
from govbus.core.control_plane import ControlPlane
from govbus.core.deliveries import DeliverySchemas
from govbus.core.entity_state import state_rows
from govbus.core.event_counts import Judged
from govbus.core.kafka import KnownTopics, consumer_config, producer_config
from govbus.core.keyring import bus_signer
from govbus.core.keys_store import BUS
from govbus.core.keys_store import register as register_key
from govbus.core.registry import SchemaRegistry
from govbus.core.routing import Delivery, Encoder, RoutePlan, by_resource, with_meta
from govbus.core.sharing import Grant
from govbus.core.signatures import Signer
from govbus.delivery_log import ingest_shard
from govbus.stream_apps import event_ids, judge, route
from govbus.stream_apps.feed import VALUES_TOPIC, Bundles, ValueFeed, owners
from govbus.stream_apps.judge import NegativeCache, judged, quarantined, reject
from govbus.stream_apps.route import Acked, log_fields, queue_deliveries
from govbus.stream_apps.settle import Batch, Settled, Settler

log = logging.getLogger("govbus.hotpath")
GROUP = "govbus-hotpath"
INGEST_PATTERN = topics.INGEST_PATTERN
#: batches past judging and routing at once, waiting for their acknowledgements or being
#: written, in order: with 4, the acknowledgements of later batches arrive while one is
#: written (the measurements are in docs/adr/0005-one-topology.md)
DEPTH = 4


@dataclass
class Decided:
    """What judging and routing one batch produced, before anything is settled."""

    acks: Acks
    judged: list[Judged] = field(default_factory=list)
    accepted: list[tuple[Any, Resource, dict[str, Any]]] = field(default_factory=list)
    routed: list[route.Routed] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    #: the delivery-log shard of each of ``deliveries``: its ingest record's topic-partition
    shards: list[str] = field(default_factory=list)
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
                 ids: event_ids.EventIds, signer: Signer | None,
                 schemas: DeliverySchemas | None = None) -> None:
        self.lookup, self.control, self.owner_of = lookup, control, owner_of
        #: each grant's projection schema, registered at its first delivery
        self.schemas = schemas or DeliverySchemas(lookup.registry.dsn)
        self.bundles, self.topics, self.ids = bundles, topics, ids
        #: the bus's key the deliveries are signed with; with None, and ``verify`` False,
        #: :mod:`bench` measures what signing and verifying cost (never so in a deployment)
        self.signer, self.verify = signer, signer is not None

    def decide(self, msgs: list[Any], producer: Producer) -> Decided:
        """Judge and route every record; produce DLQ and validated records, collect the
        deliveries and the reconciler's values, and produce them (without waiting)."""
        grants = by_resource(self.control.current())
        verifier = self.control.verifier if self.verify else None
        at = dt.datetime.now(dt.UTC)
        now = int(at.timestamp() * 1000)
        plans: dict[int | None, _Plan] = {}  # schema id -> what this batch does with its events
        out = Decided(Acks("outputs"))
        bundles, ids = self.bundles, self.ids
        ids.prefetch(msgs)  # the batch's ids are looked up while its records are judged
        verdicts = [judge.judge(msg.topic(), msg.value(), self.lookup, now_ms=now,
                                max_skew_ms=self.max_skew_ms, verifier=verifier,
                                key=msg.key(), headers=msg.headers()) for msg in msgs]
        for msg, verdict in zip(msgs, verdicts, strict=True):
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
                out.quarantined.append(quarantined(msg, verdict))
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
                assert verdict.schema_id is not None  # accepted: decoded by a registered one
                plan = plans[verdict.schema_id] = self._plan(
                    raw, grants, at, self.lookup(verdict.schema_id).version)
            out.accepted.append((msg, plan.resource, event))
            result = plan.route.route(event)
            out.routed.append((plan.resource, event, result))
            out.deliveries += result.deliveries
            if result.deliveries:
                out.shards += [ingest_shard(msg.topic(), msg.partition())] \
                    * len(result.deliveries)
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
        queue_deliveries(producer, out.deliveries, out.acks, out.acked, self.signer, out.shards)
        return out

    def _plan(self, raw: Resource, grants: dict[str, list[Grant]], at: dt.datetime,
              version: int) -> _Plan:
        """What this batch does with ``raw``'s events (version ``version`` of its contract),
        looked up once: today's catalogue metadata, the route over the grants in force with
        each grant's encoder, the canonical values to feed."""
        resource = with_meta(raw, self.control.meta.get(raw.id))

        def encoder(grant: Grant) -> Encoder:
            return self.schemas.encoder(grant.recipient, raw, version, grant.fields,
                                        grant.masked_fields, grant.delivery_format)

        return _Plan(resource, RoutePlan(resource, grants.get(raw.id, []), at, encoder),
                     ValueFeed(raw, self.owner_of))


class HotPath(Pipelined[Decided]):
    """One hot-path worker; several may run in the same consumer group."""

    component = "hotpath"
    depth = DEPTH

    def __init__(self, settings: Settings, group: str = GROUP, pattern: str = INGEST_PATTERN,
                 batch: int = 2000, refresh_s: float | None = None) -> None:
        # lz4: the broker stores and serves each batch as it is, so it copies less (Tansu's
        # CPU per event 61-82 against 84-101 µs, bench.cpu); consumers decompress, any client
        super().__init__(lambda on_commit: Consumer(consumer_config(settings, group,
                                                                    on_commit=on_commit)),
                         batch, Producer(producer_config(settings, **{
                             "linger.ms": 20, "compression.type": "lz4"})))
        self.settings = settings
        dsn = settings.database_url
        bus = bus_signer(settings)  # no bus key: refused at start, nothing goes out unsigned
        register_key(dsn, BUS, bus.private.public_key(), "hot path")
        self.control = ControlPlane(dsn, refresh_s or settings.grant_refresh_s, group)
        self.decider = Decider(NegativeCache(SchemaRegistry(dsn)), self.control,
                               owners(load_catalogue(settings.schemas_dir)),
                               Bundles.on_broker(settings),
                               KnownTopics(settings, [VALUES_TOPIC]),
                               event_ids.EventIds(dsn), bus)
        self.decider.max_skew_ms = settings.max_clock_skew_ms
        self.consumer.subscribe([pattern])
        self.settler = Settler(dsn)
        #: the log writer's lock wait of each of the latest batches, seconds (``make bench``)
        self.lock_waits: deque[float] = deque(maxlen=100_000)

    def idle(self) -> None:
        self.control.refresh_idle()
        super().idle()

    def close(self) -> None:
        super().close()
        self.settler.close()
        self.control.close()
        self.decider.ids.close()

    def decide(self, msgs: list[Any]) -> Decided:
        started = time.perf_counter()
        out = self.decider.decide(msgs, self.producer)
        # judging and routing, against the log writer's time in _observe: the settling
        # process keeps up while its log writing takes no longer than this (bench prints both)
        self.stats["decide us"] += round((time.perf_counter() - started) * 1e6)
        return out

    def settle(self, msgs: list[Any], decided: Decided) -> None:
        """Have the settling process log, keep state and count (the pipeline then commits)."""
        out = decided
        filed = [*out.quarantined, *map(quarantine.refused, out.acks.set_aside)]
        logged = self.settler.settle(Batch([log_fields(a) for a in out.acked],
                                           state_rows(out.accepted),
                                           [tuple(j) for j in out.judged], filed,
                                           out.accepted_ids))
        out.quarantined = filed
        self._observe(out, logged)

    def _observe(self, out: Decided, logged: Settled) -> None:
        """Statistics and Prometheus counters of a finished batch, once per label set."""
        self.stats.update(+out.counts)
        judge.observe(out.judged)
        route.observe(out.routed, out.acked)
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
            # the log writer's wait for its shards' locks (other writers of them: none while
            # the partitions are owned by one worker each)
            metrics.LOG_LOCK_WAIT.observe(logged.waited_s)
            self.lock_waits.append(logged.waited_s)
            waited_us = round(logged.waited_s * 1e6)
            self.stats["log lock wait us"] += waited_us
            self.stats["log lock wait max us"] = max(self.stats["log lock wait max us"],
                                                     waited_us)
            self.stats["log write us"] += round(logged.log_s * 1e6)


def main() -> None:
    """``python -m govbus.stream_apps.hotpath``: run one hot-path worker until SIGTERM or SIGINT."""
    serve("hot path", lambda: HotPath(Settings.from_env()),
          lambda stage: (f"consuming {INGEST_PATTERN}, grants refreshed every "
                         f"{stage.control.refresh_s:.1f} s"))


if __name__ == "__main__":
    main()
