"""The Schema Registry API's mapping, shapes and checks, without a database: subjects and
resources, version ids, matching a registered schema, compatibility levels in each
direction."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from govbus.core import registry_api as sr
from govbus.core.registry_api import RegistryApiError, SubjectVersion

TAX = "tax.tax_registration"


def record(*extra: dict[str, Any]) -> dict[str, Any]:
    return {"type": "record", "name": "TaxEnvelope", "namespace": "gov.test",
            "fields": [{"name": "event_id", "type": "string"},
                       {"name": "op", "type": {"type": "enum", "name": "Op",
                                               "symbols": ["c", "u", "d", "r"]}},
                       *extra]}


NOTE = {"name": "note", "type": ["null", "string"], "default": None}
DEFAULT_NOTE = {"name": "note", "type": "string", "default": ""}
REQUIRED_NOTE = {"name": "note", "type": "string"}


def versions(*schemas: dict[str, Any]) -> list[SubjectVersion]:
    return [SubjectVersion(TAX, n, 100 + n, s) for n, s in enumerate(schemas, start=1)]


def test_each_resource_has_an_ingest_and_a_validated_value_subject() -> None:
    assert sr.subjects_of(TAX) == ["ingest.tax.tax_registration-value",
                                   "validated.tax.tax_registration-value"]
    for subject in sr.subjects_of(TAX):
        assert sr.resource_of(subject) == TAX


@pytest.mark.parametrize("subject", [
    "ingest.tax.tax_registration-key",  # keys are plain strings, no schema
    "ingest.tax.tax_registration",  # no -value: not TopicNameStrategy
    "deliver.hrss.tax_registration-value",
    "ingest.tax-value",
    "ingest.tax.a.b-value",
    "-value",
])
def test_other_subjects_name_no_resource(subject: str) -> None:
    assert sr.resource_of(subject) is None


def test_versions_are_numbers_or_latest_and_else_42202() -> None:
    assert sr.parse_version("3") == 3
    assert sr.parse_version("latest") is None and sr.parse_version("-1") is None
    for bad in ("0", "-2", "x", str(2**31), "1.5"):
        with pytest.raises(RegistryApiError) as exc:
            sr.parse_version(bad)
        assert (exc.value.status, exc.value.error_code) == (422, sr.INVALID_VERSION)


def test_picking_a_version_names_what_is_missing() -> None:
    vs = versions(record(), record(NOTE))
    assert sr.pick("s", vs, "latest").version == 2 and sr.pick("s", vs, "1").schema_id == 101
    with pytest.raises(RegistryApiError) as exc:
        sr.pick("s", vs, "3")
    assert exc.value.body()["error_code"] == sr.VERSION_NOT_FOUND
    assert "[1, 2]" in exc.value.body()["message"]
    with pytest.raises(RegistryApiError) as exc:
        sr.pick("s", [], "1")
    assert exc.value.error_code == sr.SUBJECT_NOT_FOUND


def test_a_version_answers_confluents_shape_with_the_schema_as_text() -> None:
    v = versions(record())[0]
    body = sr.version_body("ingest.tax.tax_registration-value", v)
    assert set(body) == {"subject", "version", "id", "schema"}
    assert json.loads(body["schema"]) == record() and body["id"] == 101


def test_a_candidate_must_be_an_avro_record_without_references() -> None:
    assert sr.parse_candidate(json.dumps(record())) == record()
    for schema, kind, refs in [("{nope", None, None), ('"string"', None, None),
                               (json.dumps(record()), "JSON", None),
                               (json.dumps(record()), None, [{"name": "x"}]),
                               (json.dumps({"type": "record", "name": "R",
                                            "fields": [{"name": "a", "type": "nope"}]}),
                                None, None)]:
        with pytest.raises(RegistryApiError) as exc:
            sr.parse_candidate(schema, kind, refs)
        assert (exc.value.status, exc.value.error_code) == (422, sr.INVALID_SCHEMA)


def test_only_a_registered_schema_matches_and_normalize_ignores_docs_and_order() -> None:
    vs = versions(record(), record(NOTE))
    assert sr.matching(record(NOTE), vs) is vs[1]
    documented = copy.deepcopy(record(NOTE)) | {"doc": "the same schema, documented"}
    assert sr.matching(documented, vs) is None
    assert sr.matching(documented, vs, normalize=True) is vs[1]
    assert sr.matching(record(REQUIRED_NOTE), vs, normalize=True) is None
    refused = sr.refused_registration("ingest.tax.tax_registration-value")
    assert refused.error_code == sr.OPERATION_NOT_PERMITTED
    assert sr.PROPOSAL_ROUTE in str(refused)


def test_the_level_is_the_catalogue_attribute_else_backward_transitive() -> None:
    assert sr.compatibility_level(None) == sr.compatibility_level({}) == "BACKWARD_TRANSITIVE"
    assert sr.compatibility_level({"compatibility": "full"}) == "FULL"
    with pytest.raises(RegistryApiError) as exc:
        sr.compatibility_level({"compatibility": "SOMETIMES"})
    assert exc.value.error_code == sr.INVALID_LEVEL
    assert sr.config_body("FULL") == {"compatibilityLevel": "FULL"}


def test_transitive_levels_test_every_version_others_the_newest() -> None:
    vs = versions(record(), record(DEFAULT_NOTE))
    assert sr.against("BACKWARD_TRANSITIVE", vs) == vs
    assert sr.against("BACKWARD", vs) == vs[1:]
    assert sr.against("NONE", vs) == []
    # a required note reads version 2's data, not version 1's (which has none)
    candidate = record(REQUIRED_NOTE)
    assert sr.incompatible("BACKWARD", candidate, sr.against("BACKWARD", vs)) == []
    reasons = sr.incompatible("BACKWARD_TRANSITIVE", candidate, vs)
    assert len(reasons) == 1 and reasons[0].startswith("version 1: field 'note'")


def test_forward_asks_whether_old_versions_read_the_new_schema() -> None:
    old = versions(record(REQUIRED_NOTE))
    dropped = record()  # drops a field the old reader needs, without a default
    assert sr.incompatible("BACKWARD", dropped, old) == []
    assert sr.incompatible("FORWARD", dropped, old)[0].startswith("version 1 cannot read")
    assert len(sr.incompatible("FULL", dropped, old)) == 1
    assert sr.incompatible("FULL", record(NOTE), versions(record(NOTE))) == []


def test_compatibility_answers_messages_only_when_verbose() -> None:
    assert sr.compatibility_body("BACKWARD", [], False) == {"is_compatible": True}
    assert sr.compatibility_body("BACKWARD", ["x"], False) == {"is_compatible": False}
    verbose = sr.compatibility_body("BACKWARD", ["x"], True)
    assert verbose == {"is_compatible": False, "messages": ["x", "compatibility: BACKWARD"]}


def test_pages_as_confluent() -> None:
    assert sr.page([1, 2, 3]) == [1, 2, 3]
    assert sr.page([1, 2, 3], 1) == [2, 3] and sr.page([1, 2, 3], 1, 1) == [2]
