"""The envelope of format 2 reads every event of format 1, for each shipped contract: by
govbus's checker (what ``catalogue sync`` runs, backward-transitive) and by Apache Avro's own.

``tests/fixtures/envelope_format1.json`` holds the format-1 envelope of each shipped contract
(resource id → Avro schema), as format 1's ``envelope_schema`` made it: govbus's own shape,
record ``<Row>Envelope``, ``source`` {agency, locality, system, table, txid, seq}, ops c, u, d, r.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import fastavro
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from avro.schema import parse

from govbus.core.catalogue import Catalogue, load_catalogue
from govbus.core.compat import incompatibilities
from govbus.core.envelope import FORMAT, envelope_schema

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "envelope_format1.json"
FORMAT_1: dict[str, dict[str, Any]] = json.loads(FIXTURE.read_text(encoding="utf-8"))
CATALOGUE: Catalogue = load_catalogue()


def test_every_shipped_contract_has_its_format_1_envelope() -> None:
    assert FORMAT == 2
    assert sorted(FORMAT_1) == sorted(r.id for r in CATALOGUE)


@pytest.mark.parametrize("resource_id", sorted(FORMAT_1))
def test_format_2_reads_format_1_by_govbus_checker(resource_id: str) -> None:
    new = envelope_schema(CATALOGUE.resources[resource_id])
    assert incompatibilities(new, FORMAT_1[resource_id]) == []


@pytest.mark.parametrize("resource_id", sorted(FORMAT_1))
def test_format_2_reads_format_1_by_avros_checker(resource_id: str) -> None:
    new = envelope_schema(CATALOGUE.resources[resource_id])
    result = ReaderWriterCompatibilityChecker().get_compatibility(
        parse(json.dumps(new)), parse(json.dumps(FORMAT_1[resource_id])))
    assert result.compatibility is SchemaCompatibilityType.compatible, result.messages


def test_format_1_cannot_read_format_2() -> None:
    """Not forward: an old reader does not know ``t`` (nor Debezium's names), so format 2 is
    registered as a new version, never as the old one (checked backward only)."""
    pop = CATALOGUE.resources["public_security.population_register"]
    assert incompatibilities(FORMAT_1[pop.id], envelope_schema(pop)) != []


def test_a_format_1_record_reads_under_format_2_by_its_aliases() -> None:
    pop = CATALOGUE.resources["public_security.population_register"]
    writer, reader = FORMAT_1[pop.id], envelope_schema(pop)
    person = {"resident_id": "11010519491231002X", "name": "王芳", "gender": "F",
              "birth_date": "1949-12-31", "ethnicity": None,
              "residence_address": "渝水区仙来东大道1号", "household_division": "360502",
              "phone": None}
    old = {"event_id": "e-1", "resource": pop.id, "schema_version": 1, "op": "u",
           "key": person["resident_id"], "before": person, "after": {**person, "phone": "1"},
           "source": {"agency": "public_security", "locality": "360502", "system": "outbox",
                      "table": "ps.residents", "txid": 42, "seq": 7},
           "occurred_ms": 1_795_000_000_000, "ts_ms": 1_795_000_000_100}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(writer), old)
    buf.seek(0)
    new: dict[str, Any] = fastavro.schemaless_reader(  # type: ignore[assignment]
        buf, fastavro.parse_schema(writer), fastavro.parse_schema(reader))
    assert new["source"] == {"version": "", "connector": "outbox", "name": "", "ts_ms": 0,
                             "snapshot": "false", "db": "", "sequence": None, "schema": None,
                             "table": "ps.residents", "txId": 42, "lsn": 7,
                             "agency": "public_security", "locality": "360502"}
    assert new["transaction"] is None
    assert {k: new[k] for k in old if k != "source"} == {k: v for k, v in old.items()
                                                          if k != "source"}
