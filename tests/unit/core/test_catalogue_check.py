"""``catalogue check``: the shipped catalogue passes; each refusal names file, field and rule."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from govbus.core import catalogue_check as cc
from govbus.core.catalogue import CatalogueError, Resource, load_catalogue
from govbus.core.catalogue_check import Finding, check_catalogue, errors_only

SHIPPED = Path(__file__).resolve().parents[3] / "schemas"
TODAY = dt.date(2026, 11, 25)

POPULATION = "public_security/population_register"
MARRIAGE = "civil_affairs/marriage_register"
ADOPTION = "civil_affairs/adoption_register"
LEGAL_ENTITY = "market_regulation/legal_entity_register"
TAX = "tax/tax_registration"

Schema = dict[str, Any]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A private copy of the shipped catalogue, free to break."""
    return Path(shutil.copytree(SHIPPED, tmp_path / "schemas"))


def path_of(root: Path, contract: str) -> Path:
    return root / f"{contract}.avsc"


def load(root: Path, contract: str) -> Schema:
    return json.loads(path_of(root, contract).read_text(encoding="utf-8"))


def edit(root: Path, contract: str, change: Callable[[Schema], None]) -> str:
    """Apply ``change`` to one contract's JSON in place; return the file as findings name it."""
    schema = load(root, contract)
    change(schema)
    path_of(root, contract).write_text(json.dumps(schema), encoding="utf-8")
    return str(path_of(root, contract))


def field_of(schema: Schema, name: str) -> Schema:
    return next(f for f in schema["fields"] if f["name"] == name)


def check(root: Path, **kwargs: Any) -> list[Finding]:
    return check_catalogue(load_catalogue(root, strict=False), today=TODAY, **kwargs)


def only(findings: list[Finding], rule: str) -> Finding:
    hits = [f for f in findings if f.rule == rule]
    assert len(hits) == 1, findings
    return hits[0]


# --- The shipped catalogue --------------------------------------------------------------------

def test_shipped_catalogue_has_no_errors_and_one_overdue_review(root: Path) -> None:
    findings = check(root)
    assert errors_only(findings) == []
    # Art. 13: tax_registration was reviewed on 2025-09-30, 421 days before TODAY.
    assert findings == [Finding(
        "warning", str(path_of(root, TAX)), "govbus.reviewed", "art13.review_overdue", "Art. 13",
        "last reviewed 2025-09-30, 421 days ago (more than 365); the agency must review it")]


def test_strict_load_accepts_the_shipped_catalogue() -> None:
    catalogue = load_catalogue(SHIPPED, strict=True)
    assert "tax.tax_registration" in catalogue.resources


def test_strict_load_refuses_a_broken_copy(root: Path) -> None:
    file = edit(root, MARRIAGE, lambda s: s["govbus"].pop("legal_basis"))
    with pytest.raises(CatalogueError) as info:
        load_catalogue(root, strict=True)
    finding = only(info.value.findings, "art4.legal_basis_missing")
    assert finding.file == file
    assert str(finding) in str(info.value)


def test_finding_formats() -> None:
    f = Finding("error", "s/a/b.avsc", "govbus.title", "art7.missing_element", "Art. 7", "gone")
    assert str(f) == "ERROR s/a/b.avsc: govbus.title: gone (art7.missing_element, Art. 7)"
    assert f.as_dict() == {"severity": "error", "file": "s/a/b.avsc", "field": "govbus.title",
                           "rule": "art7.missing_element", "article": "Art. 7",
                           "message": "gone"}


def test_rules_are_a_registry(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_x(res: Resource, ctx: object) -> list[Finding]:
        return [Finding("error", str(res.path), "-", "test.rule", "Art. 0", "x")]

    monkeypatch.setattr(cc, "RESOURCE_RULES", [*cc.RESOURCE_RULES, no_x])
    assert len([f for f in check(root) if f.rule == "test.rule"]) == 6


# --- Art. 3, 4, 7 -----------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["title", "provider", "data_format", "provision_methods",
                                 "share_class", "conditions", "update_period"])
def test_missing_art7_element(root: Path, key: str) -> None:
    file = edit(root, POPULATION, lambda s: s["govbus"].pop(key))
    finding = only(check(root), "art7.missing_element")
    assert (finding.severity, finding.file, finding.field, finding.article) == (
        "error", file, f"govbus.{key}", "Art. 7")


