"""The pure parts of catalogue proposals (Art. 4, 7, 8, 12, 13): reading a proposed contract,
who may propose it, which findings concern it, when an entry is due for its yearly review."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from govbus.core import proposals
from govbus.core.catalogue import Catalogue, load_catalogue, resource_from_schema
from govbus.core.catalogue_check import errors_only
from govbus.core.errors import ForbiddenError

CATALOGUE = load_catalogue()
TODAY = dt.date(2026, 6, 1)


def registered() -> Catalogue:
    """The shipped catalogue as if registered: each resource at its registry path."""
    return Catalogue(proposals.REGISTRY_ROOT, {
        rid: resource_from_schema(r.agency, r.name, r.schema, Path(f"<registry:{i}>"))
        for i, (rid, r) in enumerate(sorted(CATALOGUE.resources.items()), 1)})


def versions() -> dict[str, list[dict[str, Any]]]:
    return {rid: [r.schema] for rid, r in CATALOGUE.resources.items()}


def schema(rid: str = "tax.tax_registration") -> dict[str, Any]:
    return copy.deepcopy(CATALOGUE.resources[rid].schema)


def findings(rid: str, contract: dict[str, Any]) -> list[Any]:
    return proposals.proposal_findings(proposals.proposed_resource(rid, contract),
                                       registered(), versions(), TODAY)


@pytest.mark.parametrize(("raw", "says"), [
    (b"", "empty"),
    (b"   \n", "empty"),
    (b"\xc3\x28", "not UTF-8 text: byte 0"),
    ("{\"type\": \"record\",\n \"name\": }", "not valid JSON: Expecting value at line 2"),
    ("42", "not a JSON int"),
    ('{"type": "enum"}', "not type 'enum'"),
    ('{"type": "record", "name": "X", "fields": []}', "non-empty list"),
    ('{"type": "record", "name": "X", "fields": ["a"]}', "fields[0]"),
    ('{"type": "record", "name": "X", "fields": [{"name": "a", "type": "int", '
     '"govbus": 1}]}', "field 'a'"),
    ('{"type": "record", "name": "X", "fields": [{"name": "a", "type": "int"}]}',
     "catalogue entry"),
    ('{"type": "record", "name": "X", "govbus": {}, "fields": [{"name": "a", '
     '"type": "itn"}]}', "not a valid Avro schema"),
])
def test_a_malformed_contract_says_what_is_wrong(raw: str | bytes, says: str) -> None:
    with pytest.raises(proposals.MalformedContract) as caught:
        proposals.parse_avsc(raw)
    assert says in str(caught.value) and caught.value.rule == "proposal.malformed"


def test_a_shipped_contract_reads_as_itself() -> None:
    text = json.dumps(schema(), ensure_ascii=False)
    assert proposals.parse_avsc(text) == schema() == proposals.parse_avsc(text.encode())


@pytest.mark.parametrize("rid", ["tax", "tax.", ".x", "Tax.x", "tax.x-y", "tax.1x", "a.b.c"])
def test_resource_ids_are_agency_dot_resource(rid: str) -> None:
    with pytest.raises(proposals.MalformedContract) as caught:
        proposals.split_id(rid)
    assert caught.value.rule == "input.resource_id"


def test_only_the_provider_proposes() -> None:
    proposals.check_provider("tax", "tax.tax_registration", schema())
    with pytest.raises(ForbiddenError) as caught:
        proposals.check_provider("hrss", "tax.tax_registration")
    assert (caught.value.rule, caught.value.article) == ("catalogue.not_provider", "Art. 13")
    named = schema()
    named["govbus"]["provider"] = "hrss"
    with pytest.raises(proposals.NotProvider, match="names 'hrss' as provider"):
        proposals.check_provider("tax", "tax.tax_registration", named)


def test_a_compatible_change_has_no_errors() -> None:
    changed = schema()
    changed["fields"].append({"name": "vat", "type": ["null", "string"], "default": None})
    found = findings("tax.tax_registration", changed)
    assert errors_only(found) == []
    assert {f.file for f in found} <= {"tax.tax_registration"}


def test_the_contracts_own_findings_and_incompatibility() -> None:
    bad = schema()
    bad["govbus"].pop("legal_basis")  # Art. 4: on_application needs one
    bad["fields"].append({"name": "nick", "type": "string"})  # no default: reads no v1 data
    found = {(f.file, f.field, f.rule) for f in errors_only(
        findings("tax.tax_registration", bad))}
    assert found == {("tax.tax_registration", "govbus.legal_basis", "art4.legal_basis_missing"),
                     ("tax.tax_registration", "nick", "schema.incompatible")}


def test_findings_on_other_entries_that_the_proposal_causes() -> None:
    # a second source of person.name, found on the entry checked later (Art. 8)
    two = schema("civil_affairs.marriage_register")
    for f in two["fields"]:
        if f.get("govbus", {}).get("canonical") == "person.name":
            f["govbus"]["source_of_record"] = True
    found = [f for f in errors_only(findings("civil_affairs.marriage_register", two))
             if f.rule != "schema.markers_unversioned"]
    assert [(f.file, f.rule) for f in found] == [("public_security.population_register",
                                                  "art8.two_sources")]
    assert "civil_affairs.marriage_register" in found[0].message
    # the source of record withdrawn: the attribute's carriers are left without one
    none = schema("public_security.population_register")
    for f in none["fields"]:
        f.get("govbus", {}).pop("source_of_record", None)
    rules = {(f.file, f.rule) for f in errors_only(
        findings("public_security.population_register", none))}
    assert (proposals.CATALOGUE, "art8.no_source") in rules


def test_a_new_resource_is_checked_against_the_catalogue() -> None:
    new = schema()
    new["govbus"]["share_class"] = "sometimes"
    found = {f.rule for f in errors_only(findings("tax.tax_arrears", new))}
    assert "art7.invalid_element" in found
    assert "schema.incompatible" not in found  # nothing registered to be compatible with


def test_the_yearly_review_counts_from_the_last_review_else_registration() -> None:
    registered_at = dt.datetime(2025, 1, 10, 8, tzinfo=dt.UTC)
    state = proposals.review_state(registered_at, None, dt.datetime(2026, 1, 10, 7,
                                                                    tzinfo=dt.UTC))
    assert (state["since"], state["due"], state["days_overdue"]) == ("registration", False, 0)
    assert state["due_at"] == registered_at + dt.timedelta(days=proposals.REVIEW_DAYS)
    late = proposals.review_state(registered_at, None, dt.datetime(2026, 3, 1, tzinfo=dt.UTC))
    assert late["due"] and late["days_overdue"] == 49
    reviewed = dt.datetime(2025, 12, 1, tzinfo=dt.UTC)
    after = proposals.review_state(registered_at, reviewed, dt.datetime(2026, 3, 1,
                                                                        tzinfo=dt.UTC))
    assert (after["since"], after["due"]) == ("review", False)
    assert after["due_at"] == dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def test_a_change_of_field_markers_alone_needs_a_new_schema_version() -> None:
    marked = schema()
    marked["fields"][5]["govbus"] = {"sensitive": True}  # tax_authority
    found = errors_only(findings("tax.tax_registration", marked))
    assert [(f.field, f.rule) for f in found] == [("tax_authority",
                                                   "schema.markers_unversioned")]
    marked["fields"][5]["doc"] = "the tax authority, sensitive from now on"
    assert errors_only(findings("tax.tax_registration", marked)) == []
    entry = schema()
    entry["govbus"]["conditions"] = "revised"  # the entry alone: no version needed
    assert errors_only(findings("tax.tax_registration", entry)) == []
