"""The router: share-class routing of every validated event, in batches (Art. 15, 17, 25).

Consumes ``^validated\\..*``, decodes each event with the schema registry, decides its
deliveries with :func:`govbus.stream_apps.routing.route` against the grants in force, and per batch:

1. produces each delivery to ``deliver.<recipient>.<resource>`` (JSON; key = entity key;
   headers ``event_id``, ``grant_id``) and waits for the acknowledgements;
2. produces one delivery record per acknowledged delivery to ``govbus.deliveries``, with the
   partition and offset the broker gave it, and waits again;
3. upserts the latest record of each entity into ``entity_state`` (for online query and
   backfill, Art. 17) in one statement, deletes in another;
4. only then commits its input offsets (from a thread of its own, without waiting for the
   broker: :class:`govbus.core.batching.Committer`).

At-least-once: a crash replays a batch, re-producing deliveries that the delivery-log sink
de-duplicates by (event_id, recipient, channel). Grants and catalogue metadata are reloaded
every ``GOVBUS_GRANT_REFRESH_S`` seconds (default 1.0), so a grant or revocation takes effect
without a restart. A batch loop rather than a faust agent, for the gate's reasons (see
:mod:`govbus.stream_apps.gate`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson
import psycopg2
import psycopg2.extensions
import psycopg2.extras
from confluent_kafka import Consumer, KafkaError, Producer

from govbus.core import db, metrics, sharing_store
from govbus.core.batching import (
    Acks,
    BatchStage,
    Committer,
    next_offsets,
    produce,
    serve,
    usable,
)
from govbus.core.config import Settings
from govbus.core.envelope import now_ms
from govbus.core.errors import (
    ConfigError,
    DatabaseError,
    RegistryError,
    SerdeError,
)
from govbus.core.kafka import KnownTopics, consumer_config, producer_config
from govbus.core.registry import SchemaRegistry
from govbus.core.serde import unframe
from govbus.core.sharing import Grant
from govbus.stream_apps.router_metrics import Routed, observe
from govbus.stream_apps.routing import (
    DELIVERY_TOPIC,
    Delivery,
    RoutePlan,
    by_resource,
    delivery_record,
    with_meta,
)

log = logging.getLogger("govbus.router")
VALIDATED_PATTERN = r"^validated\..*"
Headers = list[tuple[str, str | bytes | None]]
Decoded = tuple[Any, Any, dict[str, Any]]  # (message, Resource, event)


def refresh_interval() -> float:
    """``GOVBUS_GRANT_REFRESH_S``: how stale the router's grants may get, in seconds."""
    raw = os.environ.get("GOVBUS_GRANT_REFRESH_S") or "1.0"
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"GOVBUS_GRANT_REFRESH_S={raw!r} is not a number") from exc
    if not 0 < value <= 3600:
        raise ConfigError(f"GOVBUS_GRANT_REFRESH_S={value} is out of range (0, 3600]")
    return value


def _json_default(value: Any) -> str:
    return value.hex() if isinstance(value, bytes) else str(value)


def json_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON; bytes and other non-JSON Avro values as strings.

    orjson, not ``json.dumps``: the router encodes two documents per delivery, and the
    standard encoder was about a sixth of its time (``make bench``). Same bytes as
    ``json.dumps(value, ensure_ascii=False, separators=(",", ":"))``, except that a float
    may print its exponent differently (``1.5e-7``, not ``1.5e-07``): the same number."""
    return orjson.dumps(value, default=_json_default,
                        option=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS)


def load_catalogue_meta(dsn: str) -> dict[str, dict[str, Any]]:
    """The current catalogue metadata of every resource (share class, provision methods)."""
    try:
        with db.transaction(dsn) as conn, conn.cursor() as cur:
            return read_catalogue_meta(cur)
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot read the catalogue: {exc}") from exc


def read_catalogue_meta(cur: Any) -> dict[str, dict[str, Any]]:
    """:func:`load_catalogue_meta` on the caller's cursor."""
    cur.execute("SELECT resource_id, metadata FROM catalogue_resources")
    return {row[0]: row[1] for row in cur.fetchall()}


class ControlPlane:
    """Grants and catalogue metadata, cached and reloaded every ``refresh_s`` seconds."""

    def __init__(self, dsn: str, refresh_s: float, group: str = "govbus-router") -> None:
        self.refresh_s = refresh_s
        # kept: a connection per reload had PostgreSQL start a backend every second
        self.db = db.Reused(dsn)
        self._gauges = (metrics.ROUTER_GRANTS.labels(group),
                        metrics.ROUTER_GRANTS_LOADED.labels(group))
        self.grants: list[Grant] = []
        self.meta: dict[str, dict[str, Any]] = {}
        self.loaded_at: dt.datetime | None = None  # wall clock when the last load began
        self._due = 0.0

    def reload(self) -> None:
        """Load now; DatabaseError if PostgreSQL cannot answer."""
        started = dt.datetime.now(dt.UTC)
        with self.db.use("cannot read grants and the catalogue") as conn, conn, \
                conn.cursor() as cur:
            grants = sharing_store.read_grants(cur)
            meta = read_catalogue_meta(cur)
        self.grants, self.meta, self.loaded_at = grants, meta, started
        self._due = time.monotonic() + self.refresh_s
        self._gauges[0].set(len(grants))
        self._gauges[1].set(started.timestamp())

    def current(self) -> list[Grant]:
        """Grants no older than ``refresh_s``; raises rather than route on stale grants."""
        if time.monotonic() >= self._due:
            self.reload()
        return self.grants

    def close(self) -> None:
        self.db.close()

    def refresh_idle(self) -> None:
        """Reload if due while no events flow; a failure is logged and retried later."""
        if time.monotonic() < self._due:
            return
        try:
            self.reload()
        except DatabaseError as exc:
            self._due = time.monotonic() + self.refresh_s
            log.warning("cannot refresh grants: %s", exc)


