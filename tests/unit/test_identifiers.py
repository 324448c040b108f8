"""Art. 12 identifier checks against known valid and invalid numbers."""

import datetime as dt

import pytest

from govbus_core import identifiers as ids

# Published examples: GB 11643 sample number, and real registered credit codes.
VALID_IDS = ["11010519491231002X", "440524188001010014"]
VALID_USCC = ["91350100M000100Y43", "91110000802100433B"]


@pytest.mark.parametrize("value", VALID_IDS)
def test_valid_resident_ids(value: str) -> None:
    assert ids.check_resident_id(value) is None


@pytest.mark.parametrize("value,fragment", [
    ("11010519491231002Y", "17 digits"),
    ("110105194912310021", "expected 'X'"),
    ("11010519491331002X", "not a calendar date"),
    ("99010519491231002X", "address code"),
    ("1101051949123100", "18 characters"),
    (None, "18 characters"),
    ("11010520991231002X", "out of range"),
])
def test_invalid_resident_ids(value: object, fragment: str) -> None:
    reason = ids.check_resident_id(value, today=dt.date(2026, 11, 25))
    assert reason is not None and fragment in reason


def test_lowercase_x_is_accepted() -> None:
    assert ids.check_resident_id("11010519491231002x") is None


@pytest.mark.parametrize("value", VALID_USCC)
def test_valid_uscc(value: str) -> None:
    assert ids.check_uscc(value) is None


@pytest.mark.parametrize("value,fragment", [
    ("91350100M000100Y44", "expected '3'"),
    ("91350100M000100I43", "alphabet"),
    ("91990100M000100Y43", "positions 3-8"),
    ("9135010", "18 characters"),
])
def test_invalid_uscc(value: str, fragment: str) -> None:
    reason = ids.check_uscc(value)
    assert reason is not None and fragment in reason


def test_every_single_character_change_is_caught() -> None:
    good = VALID_USCC[0]
    for pos in range(18):
        for c in ids.USCC_ALPHABET:
            if c != good[pos]:
                assert ids.check_uscc(good[:pos] + c + good[pos + 1:]) is not None


@pytest.mark.parametrize("code,ok", [
    ("360502", True), ("110105", True), ("360000", False), ("990101", False),
    ("36050", False), ("３６０５０２", False), (360502, False),
])
def test_division_codes(code: object, ok: bool) -> None:
    assert (ids.check_division_code(code) is None) is ok
