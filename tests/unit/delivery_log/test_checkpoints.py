"""Signed checkpoints bind the log: any change to a row at or below a checkpointed seq, any
deletion of rows it covers and any consistent rewrite is found, pure (no database)."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from govbus.core import signatures
from govbus.delivery_log import GENESIS, ChainChecker, Head, LogEntry, chain
from govbus.delivery_log.checkpoints import (
    DELIVERIES,
    Binder,
    ChainHead,
    check_series,
    from_dict,
    make,
    parse,
)

KEY = signatures.generate()
KEYS = {signatures.key_id(KEY.public_key()): KEY.public_key()}


def entries(n: int, tag: str = "") -> list[LogEntry]:
    return [LogEntry(f"ev{tag}{i}", "exchange", "tax", "hrss", "tax.tax_registration", 1,
                     ("uscc",), (), "deliver.hrss.tax_registration", 0, i, 1_700_000_000_000 + i,
                     "ab" * 32) for i in range(n)]


def checkpoint_at(rows, seq: int, number: int = 1, prev: str = GENESIS):
    row = rows[seq - 1]
    return make(number, 1, {DELIVERIES: ChainHead(row.seq, row.row_hash)}, prev, KEY)


def findings(rows, checkpoints) -> set[str]:
    checker, binder = ChainChecker(), Binder(DELIVERIES, checkpoints)
    for r in rows:
        checker.feed(r)
        binder.feed(r.seq, r.row_hash)
    last = rows[-1] if rows else None
    report = checker.finish(Head(last.seq, last.row_hash) if last else Head(0, GENESIS))
    return set(report.counts) | {f.kind for f in binder.finish()}


def test_an_untouched_log_holds_against_its_checkpoints() -> None:
    rows = chain(entries(20), Head(0, GENESIS), 5)
    cps = [checkpoint_at(rows, 10), checkpoint_at(rows, 20, 2)]
    assert findings(rows, cps) == set()


def test_what_the_head_alone_misses_the_checkpoint_finds() -> None:
    rows = chain(entries(20), Head(0, GENESIS), 5)
    cp = [checkpoint_at(rows, 15)]
    # the newest rows deleted and the head moved back: the chain alone is intact
    assert findings(rows[:12], []) == set()
    assert findings(rows[:12], cp) == {"truncated"}
    # every row deleted and the head reset
    assert findings([], cp) == {"truncated"}
    # the chain rewritten consistently from row 5, hashes recomputed
    forged = rows[:4] + chain([e._replace(recipient="someone") for e in entries(20)[4:]],
                              Head(4, rows[3].row_hash), 5)
    assert findings(forged, []) == set()
    assert "rewritten" in findings(forged, cp)
    # a forged row inserted below the checkpoint, the rest re-chained after it
    extra = chain(entries(1, "x"), Head(7, rows[6].row_hash), 5)
    inserted = rows[:7] + extra + chain(entries(20)[7:], Head(8, extra[0].row_hash), 5)
    assert "rewritten" in findings(inserted, cp)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30), st.data())
def test_any_change_or_suffix_deletion_below_a_checkpoint_is_found(n: int, data) -> None:
    rows = chain(entries(n), Head(0, GENESIS), 5)
    at = data.draw(st.integers(1, n), label="checkpointed seq")
    cp = [checkpoint_at(rows, at)]
    victim = data.draw(st.integers(1, at), label="row changed")
    how = data.draw(st.sampled_from(["field", "hash", "delete_suffix"]))
    if how == "delete_suffix":
        tampered = rows[:victim - 1]
    elif how == "field":
        r = rows[victim - 1]
        tampered = [*rows[:victim - 1], r._replace(recipient=r.recipient + "x"), *rows[victim:]]
    else:  # rewritten consistently from the victim on
        tail = chain([e._replace(grant_id=9) for e in entries(n)[victim - 1:]],
                     Head(victim - 1, rows[victim - 2].row_hash if victim > 1 else GENESIS), 5)
        tampered = rows[:victim - 1] + tail
    assert findings(tampered, cp), (how, victim, at)


def test_the_series_must_be_signed_and_linked() -> None:
    rows = chain(entries(5), Head(0, GENESIS), 5)
    first = checkpoint_at(rows, 3)
    second = checkpoint_at(rows, 5, 2, first.digest)
    assert check_series([second, first], KEYS) == ([first, second], [])
    altered = dataclasses.replace(second, at_us=2)
    _, found = check_series([first, altered], KEYS)
    assert [f.kind for f in found] == ["bad_signature"]
    unlinked = checkpoint_at(rows, 5, 2, "f" * 64)
    assert [f.kind for f in check_series([first, unlinked], KEYS)[1]] == ["broken_series"]
    stranger = signatures.generate()
    other = make(1, 1, first.heads, GENESIS, stranger)
    assert "not one of the information center's keys" in check_series([other], KEYS)[1][0].message
    backwards = make(2, 1, {DELIVERIES: ChainHead(2, rows[1].row_hash)}, first.digest, KEY)
    assert [f.kind for f in check_series([first, backwards], KEYS)[1]] == ["broken_series"]


def test_a_checkpoint_round_trips_through_its_json() -> None:
    rows = chain(entries(3), Head(0, GENESIS), 5)
    cp = checkpoint_at(rows, 3)
    assert from_dict(cp.as_dict()) == cp
    import orjson

    assert parse(orjson.dumps(cp.as_dict())).digest == cp.digest
