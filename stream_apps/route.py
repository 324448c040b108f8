"""The route step: an accepted event's deliveries produced, acknowledged and accounted for
(Art. 15, 17, 25).

Which agency receives what is decided by :mod:`govbus.core.routing` (pure); here each
delivery is produced to ``deliver.<recipient>.<resource>`` (framed Avro under the projection's
schema, or JSON, as its grant says: :mod:`govbus.core.deliveries`; key = entity key; headers
``event_id``, ``grant_id``, ``govbus-use`` — the grant's use restrictions and commitment,
Art. 24, :func:`govbus.core.commitments.use_header` — and the bus's batch signature,
:mod:`govbus.core.signatures`, which the subscriber verifies) without waiting, each
acknowledgement is kept with the partition and offset the broker gave it (what the delivery
log records), and a batch's routing is counted and timed once per label set.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, Producer

from govbus.core import metrics
from govbus.core.batching import Acks, produce
from govbus.core.commitments import USE_HEADER
from govbus.core.envelope import now_ms
from govbus.core.routing import Delivery, RouteResult
from govbus.core.signatures import Signer, leaf
from govbus.delivery_log import BACKFILL_SHARD, LEGACY, LogEntry, entry

Routed = tuple[Any, dict[str, Any], RouteResult]  # (Resource, event, what routing decided)
Headers = list[tuple[str, str | bytes | None]]
# a delivery the broker acknowledged: delivery, partition, offset, delivered_ms, the hash of
# what was delivered (its signature's leaf: topic, key, value, event id), hex, and the shard
# of the delivery log it is logged in (the ingest topic-partition its event came from,
# ``query`` or ``backfill``: govbus.delivery_log.chain)
Acked = tuple[Delivery, int | None, int | None, int, str | None, str]


def queue_deliveries(producer: Producer, deliveries: list[Delivery], acks: Acks,
                     acked: list[Acked], signer: Signer | None,
                     shards: Sequence[str] | None = None) -> None:
    """Produce deliveries without waiting, signed by ``signer`` (the bus; None only where
    :mod:`bench` measures what signing costs): each acknowledged one is appended to ``acked``
    with its partition and offset and its log shard (``shards[n]`` for ``deliveries[n]``;
    the legacy shard ``""`` without them), each failure to ``acks``, which counts them all."""
    if shards is not None and len(shards) != len(deliveries):
        raise ValueError(f"{len(shards)} shards for {len(deliveries)} deliveries")

    def callback(delivery: Delivery, content: str, shard: str) -> Callable[[Any, Any], None]:
        def on_delivery(err: KafkaError | None, msg: Any) -> None:
            if err is None:  # recorded before it is counted: settle() then sees it
                acked.append((delivery, msg.partition(), msg.offset(), now_ms(), content,
                              shard))
            acks.answer(err, f"{delivery.topic}: ", msg)
        return on_delivery

    values = [d.encode(d.value) for d in deliveries]
    ids = [str(d.value["event_id"]).encode() for d in deliveries]
    leaves = [leaf(d.topic, str(d.value["key"]).encode(), v, i)
              for d, v, i in zip(deliveries, values, ids, strict=True)]
    signed = signer.sign_leaves(leaves) if signer is not None and deliveries else None
    for n, d in enumerate(deliveries):
        headers: Headers = [("event_id", ids[n]), ("grant_id", str(d.grant_id).encode()),
                            (USE_HEADER, d.use)]
        if signed is not None:
            headers += signed[n]
        acks.expect()
        produce(producer, d.topic, d.value["key"], values[n],
                callback(d, leaves[n].hex(), shards[n] if shards is not None else LEGACY),
                headers)


def send_deliveries(producer: Producer, deliveries: list[Delivery], signer: Signer,
                    shard: str = BACKFILL_SHARD) -> list[Acked]:
    """Produce deliveries signed by ``signer`` and wait for the broker (a backfill's chunk);
    return each with its partition and offset, to be logged in ``shard``."""
    acked: list[Acked] = []
    acks = Acks("deliveries")
    queue_deliveries(producer, deliveries, acks, acked, signer, [shard] * len(deliveries))
    acks.wait(producer)
    return acked


def log_entry(acked: Acked, channel: str = "exchange") -> LogEntry:
    """The delivery-log entry of one acknowledged delivery, in its shard."""
    d, partition, offset, delivered_ms, content, shard = acked
    return entry(d, channel, partition, offset, delivered_ms, d.topic, content, shard)


def log_fields(acked: Acked) -> tuple[Any, ...]:
    """:func:`log_entry`'s fields as a plain tuple: what the settling process is sent (it
    pickles five times faster than the named tuple, which need not be built first)."""
    d, partition, offset, delivered_ms, content, shard = acked
    value = d.value
    return (value["event_id"], "exchange", d.provider, d.recipient, value["resource"],
            d.grant_id, tuple(d.fields), tuple(d.masked), d.topic, partition, offset,
            delivered_ms, content, shard)


def observe(routed: Sequence[Routed], acked: Sequence[Acked]) -> None:
    """Count events in, deliveries out and withheld events; time each delivery.

    Latency runs from the envelope's publish time (``ts_ms``) to the broker's acknowledgement
    of the delivery: what a subscribing agency waits, gate and router included. Counters are
    summed per label set and incremented once per batch: a labelled ``inc`` per delivery was
    about a seventh of the router's time in a profile of ``make bench``.
    """
    share_class: dict[str, str] = {}
    events: Counter[tuple[str, ...]] = Counter()
    withheld: Counter[tuple[str, ...]] = Counter()
    delivered: Counter[tuple[str, ...]] = Counter()
    for resource, _event, result in routed:
        share = share_class[resource.id] = resource.share_class or "unknown"
        events[(str(resource.provider), resource.id)] += 1
        if result.withheld:
            withheld[(str(resource.provider), resource.id, share)] += 1
    latency: dict[str, list[float]] = {}  # resource -> its deliveries' latencies
    now = now_ms()
    for a in acked:
        delivery, delivered_ms = a[0], a[3]
        value = delivery.value
        resource_id = str(value.get("resource"))
        delivered[(delivery.provider, delivery.recipient, resource_id,
                   share_class.get(resource_id, "unknown"))] += 1
        published = value.get("ts_ms")
        if isinstance(published, int):
            seconds = max(0, (delivered_ms or now) - published) / 1000
            latency.setdefault(resource_id, []).append(seconds)
    for resource_id, amounts in latency.items():
        metrics.observe_many(metrics.DELIVERY_LATENCY.labels(resource_id), amounts)
    for counter, counts in ((metrics.ROUTER_EVENTS, events),
                            (metrics.ROUTER_WITHHELD, withheld),
                            (metrics.ROUTER_DELIVERIES, delivered)):
        for labels, n in counts.items():
            counter.labels(*labels).inc(n)
