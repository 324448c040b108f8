"""The fault suite's checker, without a broker: each kind of failure is counted."""

from __future__ import annotations

from tests.faults.check import compare, compare_cases

PUB = {"e1": "tax.tax_registration", "e2": "public_security.population_register"}
ENTITLED = {"tax.tax_registration": {"a"}, "public_security.population_register": {"a", "b"}}
ALL = [("a", "e1"), ("a", "e2"), ("b", "e2")]


def rows(pairs: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    return [(a, e, "exchange") for a, e in pairs]


def test_everything_delivered_once_is_ok() -> None:
    f = compare(PUB, [], ENTITLED, ALL + [("a", "e1")], rows(ALL))
    assert f.ok and f.expected_deliveries == 3 and f.resent == 1


def test_missing_delivery_or_log_row_is_lost() -> None:
    assert compare(PUB, [], ENTITLED, ALL[:2], rows(ALL)).lost == 1
    assert compare(PUB, [], ENTITLED, ALL, rows(ALL[1:])).lost == 1


def test_second_log_row_is_a_duplicate() -> None:
    f = compare(PUB, [], ENTITLED, ALL, rows(ALL + [("b", "e2")]))
    assert f.duplicated == 1 and not f.ok


def test_unentitled_or_invalid_deliveries_are_misdelivered() -> None:
    assert compare(PUB, [], ENTITLED, ALL + [("b", "e1")], rows(ALL)).misdelivered == 1
    f = compare(PUB, ["bad"], ENTITLED, ALL, rows(ALL + [("a", "bad")]))
    assert f.misdelivered == 1 and f.invalid == 1 and not f.ok


REP = "company.legal_representative"


def test_every_differing_value_with_one_open_case_is_ok() -> None:
    f = compare(PUB, [], ENTITLED, ALL, rows(ALL))
    compare_cases(f, {("company:1", REP)}, [("company:1", REP, "open"),
                                             ("company:2", REP, "closed")])
    assert f.ok and f.cases_expected == 1 and f.line().endswith("missing 0, unexpected 0")


def test_a_differing_value_without_an_open_case_is_missing() -> None:
    f = compare(PUB, [], ENTITLED, ALL, rows(ALL))
    compare_cases(f, {("company:1", REP)}, [("company:1", REP, "closed")])
    assert f.cases_missing == 1 and not f.ok and "no case for company:1" in f.examples[0]


def test_a_case_where_values_agree_or_a_second_one_is_unexpected() -> None:
    f = compare(PUB, [], ENTITLED, ALL, rows(ALL))
    compare_cases(f, {("company:1", REP)}, [("company:1", REP, "open"),
                                             ("company:3", REP, "open")])
    assert f.cases_unexpected == 1 and not f.ok
    f = compare(PUB, [], ENTITLED, ALL, rows(ALL))
    compare_cases(f, {("company:1", REP)}, [("company:1", REP, "open")] * 2)
    assert f.cases_unexpected == 1