@pytest.mark.parametrize("key,value", [
    ("title", 42), ("share_class", "public"), ("provision_methods", ["fax"]),
    ("provision_methods", []), ("provision_methods", "online_query"), ("update_period", "daily"),
])
def test_invalid_art7_element(root: Path, key: str, value: object) -> None:
    file = edit(root, POPULATION, lambda s: s["govbus"].update({key: value}))
    finding = only(check(root), "art7.invalid_element")
    assert (finding.file, finding.field) == (file, f"govbus.{key}")


def test_not_shared_may_have_no_provision_method(root: Path) -> None:
    assert load(root, ADOPTION)["govbus"]["provision_methods"] == []
    assert errors_only(check(root)) == []


def test_database_class(root: Path) -> None:
    file = edit(root, TAX, lambda s: s["govbus"].update(database_class="private"))
    finding = only(check(root), "art3.database_class")
    assert (finding.file, finding.field, finding.article) == (file, "govbus.database_class",
                                                              "Art. 3")


def test_provider_must_be_the_folder(root: Path) -> None:
    file = edit(root, TAX, lambda s: s["govbus"].update(provider="market_regulation"))
    finding = only(check(root), "catalogue.provider_mismatch")
    assert (finding.file, finding.field) == (file, "govbus.provider")


@pytest.mark.parametrize("contract", [MARRIAGE, ADOPTION], ids=["on_application", "not_shared"])
@pytest.mark.parametrize("blank", [None, "   "], ids=["absent", "blank"])
def test_restricted_resource_needs_a_legal_basis(root: Path, contract: str,
                                                 blank: str | None) -> None:
    def drop(schema: Schema) -> None:
        if blank is None:
            del schema["govbus"]["legal_basis"]
        else:
            schema["govbus"]["legal_basis"] = blank

    file = edit(root, contract, drop)
    finding = only(check(root), "art4.legal_basis_missing")
    assert (finding.file, finding.field, finding.article) == (file, "govbus.legal_basis",
                                                              "Art. 4")


def test_unconditional_needs_no_legal_basis(root: Path) -> None:
    assert "legal_basis" not in load(root, LEGAL_ENTITY)["govbus"]
    assert not [f for f in check(root) if f.rule == "art4.legal_basis_missing"]


@pytest.mark.parametrize("key", ["fee", "price", "charge_yuan"])
def test_sharing_is_free(root: Path, key: str) -> None:
    file = edit(root, LEGAL_ENTITY, lambda s: s["govbus"].update({key: 10}))
    finding = only(check(root), "art4.fee")
    assert (finding.file, finding.field) == (file, f"govbus.{key}")


# --- Art. 12 ----------------------------------------------------------------------------------

@pytest.mark.parametrize("entity", [
    None, {"kind": "project", "key": "resident_id"}, {"kind": "person", "key": "nobody"},
    {"kind": "person", "key": "spouse_id"}, {"kind": "person", "key": "marital_status"},
])
def test_entity_key(root: Path, entity: dict[str, str] | None) -> None:
    file = edit(root, MARRIAGE, lambda s: s["govbus"].update(entity=entity))
    finding = only(check(root), "art12.entity_key")
    assert (finding.file, finding.field, finding.article) == (file, "govbus.entity", "Art. 12")


@pytest.mark.parametrize("contract,fields,role", [
    (POPULATION, ["name"], "name"), (POPULATION, ["resident_id"], "resident_id"),
    (TAX, ["uscc"], "uscc"), (TAX, ["taxpayer_name", "legal_representative"], "name"),
])
def test_mandatory_identifier_missing(root: Path, contract: str, fields: list[str],
                                      role: str) -> None:
    def drop(schema: Schema) -> None:
        for name in fields:
            field_of(schema, name)["govbus"].pop("identifier")

    file = edit(root, contract, drop)
    finding = only(check(root), "art12.identifier_missing")
    assert finding.file == file and repr(role) in finding.message


def test_unknown_identifier_role(root: Path) -> None:
    file = edit(root, POPULATION,
                lambda s: field_of(s, "phone")["govbus"].update(identifier="passport"))
    finding = only(check(root), "art12.identifier_unknown")
    assert (finding.file, finding.field) == (file, "phone")


# --- Art. 8, 25: field markers and one datum one source ---------------------------------------

