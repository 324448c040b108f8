"""The reconciler: a faust app with one table (Art. 8, 19, 20).

Reads ``reconcile.values`` (written by :mod:`stream_apps.reconcile_feed` or the hot path, in
bundles per partition, each entity in the partition its id hashes to, so that every agency's
values of one entity meet in one partition; a single value message keyed by entity id is
read too), keeps per
entity and canonical attribute the latest value of each agency in the table
``entity_to_attribute_states`` (one entry per entity: one changelog message per value message)
and writes every case it opens, keeps open or closes to ``reconcile.cases`` (JSON, keyed by
case key) for the cases sink. The rules are pure functions in
:mod:`stream_apps.reconcile_rules`; this module is only the wiring.

Why faust here (and not for the gate): the table and its changelog are what the reconciler
needs — state partitioned like its input, rebuilt from the changelog after a restart — and its
volume is a few messages per change of a canonical attribute. At-least-once: the producer is
flushed (case messages and changelog acknowledged) before input offsets are committed (faust
itself did not wait: :mod:`stream_apps.faust_fixes`); an event replayed after a
crash finds its value already held and re-emits that attribute's cases, which the sink
de-duplicates by key, so a crash neither loses nor duplicates cases.

Tansu notes (DESIGN.md): ``kafka://`` transport, short session timeouts, explicit topics with
equal partition counts for the source and the changelog, web server off.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import faust

from govbus_core import metrics
from govbus_core.config import Settings, _int_env
from govbus_core.envelope import now_ms
from govbus_core.kafka import ensure_topics, partition_count
from stream_apps import faust_fixes
from stream_apps.reconcile_feed import CASES_TOPIC, VALUES_TOPIC
from stream_apps.reconcile_rules import ValueChange, apply_entity

log = logging.getLogger("govbus.reconciler")
TABLE = "entity_to_attribute_states"


def app_id() -> str:
    """``GOVBUS_RECONCILER_ID``: the faust app id (consumer group, changelog topic prefix)."""
    return os.environ.get("GOVBUS_RECONCILER_ID") or "govbus-reconciler"


def changelog_topic(app: str | None = None) -> str:
    return f"{app or app_id()}-{TABLE}-changelog"


def deadline_days() -> int:
    """``GOVBUS_CASE_DEADLINE_DAYS`` (default 5): working days to verify a case (Art. 20)."""
    return _int_env("GOVBUS_CASE_DEADLINE_DAYS", 5, 1, 365)


def members(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The value messages one ``reconcile.values`` message carries: a bundle's, or itself."""
    bundle = message.get("bundle")
    return bundle if isinstance(bundle, list) else [message]


def changes(message: dict[str, Any]) -> list[ValueChange]:
    """The value changes one feed message carries, one per canonical attribute."""
    return [ValueChange(entity=message["entity"], attribute=attr, agency=message["agency"],
                        owner=message["owners"][attr], value=value,
                        occurred_ms=int(message["occurred_ms"]),
                        event_id=str(message["event_id"]), resource=message["resource"])
            for attr, value in sorted(message["values"].items())]


def create_app(settings: Settings, app: str | None = None) -> faust.App:
    """The faust app, its topics, its table and its agent, wired to ``settings``."""
    name = app or app_id()
    ensure_topics(settings, [VALUES_TOPIC, CASES_TOPIC])
    partitions = partition_count(settings, VALUES_TOPIC)  # as `up --partitions` made it
    ensure_topics(settings, [changelog_topic(name)], partitions)
    brokers = [f"kafka://{s.strip()}" for s in settings.bootstrap_servers.split(",")]
    # faust.App plus three fixes without which a crash or restart could lose input
    fapp = faust_fixes.App(name, broker=brokers, store="memory://", web_enabled=False,
                           topic_partitions=partitions, topic_replication_factor=1,
                           broker_session_timeout=6.0, broker_heartbeat_interval=0.5,
                           broker_commit_interval=1.0, consumer_auto_offset_reset="earliest",
                           producer_acks=-1, table_cleanup_interval=3600.0,
                           # batch changelog and case messages: with faust's default (no linger)
                           # a produce request per table write was a fifth of the reconciler's CPU
                           producer_linger=0.02,
                           # the memory store's offsets come from this process's own reads of the
                           # changelog, so a persisted offset above the high watermark only means a
                           # broker that reports a low one: Tansu's is the last batch's first
                           # offset + 1, and the check crashed a worker on a rebalance
                           recovery_consistency_check=False)
    values_topic = fapp.topic(VALUES_TOPIC, key_type=bytes, value_serializer="json",
                              partitions=partitions, internal=False)
    cases_topic = fapp.topic(CASES_TOPIC, key_type=bytes, value_serializer="json",
                             partitions=partitions, internal=False)
    table = fapp.Table(TABLE, default=None, partitions=partitions, key_type=bytes)
    days = deadline_days()

    @fapp.agent(values_topic)
    async def reconcile_values(stream: Any) -> None:
        async for message in stream:
            for one in members(message):
                key = str(one["entity"]).encode()
                held = table.get(key)
                state, cases = apply_entity(held, changes(one), now_ms(), days)
                if state is not held:
                    table[key] = state
                for case in cases:
                    await cases_topic.send(key=case["case_key"].encode(), value=case)
                    metrics.RECONCILE_CASES.labels(case["attribute"], case["status"]).inc()

    return fapp


def main() -> None:
    """``python -m stream_apps.reconciler``: one faust worker, until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    fapp = create_app(Settings.from_env())
    metrics.serve()  # process metrics for the scrape target `govbus up` assigns
    worker = faust.Worker(fapp, loglevel="info")
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
