"""The reconciliation feed's extraction, the cases sink's collapsing and the objection filing
rules, without a broker or a database (Art. 8, 19, 29)."""

from __future__ import annotations

import pytest

from govbus.consumers.cases_sink import collapse, row
from govbus.core.catalogue import Catalogue, load_catalogue
from govbus.core.objections import answerers, check_filing
from govbus.stream_apps.feed import owners, value_message
from govbus.stream_apps.reconciler import changes

CODE = "91360502MA35L7XX3H"


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue()


def tax_event(op: str = "c", **after: object) -> dict:
    record = {"uscc": CODE, "taxpayer_name": "新余市某某有限公司", "legal_representative": "李强",
              "registered_address": "渝水区劳动北路1号", "taxpayer_type": "GENERAL",
              "tax_authority": "x", "credit_rating": "A"} | after
    return {"event_id": "e1", "key": CODE, "op": op, "occurred_ms": 5,
            "after": None if op == "d" else record, "before": record if op == "d" else None,
            "source": {"agency": "tax"}}


def test_owners_follow_the_catalogue(catalogue: Catalogue) -> None:
    assert owners(catalogue) == {
        "company.name": "market_regulation", "company.legal_representative": "market_regulation",
        "company.registered_address": "market_regulation", "person.name": "public_security",
        "person.residence_address": "public_security"}


def test_feed_carries_only_canonical_values_keyed_by_entity(catalogue: Catalogue) -> None:
    res = catalogue.resources["tax.tax_registration"]
    entity, msg = value_message(res, tax_event(), owners(catalogue)) or ("", {})
    assert entity == f"company:{CODE}"
    assert msg["values"] == {"company.name": "新余市某某有限公司",
                             "company.legal_representative": "李强",
                             "company.registered_address": "渝水区劳动北路1号"}
    assert "credit_rating" not in str(msg)   # data minimisation: no other fields travel
    assert {c.attribute: (c.owner, c.agency) for c in changes(msg)} == {
        a: ("market_regulation", "tax") for a in msg["values"]}


def test_feed_turns_a_delete_into_withdrawn_values(catalogue: Catalogue) -> None:
    res = catalogue.resources["tax.tax_registration"]
    _, msg = value_message(res, tax_event("d"), owners(catalogue)) or ("", {})
    assert set(msg["values"].values()) == {None}


def test_resources_without_canonical_attributes_feed_nothing(catalogue: Catalogue) -> None:
    res = catalogue.resources["civil_affairs.adoption_register"]
    event = {"event_id": "e", "key": "x", "op": "c", "occurred_ms": 1,
             "after": {"resident_id": "x"}, "source": {"agency": "civil_affairs"}}
    assert value_message(res, event, owners(catalogue)) is None


def case(key: str, status: str, values: str = "a") -> dict:
    return {"case_key": key, "entity_key": "company:x", "attribute": "company.name",
            "owner_agency": "market_regulation", "other_agency": "tax", "status": status,
            "values": [{"agency": "tax", "value": values}], "opened_ms": 1, "deadline_ms": 2,
            "closed_ms": 3 if status == "closed" else None, "resolution": None}


def test_sink_collapses_a_batch_closed_wins() -> None:
    out = collapse([case("k1", "open", "a"), case("k1", "closed"), case("k1", "open", "b"),
                    case("k2", "open", "a"), case("k2", "open", "b")])
    assert {(c["case_key"], c["status"], c["values"][0]["value"]) for c in out} == {
        ("k1", "closed", "a"), ("k2", "open", "b")}


def test_sink_refuses_a_malformed_case() -> None:
    with pytest.raises(KeyError):
        row({"case_key": "k"})
    with pytest.raises(ValueError):
        row(case("k", "reopened"))


def test_objection_filing_rules_name_the_option(catalogue: Catalogue) -> None:
    assert check_filing(catalogue, "objection", "hrss", "tax", "tax.tax_registration",
                        "wrong") == []
    problems = check_filing(catalogue, "objection", "tax", "tax", None, " ")
    assert any("own data" in p for p in problems)
    assert any(p.startswith("--resource is required") for p in problems)
    assert any(p.startswith("--reason is empty") for p in problems)
    assert check_filing(catalogue, "complaint", "citizen_1", "nobody", None, "x") == [
        "--against 'nobody' is not an agency of the catalogue "
        f"({', '.join(catalogue.agencies)})"]
    assert check_filing(catalogue, "complaint", "citizen_1", "tax", None, "x") == []


def test_who_answers() -> None:
    assert answerers({"kind": "objection", "against_agency": "tax"}) == (
        "tax", "information_center")
    assert answerers({"kind": "complaint", "against_agency": "tax"}) == ("municipal_office",)
