"""Conflict rules of the reconciler, as pure functions (Art. 8, 19, 20).

For each canonical attribute of an entity the reconciler keeps, per agency, the latest value
(by the event's *occurred* time, ties broken by event id, so arrival order does not matter).
Every agency whose value differs from the source of record's — after :func:`normalise`, so
formatting alone is no conflict — has one open case, owned by the source-of-record agency
(Art. 8: it must verify), with a deadline in working days (Art. 20).

Case identity is derived from content, not from arrival: ``case_key`` hashes the entity, the
attribute, the two agencies and their *normalised* values. The same latest values therefore give
the same open cases in any order and after any replay; the sink upserts by that key. If the very
same disagreement comes back after its case closed, a generation suffix (``.1``, ``.2``) gives
it a new case instead of reopening the closed one; the state remembers only the last closed key
per agency pair, which keeps it bounded.

State of one ``entity|attribute`` (JSON, in the reconciler's ``reconcile_state`` row of its
entity, under the attribute)::

    {"v": [agency, value, occurred_ms, event_id, resource, …],  # latest per agency, flat
     "o": {case_key: [other_agency, opened_ms]},                # open cases
     "c": [case, ...],                                          # closed at the last change
     "r": {other_agency: [base_key, generation]}}               # last closed key per pair
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import unicodedata
from functools import lru_cache
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from govbus.core.workdays import add_working_days

State = dict[str, Any]
Case = dict[str, Any]

# Address spellings that mean the same: traditional forms of the characters addresses use most
# become simplified ones, common English words their abbreviations (whole words only). Applied
# to attributes whose name contains "address" only: "St." in a person's name is not "Street".
ADDRESS_ABBREVIATIONS: tuple[tuple[str, str], ...] = (
    ("號", "号"), ("區", "区"), ("縣", "县"), ("鎮", "镇"), ("樓", "楼"), ("棟", "栋"),
    ("門", "门"), ("單元", "单元"),
    ("road", "rd"), ("street", "st"), ("avenue", "ave"), ("building", "bldg"),
    ("number", "no"), ("district", "dist"), ("floor", "fl"), ("room", "rm"),
)
_WORD_ABBREVIATIONS = {long: short for long, short in ADDRESS_ABBREVIATIONS if long.isascii()}
_CJK_VARIANTS = {long: short for long, short in ADDRESS_ABBREVIATIONS if not long.isascii()}
_MIDDLE_DOTS = "\u00b7\u2022\u30fb\u2027\u2219\u22c5\uff65"  # ·•・‧∙⋅･ in ethnic names
_PUNCT = re.compile(r"[,.;:，。、；：()（）\[\]\"'“”‘’#-]")
_SPACE = re.compile(r"\s+")
_CJK = r"[\u3000-\u9fff\uf900-\ufaff]"
_SPACE_NEAR_CJK = re.compile(rf"(?<={_CJK}) | (?={_CJK})")


def normalise(value: str | None, attribute: str = "") -> str | None:
    """:func:`normalised`, remembered for the most recent values (each change compares the
    source of record's value with every other agency's again; the reconciler spent a sixth
    of its time here, py-spy)."""
    try:
        return _remembered(value, attribute)
    except TypeError:  # a value that cannot be a key (not from a value message)
        return normalised(value, attribute)


def normalised(value: str | None, attribute: str = "") -> str | None:
    """The form values are compared in: formatting alone must not open a case.

    NFKC folds full-width letters, digits and spaces to half-width (``１号`` → ``1号``); case is
    folded; runs of white space become one space, and spaces next to Chinese characters go
    (they carry no meaning there). Middle-dot variants in names become ``·``. For addresses,
    punctuation goes and common spellings are unified (``號``→``号``, ``Road``→``rd``).
    """
    if value is None:
        return None
    text = unicodedata.normalize("NFKC", str(value)).casefold()
    for dot in _MIDDLE_DOTS:
        text = text.replace(dot, "·")
    if "address" in attribute:
        for long, short in _CJK_VARIANTS.items():
            text = text.replace(long, short)
        text = _PUNCT.sub(" ", text)
        text = " ".join(_WORD_ABBREVIATIONS.get(word, word) for word in text.split())
    text = _SPACE.sub(" ", text).strip()
    return _SPACE_NEAR_CJK.sub("", text)


_remembered = lru_cache(maxsize=1 << 16, typed=True)(normalised)  # typed: True is not 1


class ValueChange(NamedTuple):
    """One agency's value of one canonical attribute of one entity, from one event. A named
    tuple: the reconciler builds one per value, and a frozen dataclass's ``__init__`` cost
    four times as much (see :class:`govbus.delivery_log.chain.Delivery`)."""

    entity: str           # '<kind>:<identifier>', e.g. 'company:91360502MA…'
    attribute: str        # canonical attribute, e.g. 'company.legal_representative'
    agency: str           # the agency that holds this value
    owner: str            # the attribute's source of record (Art. 8)
    value: str | None     # None: the agency deleted the record / holds no value
    occurred_ms: int
    event_id: str
    resource: str

    @property
    def state_key(self) -> str:
        return f"{self.entity}|{self.attribute}"


def newer(change: ValueChange, held: list[Any] | None) -> bool:
    """Is ``change`` later than what is held? Occurred time, then event id: order-free."""
    if held is None:
        return True
    return (change.occurred_ms, change.event_id) > (int(held[1]), str(held[2]))


CHINA = ZoneInfo("Asia/Shanghai")  # working days are days of the official calendar


def deadline_ms(opened_ms: int, days: int) -> int:
    """``days`` working days after detection, on the official holiday calendar (Art. 20)."""
    opened = dt.datetime.fromtimestamp(opened_ms / 1000, CHINA)
    return int(add_working_days(opened, days).timestamp() * 1000)


def case_key(entity: str, attribute: str, owner: str, owner_norm: str, other: str,
             other_norm: str) -> str:
    """The identity of one disagreement: the same values give the same key."""
    text = "\x1f".join((entity, attribute, owner, owner_norm, other, other_norm))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _base(key: str) -> str:
    return key.split(".", 1)[0]


HELD = 5  # fields per agency in the flat "v" list


def held_values(state: State) -> dict[str, list[Any]]:
    """``{agency: [value, occurred_ms, event_id, resource]}`` from the flat ``v`` list.

    Stored flat because the table holds one state per entity and attribute: one list instead
    of a dict of lists saves about a fifth of the table's memory (bench/reconcile_bench.py).
    """
    flat = state.get("v", [])
    return {flat[i]: flat[i + 1:i + HELD] for i in range(0, len(flat), HELD)}


def _pack(values: dict[str, list[Any]]) -> list[Any]:
    return [x for agency in sorted(values) for x in (agency, *values[agency])]


def _holding(agency: str, held: list[Any], owner: str) -> dict[str, Any]:
    return {"agency": agency, "resource": held[3], "value": held[0], "event_id": held[2],
            "occurred_ms": held[1], "source_of_record": agency == owner}


def disagreements(state: State, entity: str, attribute: str, owner: str) -> dict[str, str]:
    """``{key: other_agency}`` for every agency whose value differs from the owner's."""
    values = held_values(state)
    own = values.get(owner)
    if own is None or own[0] is None:
        return {}  # nothing to compare with until the source of record has a value
    others = [(a, held) for a, held in sorted(values.items())
              if a != owner and held[0] is not None]
    if not others:
        return {}  # the source of record alone: nothing can differ
    own_norm = normalise(own[0], attribute) or ""
    open_by_base = {_base(k): k for k in state.get("o", {})}
    out: dict[str, str] = {}
    for agency, held in others:
        norm = normalise(held[0], attribute) or ""
        if norm == own_norm:
            continue
        base = case_key(entity, attribute, owner, own_norm, agency, norm)
        key = open_by_base.get(base)
        if key is None:
            last = state.get("r", {}).get(agency)
            key = base if not last or last[0] != base else f"{base}.{int(last[1]) + 1}"
        out[key] = agency
    return out


