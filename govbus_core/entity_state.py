"""``entity_state``: the current record of every entity, for online query and backfill
(Art. 17).

The hot path's settling step keeps it, per batch, after the batch's deliveries were
acknowledged: the newest event per entity is upserted (or, for a delete, the row removed),
never over a newer one, so a replayed batch is harmless.

A truncate (op ``t``) removes every entity of its resource whose state is older than the
truncate (``updated_ms < occurred_ms``), before the batch's upserts and deletes, which carry
only what follows it. State of the truncate's own instant is kept, whichever batch settled it:
logical capture dates a whole transaction by its commit, and the rows of a reload in the
truncate's transaction (``TRUNCATE t; INSERT …``) may be settled before it, from another
partition. Within one batch, an event of the truncate's own transaction that comes before it
(``transaction.total_order``; without a transaction block, the earlier offset) is left out.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from govbus.core import db
from govbus.core.serde import json_bytes

Decoded = tuple[Any, Any, dict[str, Any]]  # (message, Resource, event)


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

    TRUNCATE = """DELETE FROM entity_state s USING jsonb_to_recordset(%s::jsonb)
                    AS t(r text, ms bigint)
                WHERE s.resource_id = t.r AND s.updated_ms < t.ms"""

    def __init__(self, dsn: str) -> None:
        self.db = db.Reused(dsn)

    def write(self, decoded: list[Decoded]) -> None:
        """Apply the newest event per entity of a batch; replays are harmless."""
        self.apply(state_rows(decoded))

    def apply(self, rows: StateRows) -> None:
        """Apply rows :func:`state_rows` rendered (maybe in another process)."""
        upserts, deletes, truncates = rows
        if not upserts and not deletes and not truncates:
            return
        with self.db.use("cannot update entity_state") as conn, conn, conn.cursor() as cur:
            if truncates:  # first: what the batch holds after a truncate is newer than it
                cur.execute(self.TRUNCATE, (truncates,))
            if upserts:
                cur.execute(self.UPSERT, (upserts,))
            if deletes:
                cur.execute(self.DELETE, (deletes,))

    def close(self) -> None:
        self.db.close()


class StateRows(NamedTuple):
    """A batch's ``entity_state`` changes as the JSON documents :class:`StateWriter` sends
    (None: no such change): plain strings, so that the hot path can hand them to its
    settling process (:mod:`govbus.stream_apps.settle`) as they are."""

    upserts: str | None
    deletes: str | None
    truncates: str | None = None  # per resource, the newest truncate's occurred_ms


def state_rows(decoded: list[Decoded]) -> StateRows:
    """The newest event per entity of a batch, as upserts and deletes, and the newest
    truncate per resource; an entity's event the truncate supersedes is left out."""
    cut = truncates(decoded)
    latest = [(r, k, e) for (r, k), (at, e) in _latest(decoded).items()
              if r not in cut or not _before(at, e, *cut[r])]
    upserts = [{"r": r, "k": k, "rec": e["after"], "e": e["event_id"],
                "l": e["source"]["locality"], "ms": e["occurred_ms"]}
               for r, k, e in latest if e["op"] != "d"]
    deletes = [{"r": r, "k": k, "ms": e["occurred_ms"]} for r, k, e in latest if e["op"] == "d"]
    cuts = [{"r": r, "ms": t["occurred_ms"]} for r, (_, t) in cut.items()]
    return StateRows(_dumps(upserts) if upserts else None,
                     _dumps(deletes) if deletes else None,
                     _dumps(cuts) if cuts else None)


def _dumps(value: Any) -> str:
    return json_bytes(value).decode()


def truncates(decoded: list[Decoded]) -> dict[str, tuple[int, dict[str, Any]]]:
    """The newest truncate of each resource in a batch (a later offset wins a tie), with its
    place in the batch."""
    cut: dict[str, tuple[int, dict[str, Any]]] = {}
    for at, (_msg, resource, event) in enumerate(decoded):
        if event["op"] == "t":
            held = cut.get(resource.id)
            if held is None or held[1]["occurred_ms"] <= event["occurred_ms"]:
                cut[resource.id] = (at, event)
    return cut


def _before(at: int, event: dict[str, Any], cut_at: int, cut: dict[str, Any]) -> bool:
    """Whether ``event`` (at ``at`` in the batch) is not newer than the truncate ``cut``:
    older, or at the same instant and not after it in their transaction (else the batch)."""
    if event["occurred_ms"] != cut["occurred_ms"]:
        return bool(event["occurred_ms"] < cut["occurred_ms"])
    mine, theirs = event.get("transaction"), cut.get("transaction")
    if mine and theirs and mine.get("id") == theirs.get("id"):
        return bool(mine["total_order"] < theirs["total_order"])
    return at < cut_at


def _latest(decoded: list[Decoded]) -> dict[tuple[str, str], tuple[int, dict[str, Any]]]:
    latest: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
    for at, (_msg, resource, event) in enumerate(decoded):
        if event["op"] == "t":
            continue
        key = (resource.id, event["key"])
        held = latest.get(key)
        if held is None or held[1]["occurred_ms"] <= event["occurred_ms"]:
            latest[key] = (at, event)
    return latest


def latest_per_entity(decoded: list[Decoded]) -> dict[tuple[str, str], dict[str, Any]]:
    """The newest event of each entity in a batch (a later offset wins a tie); truncates,
    about no one entity, are not among them."""
    return {key: event for key, (_, event) in _latest(decoded).items()}
