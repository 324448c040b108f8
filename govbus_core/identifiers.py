"""Art. 12 identifiers: check functions that return ``None`` when valid, else a reason.

- Resident identity number, GB 11643-1999: 6-digit division code, 8-digit birth date,
  3-digit sequence, ISO 7064 MOD 11-2 check character (0-9 or X). The X is uppercase, as the
  standard writes it: a lowercase x is refused, not normalised, since the number is an entity
  key and ``...002x`` and ``...002X`` would be two entities (:data:`RESIDENT_ID_LOWERCASE`).
- Unified social credit code, GB 32100-2015: 18 characters from a 31-character alphabet
  (no I, O, Z, S, V), the 6-digit division code at positions 3-8, and a MOD 31 check character.
- Administrative division code, GB/T 2260: 6 digits whose first two name a province-level
  division.
"""

from __future__ import annotations

import datetime as dt
import re
import time

# GB/T 2260 province-level prefixes (including 71 Taiwan, 81 Hong Kong, 82 Macao).
PROVINCE_PREFIXES = frozenset({
    "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37",
    "41", "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64",
    "65", "71", "81", "82",
})

_ID_CHECK = "10X98765432"  # index: weighted sum mod 11

USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC = re.compile(f"[{USCC_ALPHABET}]*")
# each character of the alphabet as the digit of its value in int()'s bases up to 36
_USCC_DIGITS = str.maketrans(USCC_ALPHABET, "0123456789abcdefghijklmnopqrstu")

# The weighted sums run inside int(): the gate checks every identifier of every event.
# Read in base b, digits d_i give sum(d_i * b**k_i); modulo m that is the weighted sum with
# weights w**k_i whenever b = w (mod m). GB 11643 weighs 2**k mod 11, so base 13 (= 2 mod 11);
# GB 32100 weighs 3**k mod 31 from the left, so base 34 (= 3 mod 31), read reversed. Only
# strings already checked to hold nothing but such digits reach int() (it would also take
# signs, spaces and underscores). tests/unit/core/test_identifiers.py checks both against the
# standards' formulas. 1.2 -> 0.3 µs for a resident id (timeit).

_BORN: dict[str, dt.date | None] = {}  # YYYYMMDD -> its date (None: not a calendar date)
_BORN_MEMO = 80_000  # more than every date from 1850 to 2100
_today: tuple[int, dt.date] = (-1, dt.date.min)


def _birth_date(digits: str) -> dt.date | None:
    """The date of 8 ASCII digits, or None; remembered (there are few)."""
    try:
        return _BORN[digits]
    except KeyError:
        pass
    try:
        born: dt.date | None = dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        born = None
    if len(_BORN) < _BORN_MEMO:
        _BORN[digits] = born
    return born


def _date_today() -> dt.date:
    """Today's local date, looked up at most once a minute."""
    global _today
    minute = int(time.time() // 60)
    if _today[0] != minute:
        _today = (minute, dt.date.today())
    return _today[1]


def check_division_code(code: object) -> str | None:
    """Check a 6-digit administrative division code (the locality of Art. 12)."""
    if not isinstance(code, str) or len(code) != 6 or not code.isascii() or not code.isdigit():
        return "must be 6 digits (GB/T 2260 administrative division code)"
    if code[:2] not in PROVINCE_PREFIXES:
        return f"{code[:2]!r} is not a province-level division (GB/T 2260)"
    if code[2:] == "0000":
        return "names a whole province; a locality must be a prefecture or county"
    return None


def resident_id_check_char(first17: str) -> str:
    """The GB 11643 check character for the first 17 digits."""
    if len(first17) != 17 or not (first17.isascii() and first17.isdigit()):
        raise ValueError(f"a GB 11643 check character needs 17 digits, not {first17!r}")
    return _ID_CHECK[2 * int(first17, 13) % 11]


def check_resident_id(value: object, today: dt.date | None = None) -> str | None:
    """Check an 18-character resident identity number (GB 11643)."""
    if not isinstance(value, str) or len(value) != 18:
        return "must be 18 characters (GB 11643 resident identity number)"
    body, check = value[:17], value[17]
    if not body.isascii() or not body.isdigit() or not (check.isdigit() or check in "Xx"):
        return "must be 17 digits followed by a digit or X"
    region = check_division_code(body[:6])
    if region is not None and not region.startswith("names a whole"):
        return f"address code {body[:6]}: {region}"
    born = _birth_date(body[6:14])
    if born is None:
        return f"birth date {body[6:14]} is not a calendar date"
    if born > (today or _date_today()) or born.year < 1850:
        return f"birth date {born.isoformat()} is out of range"
    expected = resident_id_check_char(body)
    if check.upper() != expected:
        return f"check character is {check!r}, expected {expected!r} (GB 11643 MOD 11-2)"
    if check == "x":
        return RESIDENT_ID_LOWERCASE
    return None


#: the reason :func:`check_resident_id` gives for a number that is right but for a lowercase x
RESIDENT_ID_LOWERCASE = ("check character is a lowercase 'x'; GB 11643 writes it as an "
                         "uppercase 'X' (refused, not normalised: the number is a key)")


def uscc_check_char(first17: str) -> str:
    """The GB 32100 check character for the first 17 characters."""
    if len(first17) != 17:
        raise ValueError(f"a GB 32100 check character needs 17 characters, not {first17!r}")
    if not _USCC.fullmatch(first17):
        bad = next(c for c in first17 if c not in USCC_ALPHABET)
        raise ValueError(f"{bad!r} is not in the GB 32100 alphabet")
    total = int(first17.translate(_USCC_DIGITS)[::-1], 34)
    return USCC_ALPHABET[(31 - total % 31) % 31]


def check_uscc(value: object) -> str | None:
    """Check an 18-character unified social credit code (GB 32100)."""
    if not isinstance(value, str) or len(value) != 18:
        return "must be 18 characters (GB 32100 unified social credit code)"
    if not _USCC.fullmatch(value):
        bad = sorted({c for c in value if c not in USCC_ALPHABET})
        return f"characters {''.join(bad)!r} are not in the GB 32100 alphabet"
    region = check_division_code(value[2:8])
    if region is not None and not region.startswith("names a whole"):
        return f"division code {value[2:8]} at positions 3-8: {region}"
    expected = uscc_check_char(value[:17])
    if value[17] != expected:
        return f"check character is {value[17]!r}, expected {expected!r} (GB 32100 MOD 31)"
    return None


def check_name(value: object) -> str | None:
    """A person's or organisation's name: present and not blank."""
    if not isinstance(value, str) or not value.strip():
        return "must be a non-empty name"
    return None


CHECKS = {
    "resident_id": check_resident_id,
    "uscc": check_uscc,
    "division_code": check_division_code,
    "name": check_name,
}
"""Identifier roles a catalogue field may carry, and the check for each."""

#: reasons that have a rule of their own: ``identifier.<this>`` instead of ``identifier.<role>``
REASON_RULES = {RESIDENT_ID_LOWERCASE: "resident_id_lowercase"}
