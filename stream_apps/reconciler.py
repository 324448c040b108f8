"""The reconciler: a batch stage with its state in PostgreSQL (Art. 8, 19, 20).

Reads ``reconcile.values`` (written by the hot path or :mod:`govbus.stream_apps.feed` in
bundles, one message per partition and batch, each entity in the partition its id hashes to,
so every agency's values of one entity meet in one partition; single value messages are read
too), keeps per entity and canonical attribute the latest value of each agency in the
``reconcile_state`` table (one row per entity) and writes every case it opens, keeps open or
closes to ``reconcile.cases`` (JSON, keyed by case key) for the cases sink. The rules are pure
functions in :mod:`govbus.stream_apps.reconcile_rules`; this module is the wiring.

One batch, in this order:

1. in one PostgreSQL transaction, take a lock per input partition of the batch
   (``pg_advisory_xact_lock``: during a rebalance the partition's old and new owner may both
   hold its records for a moment; the lock makes their read-modify-write of an entity take
   turns), read the states of the batch's entities, apply the rules in offset order;
2. produce the case messages and wait until the broker acknowledged every one;
3. write the changed states and commit the transaction;
4. commit the input offsets to Kafka.

A crash anywhere replays the batch from the last committed offset. Whatever it finds already
applied (after step 3) the rules absorb: a value not newer than the one held changes nothing
and re-emits its attribute's cases, which the sink upserts by key. So a ``kill -9`` loses no
case and duplicates none, with no changelog to rebuild and nothing held in memory between
batches: a restarted reconciler is ready at once, and a restart of the memory-only embedded
broker loses no state.

Why not faust's table (what this once was): faust-streaming 0.15 lost the reconciler's
input in three ways under ``kill -9`` (each found and patched here) and, after those, still
a few cases in a thousand under repeated kills; its table costs about 100 µs of CPU per event
on this path, lives in memory (3.5 GiB per million entities) and is rebuilt from a changelog
that the embedded broker does not keep over a restart. See the README's "Reconciliation".
"""

from __future__ import annotations

import logging
import zlib
from typing import Any

import orjson
import psycopg2
import psycopg2.extensions
import psycopg2.extras
from confluent_kafka import Consumer, Producer

from govbus.core import db, metrics
from govbus.core.batching import Acks, BatchStage, commit, next_offsets, produce, serve, usable
from govbus.core.config import Settings
from govbus.core.envelope import now_ms
from govbus.core.kafka import consumer_config, ensure_topics, producer_config
from govbus.stream_apps.feed import CASES_TOPIC, VALUES_TOPIC
from govbus.stream_apps.reconcile_rules import EntityState, ValueChange, apply_entity

log = logging.getLogger("govbus.reconciler")

SELECT = "SELECT entity, state FROM reconcile_state WHERE reconciler = %s AND entity = ANY(%s)"
UPSERT = """
INSERT INTO reconcile_state (reconciler, entity, state) VALUES %s
ON CONFLICT (reconciler, entity) DO UPDATE SET state = EXCLUDED.state
"""


