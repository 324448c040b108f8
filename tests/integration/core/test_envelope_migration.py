"""The migration of shipped contracts from envelope format 1 to format 2, on a real PostgreSQL.

A database that registered every shipped contract under format 1 (its ``schema_versions``
rows as format 1 wrote them: the contract's fingerprint alone, the format-1 envelope of
``tests/fixtures/envelope_format1.json``) runs ``registry.sync``: each resource gets version 2,
whose envelope is format 2, after the backward-transitive check; a second sync changes nothing.
Events framed with a format-1 schema id still decode by that id and pass the gate, and a
format-1 record reads under the format-2 envelope with its fields mapped by the aliases.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from typing import Any

import fastavro
import psycopg2.extras
import pytest

from govbus.core import db, registry
from govbus.core.catalogue import Catalogue, Resource, strip_meta
from govbus.core.envelope import envelope_schema, now_ms
from govbus.core.registry import SchemaRegistry
from govbus.core.serde import Codec, frame, unframe
from govbus.core.validation import check_event
from govbus.stream_apps.judge import judge
from tests.unit.core.test_envelope_formats import FORMAT_1

POP = "public_security.population_register"
PERSON: dict[str, Any] = {
    "resident_id": "11010519491231002X", "name": "王芳", "gender": "F",
    "birth_date": "1949-12-31", "ethnicity": None, "residence_address": "渝水区仙来东大道1号",
    "household_division": "360502", "phone": None}


def format_1_fingerprint(res: Resource) -> str:
    """A version's fingerprint as format 1 computed it: of the contract alone."""
    canonical = json.dumps(strip_meta(res.schema), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def register_format_1(dsn: str, catalogue: Catalogue) -> dict[str, int]:
    """Every shipped contract as version 1 under format 1; schema id per resource."""
    ids = {}
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        for res in catalogue:
            cur.execute("INSERT INTO catalogue_resources (resource_id, provider, title, "
                        "database_class, share_class, legal_basis, update_period, reviewed, "
                        "metadata) VALUES (%s, %s, %s, %s, %s, %s, %s::interval, %s, %s)",
                        (res.id, res.provider, res.title, res.database_class, res.share_class,
                         res.legal_basis, res.update_period, res.reviewed,
                         psycopg2.extras.Json(res.meta)))
            cur.execute("INSERT INTO schema_versions (resource_id, version, fingerprint, "
                        "contract, envelope_schema) VALUES (%s, 1, %s, %s, %s) "
                        "RETURNING schema_id",
                        (res.id, format_1_fingerprint(res), psycopg2.extras.Json(res.schema),
                         psycopg2.extras.Json(FORMAT_1[res.id])))
            ids[res.id] = cur.fetchone()[0]
    return ids


@pytest.fixture
def format_1_database(empty_database: str, catalogue: Catalogue
                      ) -> Iterator[tuple[str, dict[str, int]]]:
    db.migrate(empty_database)
    yield empty_database, register_format_1(empty_database, catalogue)


def format_1_event(occurred_ms: int) -> dict[str, Any]:
    """A population-register update as format 1 framed it."""
    return {"event_id": "format-1-event", "resource": POP, "schema_version": 1, "op": "u",
            "key": PERSON["resident_id"], "before": PERSON,
            "after": {**PERSON, "phone": "13800000000"},
            "source": {"agency": "public_security", "locality": "360502", "system": "outbox",
                       "table": "ps.residents", "txid": 4711, "seq": 99},
            "occurred_ms": occurred_ms, "ts_ms": occurred_ms + 5}


def test_sync_registers_format_2_and_format_1_events_still_pass(
        format_1_database: tuple[str, dict[str, int]], catalogue: Catalogue) -> None:
    dsn, old_ids = format_1_database
    results = registry.sync(dsn, catalogue)
    assert {r.resource_id: (r.version, r.status) for r in results} == {
        res.id: (2, "registered") for res in catalogue}
    assert {r.status for r in registry.sync(dsn, catalogue)} == {"unchanged"}
    reg = SchemaRegistry(dsn)
    for res in catalogue:
        latest = reg.latest(res.id)
        assert latest.version == 2 and latest.schema_id != old_ids[res.id]
        assert latest.codec.schema == fastavro.parse_schema(envelope_schema(res))

    # an event already on the bus, framed with the format-1 id, decodes by that id
    now = now_ms()
    old = format_1_event(now - 60_000)
    payload = frame(old_ids[POP], Codec(FORMAT_1[POP]).encode(old))
    schema_id, body = unframe(payload)
    registered = reg.by_id(schema_id)
    assert registered.version == 1
    decoded = registered.codec.decode(body)
    assert decoded == old
    assert check_event(registered.resource, decoded, "public_security", now_ms=now,
                       max_skew_ms=300_000) == []
    verdict = judge(f"ingest.{POP}", payload, reg.by_id, now_ms=now, max_skew_ms=300_000)
    assert verdict.accepted, verdict.violations

    # and reads under the format-2 envelope, its fields mapped by the aliases
    as_new: dict[str, Any] = fastavro.schemaless_reader(  # type: ignore[assignment]
        io.BytesIO(body), fastavro.parse_schema(FORMAT_1[POP]),
        reg.latest(POP).codec.schema)
    assert (as_new["source"]["connector"], as_new["source"]["txId"],
            as_new["source"]["lsn"], as_new["source"]["table"]) == ("outbox", 4711, 99,
                                                                   "ps.residents")
    assert as_new["transaction"] is None and as_new["source"]["snapshot"] == "false"
    assert {k: as_new[k] for k in old if k != "source"} == {
        k: v for k, v in old.items() if k != "source"}
