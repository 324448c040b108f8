"""The pure parts of a catalogue change's evolution (Art. 13, 24): the compatibility level a
proposal is checked at, which registered fields a change removes, renames or retypes, the
findings for the fields that grants in force list, the amendments an approval makes, and the
audit ledger admitting exactly those amendments."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from govbus.core import compat, evolution, proposals
from govbus.core.catalogue import Catalogue, load_catalogue, resource_from_schema
from govbus.core.catalogue_check import ERROR, WARNING, errors_only
from govbus.core.sharing import Grant
from govbus.delivery_log.audit import Amendments, LedgerChecker, Unsealed, link, narrows_grant

CATALOGUE = load_catalogue()
TAX = "tax.tax_registration"
TODAY = dt.date(2026, 6, 1)
T = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)


def schema(rid: str = TAX) -> dict[str, Any]:
    return copy.deepcopy(CATALOGUE.resources[rid].schema)


def field_of(s: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in s["fields"] if f["name"] == name)


def registered(contract: dict[str, Any] | None = None) -> Catalogue:
    resources = dict(CATALOGUE.resources)
    if contract is not None:
        resources[TAX] = resource_from_schema("tax", "tax_registration", contract,
                                              Path("<registry:1>"))
    return Catalogue(proposals.REGISTRY_ROOT, resources)


def findings(contract: dict[str, Any], history: list[dict[str, Any]] | None = None,
             grants: tuple[Grant, ...] = (), amends: tuple[int, ...] = (),
             current: dict[str, Any] | None = None) -> list[Any]:
    versions = {rid: [r.schema] for rid, r in CATALOGUE.resources.items()}
    if history is not None:
        versions[TAX] = history
    return proposals.proposal_findings(proposals.proposed_resource(TAX, contract),
                                       registered(current), versions, TODAY, grants, amends)


def grant(grant_id: int, recipient: str, fields: tuple[str, ...],
          masked: tuple[str, ...] = ()) -> Grant:
    return Grant(grant_id, recipient, TAX, fields, masked, T, None, None)


def rules(found: list[Any], severity: str = ERROR) -> set[tuple[str, str]]:
    return {(f.rule, f.field) for f in found if f.severity == severity}


# --- the level a proposal is checked at -----------------------------------------------------

def test_the_level_picks_the_versions_and_the_direction() -> None:
    vs = ["v1", "v2", "v3"]
    assert compat.against("BACKWARD_TRANSITIVE", vs) == vs
    assert compat.against("FULL_TRANSITIVE", vs) == vs
    assert compat.against("FORWARD", vs) == ["v3"]
    assert compat.against("NONE", vs) == []
    assert compat.level_of(None) == compat.level_of({}) == "BACKWARD_TRANSITIVE"
    assert compat.parse_level("full_transitive") == "FULL_TRANSITIVE"
    with pytest.raises(compat.InvalidLevel, match="govbus.compatibility 'SOMETIMES'.*NONE"):
        compat.parse_level("SOMETIMES")


def with_level(s: dict[str, Any], level: str | None) -> dict[str, Any]:
    s = copy.deepcopy(s)
    if level is None:
        s["govbus"].pop("compatibility", None)
    else:
        s["govbus"]["compatibility"] = level
    return s


def test_a_proposal_is_checked_at_its_resources_level() -> None:
    v1 = schema()
    field_of(v1, "tax_authority")["type"] = "int"  # only version 1 differs
    v2 = schema()
    new = schema()
    new["fields"].append({"name": "vat_number", "type": "string"})  # no default
    incompatible = {
        level: sorted(f.message.split(": ", 1)[1].split(":")[0] for f in findings(
            with_level(new, level), [v1, v2]) if f.rule == "schema.incompatible")
        for level in (None, "BACKWARD", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "NONE")}
    # the default, BACKWARD_TRANSITIVE: vat_number unreadable from both, tax_authority from v1
    assert incompatible[None] == ["version 1", "version 1", "version 2"]
    assert incompatible["BACKWARD"] == ["version 2"]  # the newest only
    assert incompatible["FORWARD"] == []  # v2 reads the new data, ignoring vat_number
    assert incompatible["FORWARD_TRANSITIVE"] == ["version 1 cannot read the new schema"]
    assert incompatible["FULL"] == ["version 2"]
    assert incompatible["NONE"] == []


def test_a_change_of_the_level_is_a_warning() -> None:
    found = [f for f in findings(with_level(schema(), "NONE"))
             if f.rule == "schema.level_changed"]
    assert len(found) == 1 and found[0].severity == WARNING
    assert "from BACKWARD_TRANSITIVE to NONE" in found[0].message
    assert not [f for f in findings(with_level(schema(), "backward_transitive"))
                if f.rule == "schema.level_changed"]


def test_an_unknown_level_is_a_check_error_naming_the_attribute_and_the_levels() -> None:
    found = [f for f in findings(with_level(schema(), "SOMETIMES"))
             if f.rule == "schema.compatibility_level"]
    assert len(found) == 1 and found[0].severity == ERROR
    assert found[0].field == "govbus.compatibility"
    assert "'SOMETIMES'" in found[0].message
    assert all(level in found[0].message for level in compat.LEVELS)


# --- which registered fields a change touches -----------------------------------------------

def test_field_changes_removed_renamed_retyped() -> None:
    old, new = schema(), schema()
    new["fields"] = [f for f in new["fields"] if f["name"] != "tax_authority"]
    field_of(new, "registered_address").update(name="address",
                                               aliases=["registered_address"])
    field_of(new, "credit_rating")["type"] = ["null", "int"]
    field_of(new, "taxpayer_name")["doc"] = "a new doc is no retype"
    field_of(new, "uscc")["govbus"] = {"identifier": "uscc", "sensitive": False}
    changes = evolution.field_changes(old, new)
    assert [(c.name, c.kind) for c in changes] == [
        ("registered_address", evolution.RENAMED), ("tax_authority", evolution.REMOVED),
        ("credit_rating", evolution.RETYPED)]
    assert changes[0].detail == "renamed to address"
    assert changes[2].detail == 'retyped from ["null","string"] to ["null","int"]'
    assert evolution.field_changes(old, schema()) == []
    promoted = schema()
    field_of(promoted, "tax_authority")["type"] = {"type": "string"}  # the same type
    assert evolution.field_changes(old, promoted) == []


# --- the granted-field rule -----------------------------------------------------------------

HRSS = grant(12, "hrss", ("uscc", "tax_authority", "credit_rating"), ("credit_rating",))
CIVIL = grant(15, "civil_affairs", ("uscc", "tax_authority"))
OTHER = grant(16, "market_regulation", ("uscc", "taxpayer_name"))


def dropping(*names: str) -> dict[str, Any]:
    s = schema()
    s["fields"] = [f for f in s["fields"] if f["name"] not in names]
    return s


def test_removing_a_granted_field_is_an_error_naming_the_grants_at_every_level() -> None:
    for level in (None, "BACKWARD", "NONE"):
        found = findings(with_level(dropping("tax_authority"), level),
                         grants=(HRSS, CIVIL, OTHER))
        errors = [f for f in errors_only(found) if f.rule == evolution.RULE]
        assert len(errors) == 1 and errors[0].field == "tax_authority"
        assert "grant 12 (hrss), grant 15 (civil_affairs)" in errors[0].message
        assert "grant 16" not in errors[0].message and "amends_grants=12,15" in errors[0].message
        assert not [f for f in found if f.rule == "schema.incompatible"]  # compatible, though


def test_no_grant_listing_the_field_no_finding() -> None:
    assert not [f for f in findings(dropping("tax_authority"), grants=(OTHER,))
                if f.rule.startswith("schema.") and "grant" in f.rule]


def test_an_amended_grant_is_a_warning_and_the_others_still_errors() -> None:
    found = findings(dropping("tax_authority"), grants=(HRSS, CIVIL, OTHER), amends=(12,))
    assert rules(found) >= {(evolution.RULE, "tax_authority")}
    error = next(f for f in found if f.severity == ERROR and f.rule == evolution.RULE)
    assert "grant 15 (civil_affairs)" in error.message and "grant 12" not in \
        error.message.split(" list")[0]
    warning = next(f for f in found if f.severity == WARNING and f.rule == evolution.RULE)
    assert "grant 12 (hrss) are amended on approval" in warning.message
    found = findings(dropping("tax_authority"), grants=(HRSS, CIVIL, OTHER), amends=(12, 15, 16))
    assert not [f for f in errors_only(found) if "grant" in f.rule]
    assert (("schema.amends_untouched", "-")) in rules(found, WARNING)


def test_amendments_drop_removed_and_renamed_fields_keep_retyped_ones() -> None:
    new = dropping("tax_authority")
    field_of(new, "credit_rating")["type"] = ["null", "int"]
    changes = evolution.field_changes(schema(), new)
    out = evolution.amendments(changes, (HRSS, CIVIL, OTHER), {12, 15, 16})
    assert [(a.grant_id, a.fields, a.masked_fields, a.dropped, a.retyped) for a in out] == [
        (12, ("uscc", "credit_rating"), ("credit_rating",), ("tax_authority",),
         ("credit_rating",)),
        (15, ("uscc",), (), ("tax_authority",), ())]
    masked_dropped = evolution.amendments(
        evolution.field_changes(schema(), dropping("credit_rating")), (HRSS,), {12})
    assert masked_dropped[0].fields == ("uscc", "tax_authority")
    assert masked_dropped[0].masked_fields == ()


def test_an_amendment_leaving_a_grant_no_field_is_an_error() -> None:
    lonely = grant(20, "hrss", ("tax_authority",))
    found = findings(dropping("tax_authority"), grants=(lonely,), amends=(20,))
    assert ("schema.grant_emptied", "tax_authority") in rules(found)


def test_a_new_resource_naming_grants_only_warns() -> None:
    s = schema()
    found = proposals.proposal_findings(
        proposals.proposed_resource("tax.vat_register", s),
        registered(), {}, TODAY, (), (3,))
    assert ("schema.amends_untouched", "-") in rules(found, WARNING)


# --- the audit ledger admits an approval's amendments, once ---------------------------------

GRANTED = ["uscc", "tax_authority", "credit_rating"]
GRANT_ROW: dict[str, Any] = {"grant_id": 12, "resource_id": TAX, "recipient": "hrss",
             "fields": GRANTED,
             "masked_fields": ["credit_rating"], "changed_at": "2026-01-05T02:00:00+00:00"}
PROPOSAL = {"proposal_id": 7, "resource_id": TAX, "status": "pending", "amends_grants": [12]}


def ledger(*rows: tuple[str, Any, Any]) -> LedgerChecker:
    checker = LedgerChecker()
    unsealed = [Unsealed(i, i, "information_center", table, "UPDATE",
                         str((after or {}).get("grant_id", (after or {}).get("proposal_id"))),
                         before, after) for i, (table, before, after) in enumerate(rows, 1)]
    for row in link(unsealed, (0, "0" * 64)):
        checker.feed(row)
    return checker


def narrowed(**change: Any) -> dict[str, Any]:
    return GRANT_ROW | {"changed_at": "2026-06-01T00:00:00+00:00"} | change


APPROVED = ("catalogue_proposals", PROPOSAL, PROPOSAL | {"status": "approved"})
AMENDED = ("grants", GRANT_ROW, narrowed(fields=["uscc", "credit_rating"]))


def test_a_narrowing_after_its_approval_is_within_the_rules_once() -> None:
    assert ledger(APPROVED, AMENDED).report.counts == {}
    assert ledger(AMENDED).report.counts == {"outside_rules": 1}  # no approval before it
    assert ledger(AMENDED, APPROVED).report.counts == {"outside_rules": 1}
    twice = ("grants", AMENDED[2], narrowed(fields=["uscc"]))
    assert ledger(APPROVED, AMENDED, twice).report.counts == {"outside_rules": 1}
    elsewhere = ("catalogue_proposals", PROPOSAL | {"resource_id": "hrss.x"},
                 PROPOSAL | {"resource_id": "hrss.x", "status": "approved"})
    assert ledger(elsewhere, AMENDED).report.counts == {"outside_rules": 1}


def test_only_a_narrowing_is_an_amendments_shape() -> None:
    def row(after: dict[str, Any]) -> Any:
        return link([Unsealed(1, 1, None, "grants", "UPDATE", "12", GRANT_ROW, after)],
                    (0, "0" * 64))[0]

    assert narrows_grant(row(narrowed(fields=["uscc"], masked_fields=[])))
    assert not narrows_grant(row(narrowed(fields=[*GRANTED, "taxpayer_name"])))
    assert not narrows_grant(row(narrowed(masked_fields=[])))  # credit_rating unmasked
    assert not narrows_grant(row(narrowed(fields=["uscc"], valid_until="2027-01-01")))
    admitted = Amendments()
    assert not admitted.admits(row(narrowed(fields=["uscc"])))