def members(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The value messages one ``reconcile.values`` message carries: a bundle's, or itself."""
    bundle = message.get("bundle")
    return bundle if isinstance(bundle, list) else [message]


def changes(message: dict[str, Any]) -> list[ValueChange]:
    """The value changes one value message carries, one per canonical attribute."""
    entity, agency, owners = message["entity"], message["agency"], message["owners"]
    occurred_ms, event_id = int(message["occurred_ms"]), str(message["event_id"])
    resource = message["resource"]
    return [ValueChange(entity, attr, agency, owners[attr], value, occurred_ms, event_id,
                        resource)
            for attr, value in sorted(message["values"].items())]


def parse(raw: bytes | None) -> list[tuple[str, list[ValueChange]]]:
    """``(entity, changes)`` of each value message in one record; ValueError, KeyError or
    TypeError if the record is not a value message or a bundle of them."""
    message = orjson.loads(raw or b"")
    if not isinstance(message, dict):
        raise ValueError("not a JSON object")
    return [(str(one["entity"]), changes(one)) for one in members(message)]


def lock_key(reconciler: str) -> int:
    """The first half of the advisory lock on one input partition (an int4)."""
    return zlib.crc32(reconciler.encode()) - 2**31


def reconcile(held: dict[str, EntityState | None],
              records: list[tuple[str, list[ValueChange]]], now: int, days: int
              ) -> tuple[dict[str, EntityState], list[dict[str, Any]]]:
    """Apply ``records`` in order to the ``held`` states (updated in place); return the states
    that changed and the case messages to emit. Pure: no broker, no database."""
    changed: dict[str, EntityState] = {}
    emitted: list[dict[str, Any]] = []
    for entity, entity_changes in records:
        state, cases = apply_entity(held.get(entity), entity_changes, now, days)
        if state is not None and state is not held.get(entity):
            held[entity] = changed[entity] = state
        emitted += cases
    return changed, emitted


def read_states(cur: Any, group: str, entities: list[str]) -> dict[str, EntityState | None]:
    """The held states of ``entities`` (those it has), in the caller's transaction."""
    cur.execute(SELECT, (group, entities))
    return {entity: orjson.loads(state) for entity, state in cur.fetchall()}


def write_states(cur: Any, group: str, changed: dict[str, EntityState]) -> None:
    """Insert or replace the states of ``changed``, in the caller's transaction."""
    if changed:
        rows = [(group, entity, orjson.dumps(state).decode()) for entity, state in changed.items()]
        psycopg2.extras.execute_values(cur, UPSERT, rows, page_size=len(rows))


class Reconciler(BatchStage):
    """One reconciler worker; several may share the group (they split the partitions)."""

    component = "reconciler"
    eager = False  # off the delivery path: full batches, fewer and larger transactions

    def __init__(self, settings: Settings, group: str | None = None, batch: int = 100) -> None:
        ensure_topics(settings, [VALUES_TOPIC, CASES_TOPIC])
        # GOVBUS_RECONCILER_ID: the consumer group, and the name its state is kept under
        self.group = group or settings.reconciler_id
        super().__init__(Consumer(consumer_config(settings, self.group)), batch)
        self.settings = settings
        self.days = settings.case_deadline_days  # working days to verify a case (Art. 20)
        self.lock = lock_key(self.group)
        self.producer = Producer(producer_config(settings, **{"linger.ms": 20}))
        self.db = db.Reused(settings.database_url)
        self.consumer.subscribe([VALUES_TOPIC])

    def close(self) -> None:
        self.producer.flush(30)
        super().close()
        self.db.close()

    def _records(self, msgs: list[Any]) -> list[tuple[str, list[ValueChange]]]:
        records: list[tuple[str, list[ValueChange]]] = []
        for msg in msgs:
            try:
                records += parse(msg.value())
            except (ValueError, KeyError, TypeError) as exc:  # never block on one bad record
                log.error("malformed value message at %s[%d]@%d skipped: %s", msg.topic(),
                          msg.partition(), msg.offset(), exc)
                self.stats["malformed"] += 1
                metrics.RECONCILER_VALUES.labels("malformed").inc()
        return records

    def process(self, msgs: list[Any]) -> None:
        msgs = usable(msgs)
        records = self._records(msgs)
        with self.db.use("cannot keep the reconciler's state") as conn, conn, \
                conn.cursor() as cur:
            for part in sorted({m.partition() for m in msgs}):
                cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (self.lock, part))
            held = read_states(cur, self.group, sorted({e for e, _ in records}))
            changed, cases = reconcile(held, records, now_ms(), self.days)
            self._send(cases)  # acknowledged before the state that produced them commits
            write_states(cur, self.group, changed)
        self.stats["values"] += len(records)
        metrics.RECONCILER_VALUES.labels("applied").inc(len(records))
        self.stats["entities changed"] += len(changed)
        commit(self.consumer, next_offsets(msgs))

    def _send(self, cases: list[dict[str, Any]]) -> None:
        acks = Acks("case messages")
        for case in cases:
            produce(self.producer, CASES_TOPIC, case["case_key"].encode(), orjson.dumps(case),
                    acks.expect())
            metrics.RECONCILE_CASES.labels(case["attribute"], case["status"]).inc()
        acks.settle(self.producer)
        self.stats["case messages"] += len(cases)


def main() -> None:
    """``python -m govbus.stream_apps.reconciler``: run until SIGTERM or SIGINT."""
    serve("reconciler", lambda: Reconciler(Settings.from_env()),
          lambda r: f"{VALUES_TOPIC} → {CASES_TOPIC}, state in PostgreSQL as {r.group!r}")


if __name__ == "__main__":
    main()
