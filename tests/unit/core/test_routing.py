"""Share-class routing without a broker (Art. 15, 17, 25): who receives what of an event."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from govbus.core.catalogue import Catalogue, Resource, load_catalogue
from govbus.core.envelope import make_event
from govbus.core.routing import (
    RoutePlan,
    grant_for,
    mask_value,
    project,
    route,
    with_meta,
)
from govbus.core.sharing import Grant
from govbus.delivery_log import LogEntry, entry
from govbus.stream_apps.route import log_entry, log_fields

NOW = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
COMPANY = {"uscc": "91360502MA35XXXXXX", "taxpayer_name": "新余市某某有限公司",
           "legal_representative": "李强", "registered_address": "渝水区劳动北路1号",
           "taxpayer_type": "GENERAL", "tax_authority": "国家税务总局新余市渝水区税务局",
           "credit_rating": "A-2025-001"}
CHILD = {"resident_id": "11010520180101001X", "name": "张乐", "adopter_id": "110105198001010011",
         "registered_on": "2025-06-01"}


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue()


@pytest.fixture(scope="module")
def tax(catalogue: Catalogue) -> Resource:
    return catalogue.get("tax", "tax_registration")


def grant(recipient: str, resource: Resource, fields: list[str], masked: tuple[str, ...] = (),
          grant_id: int = 1, **times: Any) -> Grant:
    return Grant(grant_id, recipient, resource.id, tuple(fields), masked,
                 times.get("valid_from", NOW - HOUR), times.get("valid_until"),
                 times.get("revoked_at"))


def event(resource: Resource, record: dict[str, Any], op: str = "c",
          before: dict[str, Any] | None = None) -> dict[str, Any]:
    return make_event(resource, version=1, op=op, record=record, before=before,
                      agency=str(resource.provider), locality="360502", occurred_ms=1000)


def test_no_grant_nothing_delivered(tax: Resource) -> None:
    # Art. 15: on application → only agencies holding a grant
    result = route(tax, event(tax, COMPANY), [], NOW)
    assert result.deliveries == [] and not result.withheld


def test_grant_delivers_only_its_fields(tax: Resource) -> None:
    g = grant("market_regulation", tax, ["uscc", "taxpayer_name"], grant_id=7)
    ev = event(tax, COMPANY)
    [d] = route(tax, ev, [g], NOW).deliveries
    assert d.recipient == "market_regulation" and d.grant_id == 7
    assert d.topic == "deliver.market_regulation.tax_registration"
    assert d.value == {
        "before": None, "after": {"uscc": COMPANY["uscc"],
                                  "taxpayer_name": COMPANY["taxpayer_name"]},
        "source": ev["source"], "op": "c", "transaction": None,
        "event_id": ev["event_id"], "resource": "tax.tax_registration", "schema_version": 1,
        "key": COMPANY["uscc"], "occurred_ms": 1000, "ts_ms": ev["ts_ms"], "grant_id": 7,
        "masked_fields": [], "channel": "exchange"}
    assert d.provider == "tax" and d.value["source"]["locality"] == "360502"
    assert d.fields == ("uscc", "taxpayer_name")


def test_a_delivery_lists_only_the_granted_fields_its_record_has(tax: Resource) -> None:
    g = grant("hrss", tax, ["tax_authority", "uscc", "no_longer_there"], masked=("uscc",))
    [d] = route(tax, event(tax, COMPANY), [g], NOW).deliveries  # a record of an older version
    assert d.fields == ("tax_authority", "uscc") and d.masked == ("uscc",)
    [d] = route(tax, event(tax, {**COMPANY, "no_longer_there": "x"}), [g], NOW).deliveries
    assert d.fields == ("tax_authority", "uscc", "no_longer_there")


def test_update_projects_before_image_too(tax: Resource) -> None:
    g = grant("hrss", tax, ["uscc", "registered_address"])
    newer = COMPANY | {"registered_address": "渝水区新址", "tax_authority": "x"}
    [d] = route(tax, event(tax, newer, "u", before=COMPANY), [g], NOW).deliveries
    assert d.value["before"] == {"uscc": COMPANY["uscc"],
                                 "registered_address": COMPANY["registered_address"]}
    assert d.value["after"] == {"uscc": COMPANY["uscc"], "registered_address": "渝水区新址"}


def test_delete_has_no_record_and_projected_before(tax: Resource) -> None:
    g = grant("hrss", tax, ["uscc"])
    [d] = route(tax, event(tax, None, "d", before=COMPANY), [g], NOW).deliveries  # type: ignore[arg-type]
    assert d.value["op"] == "d" and d.value["after"] is None
    assert d.value["before"] == {"uscc": COMPANY["uscc"]} and d.value["key"] == COMPANY["uscc"]


def test_sensitive_field_masked_without_confidentiality_agreement(tax: Resource) -> None:
    # Art. 25: the grant names credit_rating as masked
    g = grant("hrss", tax, ["uscc", "credit_rating"], masked=("credit_rating",))
    [d] = route(tax, event(tax, COMPANY), [g], NOW).deliveries
    assert d.value["after"]["credit_rating"] == "A-2*****01"
    assert d.value["masked_fields"] == ["credit_rating"] and d.masked == ("credit_rating",)
    assert d.value["after"]["uscc"] == COMPANY["uscc"]


@pytest.mark.parametrize("value, masked", [
    ("13800138000", "138******00"), ("1234567", "123**67"), ("123456", "***"), ("", "***"),
    (42, None), (None, None), (3.5, None), (True, None)])
def test_mask_value(value: Any, masked: Any) -> None:
    assert mask_value(value) == masked


def test_project_keeps_grant_order_and_skips_absent(tax: Resource) -> None:
    g = grant("hrss", tax, ["tax_authority", "uscc", "no_longer_there"])
    record, masked = project(tax, COMPANY, g)
    assert list(record or {}) == ["tax_authority", "uscc"] and masked == []
    assert project(tax, None, g) == (None, [])


@pytest.mark.parametrize("times", [
    {"valid_until": NOW - dt.timedelta(seconds=1)},      # expired
    {"revoked_at": NOW - dt.timedelta(seconds=1)},       # revoked
    {"revoked_at": NOW},                                 # revoked at this very instant
    {"valid_from": NOW + HOUR},                          # not yet valid
])
def test_grant_not_in_force_delivers_nothing(tax: Resource, times: dict[str, Any]) -> None:
    g = grant("hrss", tax, ["uscc"], **times)
    assert route(tax, event(tax, COMPANY), [g], NOW).deliveries == []


def test_revoked_later_still_in_force_now(tax: Resource) -> None:
    g = grant("hrss", tax, ["uscc"], revoked_at=NOW + HOUR, valid_until=NOW + HOUR)
    assert len(route(tax, event(tax, COMPANY), [g], NOW).deliveries) == 1


def test_not_shared_is_withheld_even_with_a_grant(catalogue: Catalogue) -> None:
    # Art. 15: not shared → nobody, whatever grant rows exist (Civil Code Art. 1110)
    adoption = catalogue.get("civil_affairs", "adoption_register")
    g = grant("public_security", adoption, ["resident_id", "name"])
    result = route(adoption, event(adoption, CHILD), [g], NOW)
    assert result.withheld and result.deliveries == []
    assert "Art. 15" in result.reason


def test_share_class_change_without_new_version_is_honoured(tax: Resource) -> None:
    # the registered contract says on_application; the current catalogue entry says not shared
    current = with_meta(tax, tax.meta | {"share_class": "not_shared"})
    g = grant("hrss", tax, ["uscc"])
    assert route(current, event(tax, COMPANY), [g], NOW).withheld
    broken = with_meta(tax, tax.meta | {"share_class": "sometimes"})
    assert route(broken, event(tax, COMPANY), [g], NOW).withheld  # fail closed


def test_online_query_only_resource_is_not_pushed(catalogue: Catalogue) -> None:
    # Art. 17: the marriage register is offered by online query only
    marriage = catalogue.get("civil_affairs", "marriage_register")
    person = {"resident_id": "11010519491231002X", "name": "王芳",
              "marital_status": "MARRIED", "spouse_id": None, "registered_on": "2020-01-01",
              "registry_office": "360502"}
    g = grant("hrss", marriage, ["resident_id", "marital_status"])
    result = route(marriage, event(marriage, person), [g], NOW)
    assert result.deliveries == [] and not result.withheld and "Art. 17" in result.reason


def test_provider_never_receives_its_own_events(tax: Resource) -> None:
    own = grant("tax", tax, ["uscc"], grant_id=1)
    other = grant("hrss", tax, ["uscc"], grant_id=2)
    result = route(tax, event(tax, COMPANY), [own, other], NOW)
    assert [d.recipient for d in result.deliveries] == ["hrss"]


def test_only_grants_of_this_resource(catalogue: Catalogue, tax: Resource) -> None:
    people = catalogue.get("public_security", "population_register")
    g = grant("hrss", people, ["resident_id"])
    assert route(tax, event(tax, COMPANY), [g], NOW).deliveries == []


def test_one_delivery_per_recipient_latest_grant_wins(tax: Resource) -> None:
    old = grant("hrss", tax, ["uscc"], grant_id=3)
    new = grant("hrss", tax, ["uscc", "taxpayer_name"], grant_id=9)
    other = grant("market_regulation", tax, ["uscc"], grant_id=5)
    result = route(tax, event(tax, COMPANY), [new, other, old], NOW)
    assert [(d.recipient, d.grant_id) for d in result.deliveries] == [
        ("hrss", 9), ("market_regulation", 5)]
    assert grant_for([old, new], tax, "hrss", NOW) == new
    assert grant_for([old, new], tax, "civil_affairs", NOW) is None


def test_the_log_entry_of_a_delivery(tax: Resource) -> None:
    g = grant("hrss", tax, ["uscc", "credit_rating"], masked=("credit_rating",), grant_id=4)
    ev = event(tax, COMPANY)
    [d] = route(tax, ev, [g], NOW).deliveries
    assert log_entry((d, 2, 17, 5000, "ab" * 32, "ingest.tax.tax_registration/3")) == LogEntry(
        ev["event_id"], "exchange", "tax", "hrss", "tax.tax_registration", 4,
        ("uscc", "credit_rating"), ("credit_rating",), "deliver.hrss.tax_registration", 2, 17,
        5000, "ab" * 32, "ingest.tax.tax_registration/3")
    # a query is logged with no topic, partition or offset
    assert entry(d, "query", None, None, 5000) == LogEntry(
        ev["event_id"], "query", "tax", "hrss", "tax.tax_registration", 4,
        ("uscc", "credit_rating"), ("credit_rating",), None, None, None, 5000)


def test_a_plan_routes_a_batch_as_route_does_each_event(tax: Resource) -> None:
    # the hot path builds one RoutePlan per resource and batch
    grants = [grant("market_regulation", tax, ["uscc", "taxpayer_name", "legal_representative"],
                    ("legal_representative",), grant_id=3),
              grant("hrss", tax, ["uscc"], grant_id=4),
              grant("public_security", tax, ["uscc"], grant_id=5, revoked_at=NOW - HOUR)]
    events = [event(tax, COMPANY), event(tax, {**COMPANY, "legal_representative": "王五六七八"},
                                         "u", before=COMPANY),
              event(tax, None, "d", before=COMPANY)]  # type: ignore[arg-type]
    plan = RoutePlan(tax, grants, NOW)
    first = plan.route(events[0])
    first.deliveries[0].value["masked_fields"].append("tampered")  # a consumer's mutation
    for ev in events:
        assert plan.route(ev) == route(tax, ev, grants, NOW)
    assert [d.recipient for d in first.deliveries] == ["hrss", "market_regulation"]


def test_the_settling_process_is_sent_the_fields_of_the_log_entry(tax: Resource) -> None:
    # log_fields skips building the named tuple; the settling process rebuilds the same entry
    g = grant("market_regulation", tax, ["uscc", "legal_representative"],
              ("legal_representative",), grant_id=9)
    [d] = route(tax, event(tax, COMPANY), [g], NOW).deliveries
    acked = (d, 2, 41, 1_700_000_000_123, "cd" * 32, "ingest.tax.tax_registration/0")
    assert LogEntry._make(log_fields(acked)) == log_entry(acked)
