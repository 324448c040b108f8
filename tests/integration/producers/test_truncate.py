"""A ``TRUNCATE`` of the captured table, in both capture modes, against a real broker and real
PostgreSQL servers: one event, op ``t``, with neither image and an empty key, in its place
among the table's changes. In logical mode it goes on through the hot path: accepted onto
``validated.*``, and ``entity_state`` no longer holds the entities it removed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from govbus.core import db
from govbus.core.catalogue import Catalogue
from govbus.core.config import Settings
from govbus.core.kafka import ensure_topics
from govbus.core.registry import SchemaRegistry
from govbus.core.serde import unframe
from govbus.producers import logical
from govbus.producers.outbox import OutboxRelay, install
from govbus.stream_apps.hotpath import HotPath
from tests.integration.helpers import TopicReader, running, wait_until
from tests.integration.producers.test_logical_capture import drain, logical_pg, relay_for, table
from tests.integration.producers.test_outbox import (
    AGENCY,
    RESOURCE,
    TOPIC,
    Reader,
    broker_settings,
    execute,
    insert,
    outbox,
    resident,
    source,
)
from tests.integration.stream_apps.test_routing import state_event_id

__all__ = ["broker_settings", "logical_pg", "source", "table"]  # fixtures used here
POP = f"{AGENCY}.{RESOURCE}"


def envelopes(messages: list[Any], registry: SchemaRegistry) -> list[dict[str, Any]]:
    """The events of a validated topic's messages (as the agency framed them)."""
    out = []
    for msg in messages:
        schema_id, body = unframe(msg.value())
        out.append(registry.by_id(schema_id).codec.decode(body))
    return out


@pytest.fixture
def hotpath(settings: Settings) -> Iterator[HotPath]:
    with running(HotPath(settings, group=f"test-truncate-{uuid.uuid4().hex[:8]}",
                         batch=200)) as stage:
        yield stage


def test_a_truncate_in_logical_mode_is_one_event_the_gate_accepts(
        settings: Settings, logical_pg: str, catalogue: Catalogue, table: str,
        hotpath: HotPath) -> None:
    logical.install(logical_pg, table, AGENCY, RESOURCE, catalogue, snapshot_rows=False)
    kept, gone = resident(700), [resident(n) for n in (701, 702)]
    with db.transaction(logical_pg) as conn, conn.cursor() as cur:
        for row in gone:
            insert(cur, table, row)
    validated = TopicReader(settings, [f"validated.{POP}"])
    registry = SchemaRegistry(settings.database_url)
    try:
        relay = relay_for(logical_pg, settings, catalogue)
        assert drain(relay, 2) == 2
        wait_until(lambda: all(state_event_id(settings.database_url, r["resident_id"], POP)
                               for r in gone), 30, "the inserts held in entity_state")
        with db.transaction(logical_pg) as conn, conn.cursor() as cur:
            cur.execute(f"TRUNCATE {table}")
            insert(cur, table, kept)  # the reload after it, in its transaction
        assert drain(relay, 4) == 4 and relay.refused == 0
        relay.close()
        wait_until(lambda: [e["op"] for e in envelopes(validated.poll(), registry)].count("t") == 1
                   and len(validated.messages) >= 4, 30, "the truncate validated")
    finally:
        validated.close()
    values = envelopes(validated.messages, registry)
    truncate = next(v for v in values if v["op"] == "t")
    reload = next(v for v in values if v["key"] == kept["resident_id"])
    schema, name = table.split(".")
    assert (truncate["before"], truncate["after"], truncate["key"]) == (None, None, "")
    assert (truncate["source"]["schema"], truncate["source"]["table"],
            truncate["source"]["connector"]) == (schema, name, "logical")
    assert truncate["transaction"]["id"] == reload["transaction"]["id"]
    assert truncate["transaction"]["total_order"] < reload["transaction"]["total_order"]
    wait_until(lambda: not any(state_event_id(settings.database_url, r["resident_id"], POP)
                               for r in gone), 30, "the truncated entities removed")
    wait_until(lambda: state_event_id(settings.database_url, kept["resident_id"], POP)
               == reload["event_id"], 30, "the row after the truncate kept")


def test_a_truncate_in_trigger_mode_is_one_outbox_row_published_in_order(
        broker_settings: Settings, database_url: str, catalogue: Catalogue,
        source: str) -> None:
    install(database_url, source, AGENCY, RESOURCE, catalogue)
    with db.transaction(database_url) as conn, conn.cursor() as cur:
        insert(cur, source, resident(710))
        insert(cur, source, resident(711))
    with db.transaction(database_url) as conn, conn.cursor() as cur:
        cur.execute(f"TRUNCATE {source}")
        insert(cur, source, resident(712))
    rows = outbox(database_url, source)
    assert [r[2] for r in rows] == ["c", "c", "t", "c"]
    assert rows[2][3] == rows[3][3]  # the truncate and the reload: one transaction
    relay = OutboxRelay(database_url, broker_settings, AGENCY, RESOURCE, catalogue=catalogue)
    assert relay.run_once() == 4 and relay.refused == 0
    relay.close()
    ensure_topics(broker_settings, [TOPIC])
    reader = Reader(broker_settings, f"test-truncate-{uuid.uuid4().hex[:8]}")
    wait_until(lambda: len(reader.poll()) >= 4, 20, "4 events")
    reader.close()
    events = {e["event_id"]: e for e, _ in reader.events}
    truncate, reload = events[rows[2][1]], events[rows[3][1]]
    assert (truncate["op"], truncate["before"], truncate["after"], truncate["key"]) == (
        "t", None, None, "")
    assert truncate["source"]["table"] == source.split(".")[1]
    assert (truncate["transaction"]["total_order"], reload["transaction"]["total_order"]) == (
        1, 2)
    assert truncate["occurred_ms"] <= reload["occurred_ms"]
    assert execute(database_url, "SELECT count(*) FROM pg_trigger WHERE tgrelid = "
                   "%s::regclass AND NOT tgisinternal", (source,)) == [(2,)]
