"""``entity_state`` as the router and the hot path keep it, on a real PostgreSQL: the newest
event per entity wins whatever the order, replays change nothing, and a record comes back
exactly as it was sent (quotes, backslashes, non-ASCII, nulls, nested values)."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg2.extras

from govbus.core import db
from govbus.core.entity_state import StateWriter

RESOURCE = "tax.tax_registration"


def ev(key: str, op: str, ms: int, record: dict[str, Any] | None = None) -> tuple[Any, Any,
                                                                                    Any]:
    class Res:  # what StateWriter reads of a resource
        id = RESOURCE
    row = record if record is not None else {"uscc": key, "n": ms}
    return (None, Res(), {"key": key, "op": op, "occurred_ms": ms,
                          "event_id": f"{key}@{ms}", "source": {"locality": "360502"},
                          "after": None if op == "d" else row,
                          "before": row if op == "d" else None})


def state(dsn: str, keys: list[str]) -> dict[str, dict[str, Any]]:
    with db.transaction(dsn) as conn, conn.cursor(
            cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("SELECT entity_key, record, event_id, locality, updated_ms "
                    "FROM entity_state WHERE resource_id = %s AND entity_key = ANY(%s)",
                    (RESOURCE, keys))
        return {r["entity_key"]: dict(r) for r in cur.fetchall()}


def test_newest_event_per_entity_wins_and_replays_change_nothing(database_url: str) -> None:
    a, b, c = (f"k-{uuid.uuid4().hex[:10]}" for _ in range(3))
    odd = {"uscc": a, "name": 'O\'Brien "王" \\ back\tslash', "phone": None,
           "tags": ["x", {"deep": 1.5}], "empty": ""}
    writer = StateWriter(database_url)
    try:
        writer.write([ev(a, "c", 100), ev(a, "u", 300, odd), ev(a, "u", 200),  # newest wins
                      ev(b, "c", 100), ev(c, "c", 100)])
        writer.write([ev(b, "d", 50), ev(c, "d", 150)])  # an older delete loses
        writer.write([ev(a, "u", 250), ev(b, "u", 90)])  # a late, older update loses
        first = state(database_url, [a, b, c])
        writer.write([ev(a, "c", 100), ev(a, "u", 300, odd), ev(b, "c", 100)])  # a replay
        assert state(database_url, [a, b, c]) == first
    finally:
        writer.close()
    assert set(first) == {a, b}
    assert first[a]["record"] == odd and first[a]["event_id"] == f"{a}@300"
    assert (first[a]["locality"], first[a]["updated_ms"]) == ("360502", 300)
    assert first[b]["record"] == {"uscc": b, "n": 100}