def test_second_source_of_record_is_refused(root: Path) -> None:
    file = edit(root, TAX,
                lambda s: field_of(s, "taxpayer_name")["govbus"].update(source_of_record=True))
    finding = only(check(root), "art8.two_sources")
    assert (finding.file, finding.field, finding.article) == (file, "taxpayer_name", "Art. 8")
    assert "market_regulation.legal_entity_register.name" in finding.message
    assert "tax.tax_registration.taxpayer_name" in finding.message


def test_attribute_without_source_of_record(root: Path) -> None:
    edit(root, POPULATION, lambda s: field_of(s, "name")["govbus"].pop("source_of_record"))
    finding = only(check(root), "art8.no_source")
    assert (finding.file, finding.field) == (str(root), "person.name")
    for carrier in ("civil_affairs.marriage_register.name", "hrss.social_insurance_enrolment.name",
                    "public_security.population_register.name"):
        assert carrier in finding.message


@pytest.mark.parametrize("marker,rule", [
    ({"sensitive": "yes"}, "art25.marker_invalid"),
    ({"source_of_record": "true"}, "art8.marker_invalid"),
    ({"canonical": "Person.Phone"}, "art8.marker_invalid"),
    ({"canonical": "phone"}, "art8.marker_invalid"),
])
def test_malformed_field_markers(root: Path, marker: dict[str, str], rule: str) -> None:
    file = edit(root, POPULATION, lambda s: field_of(s, "phone")["govbus"].update(marker))
    finding = only(check(root), rule)
    assert (finding.file, finding.field) == (file, "phone")


def test_invalid_avro(root: Path) -> None:
    file = edit(root, POPULATION, lambda s: field_of(s, "birth_date").update(type="strng"))
    finding = only(check(root), "avro.invalid")
    assert finding.file == file and "strng" in finding.message


# --- Art. 13: review and compatibility with registered versions -------------------------------

@pytest.mark.parametrize("value", [None, "", "last spring", "2026-13-01"])
def test_review_date_missing_or_malformed(root: Path, value: str | None) -> None:
    file = edit(root, TAX, lambda s: s["govbus"].update(reviewed=value))
    finding = only(check(root), "art13.review_date")
    assert (finding.severity, finding.file, finding.field) == ("error", file, "govbus.reviewed")


def test_review_overdue_counts_days(root: Path) -> None:
    findings = check_catalogue(load_catalogue(root, strict=False), today=dt.date(2027, 3, 3))
    overdue = sorted((Path(f.file).stem, f.message) for f in findings
                     if f.rule == "art13.review_overdue")
    assert [stem for stem, _ in overdue] == [
        "adoption_register", "marriage_register", "population_register",
        "social_insurance_enrolment", "tax_registration"]
    assert "519 days ago" in dict(overdue)["tax_registration"]
    assert errors_only(findings) == []


def test_incompatible_change_against_registered_version(root: Path) -> None:
    registered = {"public_security.population_register": [load(root, POPULATION)]}

    def change(schema: Schema) -> None:
        schema["fields"].append({"name": "email", "type": "string"})  # no default
        field_of(schema, "phone")["type"] = ["null", "int"]

    file = edit(root, POPULATION, change)
    findings = [f for f in check(root, registered=registered) if f.rule == "schema.incompatible"]
    assert sorted(f.field for f in findings) == ["email", "phone"]
    assert all(f.file == file and f.article == "Art. 13" for f in findings)
    assert all("version 1: field '" in f.message for f in findings)


def test_compatible_change_passes(root: Path) -> None:
    old = load(root, POPULATION)
    edit(root, POPULATION, lambda s: s["fields"].append(
        {"name": "email", "type": ["null", "string"], "default": None,
         "govbus": {"sensitive": True}}))
    assert errors_only(check(root, registered={"public_security.population_register": [old]})) == []


def test_every_registered_version_is_checked(root: Path) -> None:
    v1 = load(root, TAX)
    field_of(v1, "tax_authority")["type"] = "int"
    v2 = load(root, TAX)
    findings = check(root, registered={"tax.tax_registration": [v1, v2]})
    finding = only(findings, "schema.incompatible")
    assert finding.field == "tax_authority" and "version 1:" in finding.message


def test_empty_catalogue(tmp_path: Path) -> None:
    findings = check_catalogue(load_catalogue(tmp_path, strict=False), today=TODAY)
    assert [(f.file, f.rule) for f in findings] == [(str(tmp_path), "catalogue.empty")]
    with pytest.raises(CatalogueError):
        load_catalogue(tmp_path, strict=True)