def _case(change: ValueChange, key: str, other: str, values: dict[str, list[Any]],
          opened_ms: int, deadline_days: int) -> Case:
    owner = change.owner
    held = [_holding(a, values[a], owner) for a in (owner, other) if a in values]
    return {"case_key": key, "entity_key": change.entity, "attribute": change.attribute,
            "owner_agency": owner, "other_agency": other, "status": "open", "values": held,
            "opened_ms": opened_ms, "deadline_ms": deadline_ms(opened_ms, deadline_days),
            "closed_ms": None,
            "resolution": None}


def _resolution(state: State, owner: str, other: str, attribute: str) -> str:
    values = held_values(state)
    own, theirs = values.get(owner), values.get(other)
    if own is None or own[0] is None or theirs is None or theirs[0] is None:
        return "withdrawn"
    if normalise(own[0], attribute) == normalise(theirs[0], attribute):
        return "agreed"
    return "superseded"


def apply(state: State | None, change: ValueChange, now_ms: int,
          deadline_days: int = 5) -> tuple[State, list[Case]]:
    """Apply one value change; return the new state and the case messages to emit.

    A change that is not newer than what is held (a replay, a duplicate, a late stale event)
    leaves the state as it is and re-emits the attribute's open and last closed cases: after a
    crash, whatever was lost in flight is sent again, and the sink de-duplicates by key.
    """
    old: State = state or {}
    old_values = held_values(old)
    values = dict(old_values)
    if not newer(change, values.get(change.agency)):
        opened = [_case(change, k, o[0], values, int(o[1]), deadline_days)
                  for k, o in sorted(old.get("o", {}).items())]
        return old, opened + list(old.get("c", []))
    values[change.agency] = [change.value, change.occurred_ms, change.event_id,
                             change.resource]
    new: State = {"v": _pack(values), "o": dict(old.get("o", {})), "c": list(old.get("c", [])),
                  "r": dict(old.get("r", {}))}
    wanted = disagreements(new, change.entity, change.attribute, change.owner)
    emitted: list[Case] = []
    closed: list[Case] = []
    for key, (other, opened_ms) in sorted(old.get("o", {}).items()):
        if key in wanted:
            continue
        case = _case(change, key, other, old_values, int(opened_ms), deadline_days)
        case.update(status="closed", closed_ms=now_ms,
                    resolution=_resolution(new, change.owner, other, change.attribute))
        closed.append(case)
        del new["o"][key]
        base, _, gen = key.partition(".")
        new["r"][other] = [base, int(gen or 0)]
    if closed:
        new["c"] = closed
    for key, other in sorted(wanted.items()):
        opened_ms = int(new["o"].get(key, [other, now_ms])[1])
        new["o"][key] = [other, opened_ms]
        emitted.append(_case(change, key, other, values, opened_ms, deadline_days))
    for part in ("o", "c", "r"):  # empty parts cost memory in every table entry
        if not new[part]:
            del new[part]
    return new, emitted + closed


EntityState = dict[str, State]  # attribute -> its state: one table entry per entity


def apply_entity(held: EntityState | None, changes: list[ValueChange], now_ms: int,
                 deadline_days: int = 5) -> tuple[EntityState | None, list[Case]]:
    """Apply the changes of one value message (one entity, one per attribute) with
    :func:`apply`; return the entity's new states, or ``held`` itself when none changed (so
    the caller writes the entity's state once per message or not at all), and the
    case messages to emit."""
    states: EntityState = held or {}
    fresh: EntityState | None = None
    emitted: list[Case] = []
    for change in changes:
        old = states.get(change.attribute)
        new, cases = apply(old, change, now_ms, deadline_days)
        if new is not old:
            if fresh is None:
                fresh = states = dict(states)
            fresh[change.attribute] = new
        emitted += cases
    return (held if fresh is None else fresh), emitted
