"""The delivery log's records and hash chain without a database: parsing, canonical form,
chaining, and the detection of altered, deleted and inserted rows (Art. 24, 31: the log is the
evidence of every delivery, so tampering must show)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from govbus.delivery_log.chain import (
    GENESIS,
    ChainChecker,
    Head,
    LogEntry,
    LoggedRow,
    MalformedEntry,
    VerifyReport,
    canonical,
    chain,
    dedupe,
    parse_entry,
    row_hash,
)

RECORD: dict[str, Any] = {
    "event_id": "e-1", "channel": "exchange", "provider": "public_security",
    "recipient": "hrss", "resource": "public_security.population_register", "grant_id": 7,
    "fields": ["resident_id", "name"], "masked_fields": ["phone"],
    "topic": "deliver.hrss.public_security.population_register", "partition": 2,
    "offset": 41, "delivered_ms": 1_700_000_000_123}
T0 = 1_700_000_000_500_000  # logged_us of the first batch


def delivery(i: int, channel: str = "exchange", recipient: str = "hrss") -> LogEntry:
    return parse_entry(json.dumps(RECORD | {"event_id": f"e-{i}", "channel": channel,
                                               "recipient": recipient, "offset": i}))


def log_of(n: int) -> tuple[list[LoggedRow], Head]:
    """A valid log of ``n`` rows written in batches of 3, and its head."""
    rows: list[LoggedRow] = []
    head = Head(0, GENESIS)
    for start in range(0, n, 3):
        batch = chain([delivery(i) for i in range(start, min(n, start + 3))], head,
                      T0 + start * 1000)
        rows += batch
        head = Head(batch[-1].seq, batch[-1].row_hash, batch[-1].logged_us)
    return rows, head


def check(rows: list[LoggedRow], head: Head | None, max_problems: int = 1000) -> VerifyReport:
    checker = ChainChecker(max_problems)
    for row in rows:
        checker.feed(row)
    return checker.finish(head)


def found(report: VerifyReport) -> list[tuple[int | None, str]]:
    return [(p.seq, p.kind) for p in report.problems]


# --- parsing --------------------------------------------------------------------------------

def test_a_router_record_parses() -> None:
    d = parse_entry(json.dumps(RECORD).encode())
    assert d.key == ("e-1", "hrss", "exchange")
    assert (d.fields, d.masked_fields, d.partition, d.offset) == (
        ("resident_id", "name"), ("phone",), 2, 41)


def test_query_deliveries_have_no_kafka_position_and_unknown_keys_are_ignored() -> None:
    d = parse_entry(json.dumps(RECORD | {"channel": "query", "topic": None,
                                            "partition": None, "offset": None, "extra": 1}))
    assert (d.channel, d.topic, d.partition, d.offset) == ("query", None, None, None)


@pytest.mark.parametrize("value, reason", [
    (None, "tombstone"),
    (b"{not json", "not JSON"),
    (b"\xff\xfe\x00", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (json.dumps({k: v for k, v in RECORD.items() if k != "grant_id"}), "missing key(s): grant_id"),
    (json.dumps(RECORD | {"channel": "email"}), "channel"),
    (json.dumps(RECORD | {"event_id": ""}), "event_id"),
    (json.dumps(RECORD | {"recipient": "hr\u0000ss"}), "NUL"),
    ('{"event_id": "\\ud800"' + json.dumps(RECORD)[len('{"event_id": "e-1"'):], "Unicode"),
    (json.dumps(RECORD | {"grant_id": True}), "grant_id"),
    (json.dumps(RECORD | {"grant_id": "7"}), "grant_id"),
    (json.dumps(RECORD | {"partition": 2**31}), "partition"),
    (json.dumps(RECORD | {"offset": -1}), "offset"),
    (json.dumps(RECORD | {"delivered_ms": 10**16}), "delivered_ms"),
    (json.dumps(RECORD | {"fields": "name"}), "fields"),
    (json.dumps(RECORD | {"masked_fields": [1]}), "masked_fields"),
    (json.dumps(RECORD | {"fields": ["name", " "]}), "fields: expected a non-empty string"),
    (json.dumps(RECORD | {"channel": ["exchange"]}), "channel"),
    (json.dumps(RECORD | {"topic": 3}), "topic"),
    (json.dumps(RECORD | {"provider": None}), "provider"),
    (json.dumps({k: v for k, v in RECORD.items() if k not in ("fields", "offset")}),
     "missing key(s): fields, offset"),
])
def test_malformed_records_are_refused_with_a_reason(value: Any, reason: str) -> None:
    with pytest.raises(MalformedEntry, match=reason.replace("(", r"\(").replace(")", r"\)")):
        parse_entry(value)


# --- canonical form and hashes ---------------------------------------------------------------

def test_canonical_form_is_sorted_compact_utf8_whatever_the_key_order() -> None:
    a = canonical({"seq": 1, "recipient": "人社局", "fields": ["a", "b"]})
    b = canonical({"fields": ["a", "b"], "recipient": "人社局", "seq": 1})
    assert a == b == '{"fields":["a","b"],"recipient":"人社局","seq":1}'.encode()


def test_row_hash_is_sha256_of_prev_hash_then_canonical_content() -> None:
    content = {"seq": 1, "event_id": "e"}
    expected = hashlib.sha256((GENESIS + '{"event_id":"e","seq":1}').encode()).hexdigest()
    assert row_hash(GENESIS, content) == expected
    assert row_hash("1" * 64, content) != expected


def test_chain_links_consecutive_seqs_from_the_head() -> None:
    rows, head = log_of(7)
    assert [r.seq for r in rows] == list(range(1, 8)) and head.seq == 7
    assert rows[0].prev_hash == GENESIS
    for before, after in zip(rows, rows[1:], strict=False):
        assert after.prev_hash == before.row_hash
    assert all(r.row_hash == row_hash(r.prev_hash, r.content()) for r in rows)
    assert rows[0].delivered_us == RECORD["delivered_ms"] * 1000


def test_chain_covers_seq_and_timestamps() -> None:
    rows, _ = log_of(1)
    delivered = int(rows[0].delivered_us or 0)
    changes: list[dict[str, Any]] = [{"seq": 2}, {"logged_us": T0 + 1},
                                     {"delivered_us": delivered + 1}]
    for change in changes:
        moved = rows[0]._replace(**change)
        assert row_hash(moved.prev_hash, moved.content()) != rows[0].row_hash


def test_dedupe_drops_logged_keys_and_repeats_in_the_batch() -> None:
    batch = [delivery(1), delivery(2), delivery(1), delivery(1, channel="query"),
             delivery(3), delivery(1, recipient="tax")]
    fresh = dedupe(batch, present={("e-3", "hrss", "exchange")})
    assert [d.key for d in fresh] == [("e-1", "hrss", "exchange"), ("e-2", "hrss", "exchange"),
                                      ("e-1", "hrss", "query"), ("e-1", "tax", "exchange")]


# --- detection ------------------------------------------------------------------------------

def test_an_intact_log_verifies() -> None:
    rows, head = log_of(10)
    report = check(rows, head)
    assert report.ok and report.rows == 10 and (report.first_seq, report.last_seq) == (1, 10)
    assert "intact" in report.lines()[0]
    assert check([], Head(0, GENESIS)).ok and check([], None).ok


def test_an_altered_row_is_named_by_its_seq() -> None:
    rows, head = log_of(10)
    rows[4] = rows[4]._replace(recipient="a_third_party")
    assert found(check(rows, head)) == [(5, "altered")]


def test_an_altered_row_whose_hash_was_recomputed_breaks_the_next_link() -> None:
    rows, head = log_of(10)
    forged = rows[4]._replace(fields=["resident_id", "name", "phone"])
    rows[4] = forged._replace(row_hash=row_hash(forged.prev_hash, forged.content()))
    assert found(check(rows, head)) == [(6, "broken_link")]


def test_deleted_rows_are_reported_missing() -> None:
    rows, head = log_of(10)
    report = check(rows[:3] + rows[4:6] + rows[8:], head)
    assert found(report) == [(4, "missing"), (7, "missing")]
    assert "seq 7..8 missing" in report.problems[1].message


def test_deleting_the_first_or_newest_rows_shows_too() -> None:
    rows, head = log_of(10)
    assert found(check(rows[1:], head)) == [(1, "missing")]
    report = check(rows[:8], head)
    assert found(report) == [(9, "missing")] and "9..10" in report.problems[0].message
    assert found(check([], head)) == [(1, "missing")]


def test_a_row_inserted_between_others_does_not_chain() -> None:
    rows, head = log_of(6)
    # renumbering to make room changes every later row's content, seq included
    inserted = rows[2]._replace(event_id="forged")
    shifted = [r._replace(seq=r.seq + 1) for r in rows[3:]]
    report = check(rows[:3] + [inserted._replace(seq=4)] + shifted, head)
    assert (4, "altered") in found(report) and (7, "altered") in found(report)
    assert report.counts["head_mismatch"] == 1


def test_a_row_appended_outside_the_writer_is_beyond_the_head() -> None:
    rows, head = log_of(6)
    extra = chain([delivery(99)], head, T0 + 10**6)  # hashed correctly: only the head tells
    assert found(check(rows + extra, head)) == [(7, "head_mismatch")]
    naive = extra[0]._replace(row_hash="f" * 64)
    assert found(check(rows + [naive], head)) == [(7, "altered"), (7, "head_mismatch")]


def test_a_replaced_row_and_a_rewritten_link_are_reported() -> None:
    rows, head = log_of(6)
    swapped = rows[:2] + [rows[3]._replace(seq=3),
                          rows[2]._replace(seq=4)] + rows[4:]
    kinds = found(check(swapped, head))
    assert {(3, "altered"), (4, "altered"), (3, "broken_link")} <= set(kinds)
    rows[3] = rows[3]._replace(prev_hash="a" * 64)
    assert found(check(rows, head)) == [(4, "broken_link"), (4, "altered")]


def test_a_row_logged_before_its_predecessor_is_out_of_order() -> None:
    rows, head = log_of(4)
    early = rows[3]._replace(logged_us=T0 - 1)
    early = early._replace(row_hash=row_hash(early.prev_hash, early.content()))
    rows[3] = early
    report = check(rows, Head(4, early.row_hash))
    assert found(report) == [(4, "out_of_order")]


def test_a_missing_or_wrong_head_is_reported() -> None:
    rows, head = log_of(3)
    assert found(check(rows, None)) == [(None, "head_mismatch")]
    assert found(check(rows, Head(3, "b" * 64))) == [(3, "head_mismatch")]


def test_report_counts_every_problem_but_keeps_a_bounded_list() -> None:
    rows, head = log_of(30)
    rows = [r._replace(provider="x") for r in rows]
    report = check(rows, head, max_problems=5)
    assert report.counts["altered"] == 30 and len(report.problems) == 5
    body = report.as_dict()
    assert json.loads(json.dumps(body)) == body
    assert body["ok"] is False and body["problems_omitted"] == 25
    assert report.lines()[-1] == "  … and 25 more"
    assert report.lines()[1].startswith("  seq 1: altered: ")


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 12), data=st.data())
def test_any_single_field_change_is_caught_at_its_seq(n: int, data: st.DataObject) -> None:
    rows, head = log_of(n)
    i = data.draw(st.integers(0, n - 1))
    name = data.draw(st.sampled_from(["event_id", "channel", "provider", "recipient",
                                      "resource", "grant_id", "fields", "masked_fields",
                                      "topic", "partition", "offset", "delivered_us",
                                      "logged_us", "prev_hash", "row_hash", "shard"]))
    old = getattr(rows[i], name)
    new: Any = (old + "x" if isinstance(old, str) else old + 1 if isinstance(old, int)
                else [*old, "x"] if isinstance(old, list) else "x")
    rows[i] = rows[i]._replace(**{name: new})
    report = check(rows, head)
    assert not report.ok
    assert any(p.seq in (i + 1, i + 2) for p in report.problems), found(report)


AWKWARD = st.lists(st.sampled_from(['a', '"', '\\', ',', ':', '-', '1', '2', '王', '\n', '{', '}',
                                    '"seq":-2,', ',"logged_us":-1,']),
                   min_size=1, max_size=8).map("".join).filter(str.strip)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(AWKWARD, AWKWARD, st.lists(AWKWARD, max_size=3),
                          st.none() | AWKWARD, st.none() | st.integers(0, 2**63 - 1),
                          st.integers(-(2**63), 2**63 - 1)), min_size=1, max_size=6),
       st.integers(0, 2**40), st.integers(0, 2**62), st.just("") | AWKWARD)
def test_the_rendered_ahead_chain_hashes_what_content_defines(
        parts: list[tuple[Any, ...]], seq: int, logged_us: int, shard: str) -> None:
    # the writer renders each row before its lock, then fills in seq and logged_us (link);
    # whatever the values hold (the placeholders' own text included), the hash must be
    # row_hash(prev, content()) — what `log verify` recomputes
    deliveries = [LogEntry(f"e-{i}{event}", "exchange", "p", recipient, "r", grant, tuple(names),
                           (), topic, None if offset is None else 1, offset, 1_700_000_000_123,
                           None, shard)
                  for i, (event, recipient, names, topic, offset, grant) in enumerate(parts)]
    rows = chain(deliveries, Head(seq, GENESIS), logged_us)
    assert [r.seq for r in rows] == list(range(seq + 1, seq + 1 + len(rows)))
    prev = GENESIS
    for r in rows:
        assert r.prev_hash == prev and r.row_hash == row_hash(prev, r.content())
        assert r.shard == shard and ("shard" in r.content()) == (shard != "")
        prev = r.row_hash
