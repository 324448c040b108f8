"""Request decisions (Art. 15, 18, 24, 25) and working-day deadlines (Art. 31), no database."""

from __future__ import annotations

import datetime as dt

import pytest

from govbus.core.catalogue import Catalogue, load_catalogue
from govbus.core.sharing import SharingError, decide_request
from govbus.core.workdays import add_working_days, working_days_between


@pytest.fixture(scope="module")
def cat() -> Catalogue:
    return load_catalogue()


def test_unconditional_is_granted_at_once_with_sensitive_fields_masked(cat: Catalogue) -> None:
    d = decide_request(cat.get("public_security", "population_register"), "tax",
                       ["name", "phone"], "SC-1", None)
    assert d.status == "granted"
    assert d.fields == ("resident_id", "name", "phone")  # the key is always included
    assert d.masked_fields == ("phone",) and "Art. 25" in d.reason


def test_confidentiality_agreement_unmasks(cat: Catalogue) -> None:
    d = decide_request(cat.get("public_security", "population_register"), "tax",
                       ["phone"], "SC-1", "CA-7")
    assert d.masked_fields == ()


def test_on_application_waits_for_the_provider(cat: Catalogue) -> None:
    d = decide_request(cat.get("tax", "tax_registration"), "hrss", None, "SC-1", None)
    assert d.status == "pending" and d.masked_fields == ("credit_rating",)


def test_not_shared_is_refused_quoting_the_legal_basis(cat: Catalogue) -> None:
    d = decide_request(cat.get("civil_affairs", "adoption_register"), "tax", None, "SC-1", None)
    assert d.status == "refused" and "Civil Code" in d.reason and "Art. 15" in d.reason


@pytest.mark.parametrize("requester,fields,commitment,fragment", [
    ("tax", None, "", "Art. 24"),
    ("tax", ["shoe_size"], "SC-1", "shoe_size"),
    ("public_security", None, "SC-1", "provider"),
])
def test_refusals_name_the_rule(cat: Catalogue, requester: str, fields: list[str] | None,
                                commitment: str, fragment: str) -> None:
    with pytest.raises(SharingError, match=fragment):
        decide_request(cat.get("public_security", "population_register"), requester, fields,
                       commitment, None)


def test_deadline_skips_the_national_day_holiday() -> None:
    # 2026-09-30 (Wed) + 5 working days: Oct 1-7 are holidays and Oct 10 (Sat) is a working
    # day, so: Oct 8, 9, 10, 12, 13
    start = dt.datetime(2026, 9, 30, 10, 0, tzinfo=dt.UTC)
    assert add_working_days(start, 5).date() == dt.date(2026, 10, 13)


def test_deadline_skips_a_plain_weekend() -> None:
    start = dt.datetime(2026, 11, 20, 9, 0)  # a Friday
    assert add_working_days(start, 1).date() == dt.date(2026, 11, 23)


def test_working_days_between() -> None:
    assert working_days_between(dt.date(2026, 11, 20), dt.date(2026, 11, 27)) == 5