class StateWriter:
    """Keeps ``entity_state`` (latest record per entity) on one reused connection.

    A batch travels as one JSON document per statement, unpacked by ``jsonb_to_recordset``:
    one ``orjson`` call for the whole batch instead of a ``Json`` adapter and a formatted
    ``VALUES`` row per event (``execute_values`` was ≈ 19 µs of the worker's CPU per event,
    in-process)."""

    UPSERT = """INSERT INTO entity_state (resource_id, entity_key, record, event_id, locality,
                    updated_ms)
                SELECT r, k, rec, e, l, ms FROM jsonb_to_recordset(%s::jsonb)
                    AS x(r text, k text, rec jsonb, e text, l text, ms bigint)
                ON CONFLICT (resource_id, entity_key) DO UPDATE SET record = EXCLUDED.record,
                    event_id = EXCLUDED.event_id, locality = EXCLUDED.locality,
                    updated_ms = EXCLUDED.updated_ms
                WHERE entity_state.updated_ms <= EXCLUDED.updated_ms"""
    DELETE = """DELETE FROM entity_state s USING jsonb_to_recordset(%s::jsonb)
                    AS d(r text, k text, ms bigint)
                WHERE s.resource_id = d.r AND s.entity_key = d.k AND s.updated_ms <= d.ms"""

    def __init__(self, dsn: str) -> None:
        self.db = db.Reused(dsn)

    def write(self, decoded: list[Decoded]) -> None:
        """Apply the newest event per entity of a batch; replays are harmless."""
        self.apply(state_rows(decoded))

    def apply(self, rows: StateRows) -> None:
        """Apply rows :func:`state_rows` rendered (maybe in another process)."""
        upserts, deletes = rows
        if not upserts and not deletes:
            return
        with self.db.use("cannot update entity_state") as conn, conn, conn.cursor() as cur:
            if upserts:
                cur.execute(self.UPSERT, (upserts,))
            if deletes:
                cur.execute(self.DELETE, (deletes,))

    def close(self) -> None:
        self.db.close()


class StateRows(NamedTuple):
    """A batch's ``entity_state`` changes as the JSON documents :class:`StateWriter` sends
    (None: no such change): plain strings, so that the hot path can hand them to its
    settling process (:mod:`govbus.stream_apps.settler`) as they are."""

    upserts: str | None
    deletes: str | None


def state_rows(decoded: list[Decoded]) -> StateRows:
    """The newest event per entity of a batch, as upserts and deletes."""
    latest = latest_per_entity(decoded)
    upserts = [{"r": r, "k": k, "rec": e["after"], "e": e["event_id"],
                "l": e["source"]["locality"], "ms": e["occurred_ms"]}
               for (r, k), e in latest.items() if e["op"] != "d"]
    deletes = [{"r": r, "k": k, "ms": e["occurred_ms"]}
               for (r, k), e in latest.items() if e["op"] == "d"]
    return StateRows(_dumps(upserts) if upserts else None,
                     _dumps(deletes) if deletes else None)


def _dumps(value: Any) -> str:
    return json_bytes(value).decode()


