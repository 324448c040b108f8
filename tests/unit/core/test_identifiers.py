"""Art. 12 identifier checks against known valid and invalid numbers."""

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from govbus.core import identifiers as ids
from govbus.core.identifiers import USCC_ALPHABET, resident_id_check_char, uscc_check_char

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


def test_lowercase_x_is_refused_not_normalised() -> None:
    """GB 11643 writes the check character X uppercase; the number is a key (Art. 12)."""
    assert ids.check_resident_id("11010519491231002x") == ids.RESIDENT_ID_LOWERCASE
    assert ids.REASON_RULES[ids.RESIDENT_ID_LOWERCASE] == "resident_id_lowercase"


def test_lowercase_x_where_the_check_is_a_digit_is_a_wrong_check_character() -> None:
    reason = ids.check_resident_id("44052418800101001x")
    assert reason is not None and "expected '4'" in reason


@given(st.dates(dt.date(1900, 1, 1), dt.date(2026, 11, 25)), st.integers(0, 999))
def test_a_lowercase_x_is_never_valid_and_has_its_own_reason_exactly_where_x_is_right(
        born: dt.date, seq: int) -> None:
    body = f"360502{born:%Y%m%d}{seq:03d}"
    right = resident_id_check_char(body)
    lower = ids.check_resident_id(body + "x", today=dt.date(2026, 11, 25))
    assert ids.check_resident_id(body + right, today=dt.date(2026, 11, 25)) is None
    assert lower is not None
    assert (lower == ids.RESIDENT_ID_LOWERCASE) == (right == "X")


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


def _reference_id_char(first17: str) -> str:
    """GB 11643 as the standard writes it: sum of digit × 2^(17-i) mod 11, per position."""
    return "10X98765432"[sum(int(c) * pow(2, 17 - i, 11) for i, c in enumerate(first17)) % 11]


def _reference_uscc_char(first17: str) -> str:
    weights = [pow(3, i, 31) for i in range(17)]
    total = sum(USCC_ALPHABET.index(c) * w for c, w in zip(first17, weights, strict=True))
    return USCC_ALPHABET[(31 - total % 31) % 31]


@given(st.text(alphabet="0123456789", min_size=17, max_size=17))
def test_resident_id_check_char_equals_the_standard_formula(first17: str) -> None:
    assert resident_id_check_char(first17) == _reference_id_char(first17)


@given(st.text(alphabet=USCC_ALPHABET, min_size=17, max_size=17))
def test_uscc_check_char_equals_the_standard_formula(first17: str) -> None:
    assert uscc_check_char(first17) == _reference_uscc_char(first17)


@pytest.mark.parametrize("fn, bad", [(resident_id_check_char, "1234567890123456"),
                                     (resident_id_check_char, "1234567890123456７"),
                                     (resident_id_check_char, "123456789012345678"),
                                     (uscc_check_char, "91360502MA35X0I0"),
                                     (uscc_check_char, "91360502MA35X0I00")])
def test_check_chars_refuse_what_they_cannot_weigh(fn: object, bad: str) -> None:
    with pytest.raises(ValueError):
        fn(bad)  # type: ignore[operator]


@pytest.mark.parametrize("first17", ["9136050_MA35X0I00", "+1360502MA35X0A00", "91360502MA35X0a00",
                                     "91360502 A35X0A00", "913605０2MA35X0A00"])
def test_uscc_check_char_refuses_what_int_would_read(first17: str) -> None:
    with pytest.raises(ValueError, match="not in the GB 32100 alphabet"):
        uscc_check_char(first17)
    reason = ids.check_uscc(first17 + "0")
    assert reason is not None and "alphabet" in reason


@pytest.mark.parametrize("value", ["110105194902300021", "110105194913010021"])
def test_a_remembered_birth_date_gives_the_same_answer(value: str) -> None:
    first = ids.check_resident_id(value)
    assert first is not None and "not a calendar date" in first
    assert ids.check_resident_id(value) == first
    assert ids.check_resident_id("11010519491231002X") is None