def latest_per_entity(decoded: list[Decoded]) -> dict[tuple[str, str], dict[str, Any]]:
    """The newest event of each entity in a batch (a later offset wins a tie)."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for _msg, resource, event in decoded:
        key = (resource.id, event["key"])
        held = latest.get(key)
        if held is None or held["occurred_ms"] <= event["occurred_ms"]:
            latest[key] = event
    return latest


# delivery, partition, offset, delivered_ms (no partition/offset: an online query)
Acked = tuple[Delivery, int | None, int | None, int]


def send_deliveries(producer: Producer, deliveries: list[Delivery]) -> list[Acked]:
    """Produce deliveries, wait for the broker; return each with its partition and offset."""
    acked: list[Acked] = []
    acks = Acks("deliveries")
    queue_deliveries(producer, deliveries, acks, acked)
    acks.wait(producer)
    return acked


def queue_deliveries(producer: Producer, deliveries: list[Delivery], acks: Acks,
                     acked: list[Acked]) -> None:
    """Produce deliveries without waiting: each acknowledged one is appended to ``acked`` with
    its partition and offset, each failure to ``acks``, which counts them all."""
    def callback(delivery: Delivery) -> Callable[[Any, Any], None]:
        def on_delivery(err: KafkaError | None, msg: Any) -> None:
            if err is None:  # recorded before it is counted: settle() then sees it
                acked.append((delivery, msg.partition(), msg.offset(), now_ms()))
            acks.answer(err, f"{delivery.topic}: ", msg)
        return on_delivery

    for d in deliveries:
        headers: Headers = [("event_id", str(d.value["event_id"]).encode()),
                            ("grant_id", str(d.grant_id).encode())]
        acks.expect()
        produce(producer, d.topic, d.value["key"], json_bytes(d.value), callback(d), headers)


def send_records(producer: Producer, acked: list[Acked], channel: str) -> None:
    """Produce one delivery record per acknowledged delivery to ``govbus.deliveries``."""
    acks = Acks("delivery records")
    for d, partition, offset, delivered_ms in acked:
        record = delivery_record(d, channel, partition, offset, delivered_ms,
                                 d.topic if partition is not None else None)
        produce(producer, DELIVERY_TOPIC, str(d.value["event_id"]), json_bytes(record), acks,
                [("event_id", str(d.value["event_id"]).encode())])
    acks.wait(producer)


class Router(BatchStage):
    """One router worker; several may run in the same consumer group."""

    component = "router"

    def __init__(self, settings: Settings, group: str = "govbus-router",
                 pattern: str = VALIDATED_PATTERN, batch: int = 1000,
                 refresh_s: float | None = None) -> None:
        self.committer = Committer(self.component)  # commits off this thread (see there)
        super().__init__(Consumer(consumer_config(settings, group,
                                                  on_commit=self.committer.answer)), batch)
        self.settings = settings
        self.registry = SchemaRegistry(settings.database_url)
        self.control = ControlPlane(settings.database_url, refresh_s or refresh_interval(),
                                    group)
        self.state = StateWriter(settings.database_url)
        self.producer = Producer(producer_config(settings, **{"linger.ms": 20}))
        self.consumer.subscribe([pattern])
        self.topics = KnownTopics(settings)

    def idle(self) -> None:
        self.control.refresh_idle()

    def close(self) -> None:
        self.committer.close(self.consumer)
        self.producer.flush(30)
        super().close()
        self.state.close()
        self.control.close()

    def process(self, msgs: list[Any]) -> None:
        """Route, deliver, log the deliveries, keep the state, then commit (in that order)."""
        grants = by_resource(self.control.current())
        at = dt.datetime.now(dt.UTC)
        decoded, offsets, counts = self._decode(msgs)
        deliveries: list[Delivery] = []
        routed: list[Routed] = []
        plans: dict[str, RoutePlan] = {}  # resource id -> its route in this batch
        for _msg, resource, event in decoded:
            plan = plans.get(resource.id)
            if plan is None:
                plan = plans[resource.id] = RoutePlan(resource, grants.get(resource.id, []), at)
            result = plan.route(event)
            routed.append((resource, event, result))
            deliveries += result.deliveries
            counts[f"delivered {resource.id}"] += len(result.deliveries)
            counts[f"withheld {resource.id}"] += result.withheld
        self.topics.ensure({d.topic for d in deliveries} | {DELIVERY_TOPIC})
        acked = send_deliveries(self.producer, deliveries)
        send_records(self.producer, acked, "exchange")
        self.state.write(decoded)
        self.committer.submit(self.consumer, offsets)
        self.stats.update(+counts)
        observe(routed, acked)

    def _decode(self, msgs: list[Any]
                ) -> tuple[list[Decoded], dict[tuple[str, int], int], Counter[str]]:
        """Decode a batch; undecodable records (the gate let none through) are skipped."""
        current: dict[int, Any] = {}  # schema id -> its resource with the current metadata
        decoded: list[Decoded] = []
        msgs = usable(msgs)
        counts: Counter[str] = Counter()
        for msg in msgs:
            try:
                schema_id, body = unframe(msg.value())
                reg = self.registry.by_id(schema_id)
                event = reg.codec.decode(body)
            except (SerdeError, RegistryError) as exc:
                log.error("skipping %s[%d]@%d: %s", msg.topic(), msg.partition(),
                          msg.offset(), exc)
                counts[f"undecodable {msg.topic()}"] += 1
                continue
            resource = current.get(schema_id)
            if resource is None:  # once per schema and batch
                resource = current[schema_id] = with_meta(
                    reg.resource, self.control.meta.get(reg.resource.id))
            decoded.append((msg, resource, event))
        return decoded, next_offsets(msgs), counts


def routing_from(pattern: str) -> Callable[[Any], str]:
    """The start-up line of a stage that routes what it consumes from ``pattern``."""
    return lambda stage: (f"consuming {pattern}, grants refreshed every "
                          f"{stage.control.refresh_s:.1f} s")


def main() -> None:
    """``python -m govbus.stream_apps.router``: run one router until SIGTERM or SIGINT."""
    serve("router", lambda: Router(Settings.from_env()), routing_from(VALIDATED_PATTERN))


if __name__ == "__main__":
    main()
