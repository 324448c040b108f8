"""The audit ledger's rows and hash chain without a database (Art. 13, 18, 24, 31): the
canonical form a verifier recomputes on its own, the chain :func:`link` seals, and the
detection of every change to a sealed row, of deleted rows up to the head, and of changes the
bus never makes (a filing deleted, a grant's masking changed)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from govbus.delivery_log.audit import (
    AUDITED,
    AuditReport,
    LedgerChecker,
    LedgerRow,
    Unsealed,
    changed_columns,
    link,
    outside_rules,
    parse_image,
)
from govbus.delivery_log.chain import GENESIS, canonical, row_hash

MIGRATION = Path(__file__).resolve().parents[3] / "govbus_core/migrations/0012_audit_ledger.sql"
T0 = 1_700_000_000_000_000
GRANT = {"grant_id": 3, "request_id": 5, "recipient": "hrss", "resource_id": "tax.tax_registration",
         "fields": ["credit_code", "name"], "masked_fields": ["legal_rep_id"],
         "valid_from": "2026-01-05T02:00:00+00:00", "valid_until": None, "revoked_at": None,
         "revoked_by": None, "revoke_reason": None, "changed_at": "2026-01-05T02:00:00+00:00"}
FILING = {"filing_id": 9, "request_id": 5, "requester": "hrss", "provider": "tax",
          "decision": "granted", "decided_by": "tax"}


def unsealed(i: int, table: str = "grants", op: str = "INSERT", before: Any = None,
             after: Any = None, actor: str | None = "tax") -> Unsealed:
    after = GRANT | {"grant_id": i} if after is None and op != "DELETE" else after
    return Unsealed(100 + i, T0 + i, actor, table, op, str(i), before, after)


def sealed(n: int, head: tuple[int, str] = (0, GENESIS)) -> list[LedgerRow]:
    return link([unsealed(i) for i in range(1, n + 1)], head)


def check(rows: list[LedgerRow], head: tuple[int, str] | None) -> AuditReport:
    checker = LedgerChecker()
    for r in rows:
        checker.feed(r)
    return checker.finish(head)


def head_of(rows: list[LedgerRow]) -> tuple[int, str]:
    return (rows[-1].seq, str(rows[-1].row_hash)) if rows else (0, GENESIS)


# --- canonical form and hashes ------------------------------------------------------------

def test_the_hash_is_sha256_of_prev_and_sorted_compact_json_of_the_content() -> None:
    row = sealed(1)[0]
    content = {"seq": 1, "id": 101, "at_us": T0 + 1, "actor": "tax", "table": "grants",
               "op": "INSERT", "row_key": "1", "before": None, "after": GRANT | {"grant_id": 1}}
    assert row.content() == content
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical(content) == text.encode()
    assert row.prev_hash == GENESIS
    assert row.row_hash == hashlib.sha256(GENESIS.encode() + text.encode()).hexdigest()


def test_a_verifier_needs_only_the_rows_to_recompute_the_chain() -> None:
    rows = sealed(5)
    prev = GENESIS
    for r in rows:
        text = json.dumps(r.content(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False)
        assert r.prev_hash == prev
        prev = hashlib.sha256(prev.encode() + text.encode()).hexdigest()
        assert r.row_hash == prev


def test_numbers_are_hashed_as_written() -> None:
    """jsonb keeps 1.10 and 1.1 apart (numeric scale): so does the hash; an integer beyond 64
    bits is hashed too, not refused."""
    a, b = parse_image('{"x": 1.10}'), parse_image('{"x": 1.1}')
    assert canonical({"v": a}) == b'{"v":{"x":1.10}}'
    assert row_hash(GENESIS, {"v": a}) != row_hash(GENESIS, {"v": b})
    big = parse_image('{"n": 123456789012345678901234567890, "m": -7, "u": 18446744073709551615}')
    assert canonical(big) == b'{"m":-7,"n":123456789012345678901234567890,"u":18446744073709551615}'
    assert parse_image(None) is None
    assert parse_image('{"s": "纳税人", "l": [true, null]}') == {"s": "纳税人", "l": [True, None]}


def test_link_continues_after_the_head() -> None:
    first = sealed(3)
    more = link([unsealed(i) for i in (4, 5)], head_of(first))
    assert [r.seq for r in more] == [4, 5] and more[0].prev_hash == first[-1].row_hash
    assert check(first + more, head_of(more)).ok


def test_an_intact_ledger_verifies_and_an_empty_one_too() -> None:
    rows = sealed(4)
    rep = check(rows, head_of(rows))
    assert rep.ok and rep.rows == 4 and (rep.first_seq, rep.last_seq) == (1, 4)
    assert rep.lines()[0].endswith("intact")
    assert check([], (0, GENESIS)).ok


# --- tampering ------------------------------------------------------------------------------

def kinds(rep: AuditReport) -> set[str]:
    return set(rep.counts)


def test_a_changed_grant_masking_in_a_sealed_row_is_altered() -> None:
    rows = sealed(4)
    after = dict(rows[1].after) | {"masked_fields": []}
    rows[1] = rows[1]._replace(after=after)
    rep = check(rows, head_of(sealed(4)))
    assert kinds(rep) == {"altered"} and rep.problems[0].seq == 2


def test_a_deleted_row_is_missing() -> None:
    rows = sealed(5)
    rep = check(rows[:2] + rows[3:], head_of(rows))
    assert kinds(rep) == {"missing"} and rep.problems[0].seq == 3
    assert "seq 3 missing before seq 4" in rep.problems[0].message


def test_the_newest_rows_deleted_are_missing_through_the_head() -> None:
    rows = sealed(5)
    rep = check(rows[:3], head_of(rows))
    assert kinds(rep) == {"missing"} and rep.problems[0].seq == 4
    assert "seq 4..5 missing" in rep.problems[0].message


def test_rows_beyond_the_head_and_a_changed_head() -> None:
    rows = sealed(5)
    assert kinds(check(rows, head_of(rows[:3]))) == {"head_mismatch"}
    assert kinds(check(rows, (5, "f" * 64))) == {"head_mismatch"}
    assert kinds(check(rows, None)) == {"head_mismatch"}
    assert kinds(check([], (0, "f" * 64))) == {"head_mismatch"}


def test_a_replaced_row_breaks_its_link() -> None:
    rows = sealed(4)
    forged = link([unsealed(3, after=GRANT | {"masked_fields": []})], (2, "e" * 64))[0]
    rows[2] = forged  # hashed consistently, but not on seq 2's hash
    rep = check(rows, head_of(sealed(4)))
    assert "broken_link" in kinds(rep) and rep.problems[0].seq == 3


def test_a_rewritten_chain_with_its_head_is_not_detectable_without_a_checkpoint() -> None:
    """The limit of a self-contained ledger: whoever can write the database can recompute every
    hash and the head. Signed checkpoints of the head, held by the agencies, show it."""
    rows = sealed(4)
    rewritten = link([unsealed(i, after=GRANT | {"masked_fields": []}) for i in (1, 2, 3)],
                     (0, GENESIS))
    assert check(rewritten, head_of(rewritten)).ok
    assert head_of(rewritten) != head_of(rows)  # what a checkpoint compares


FIELDS = ("seq", "id", "at_us", "actor", "table", "op", "row_key", "before", "after")
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1), st.text(max_size=8),
                   st.lists(st.text(max_size=4), max_size=3),
                   st.dictionaries(st.text(max_size=4), st.integers(-2**63, 2**63 - 1), max_size=3))


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 10), data=st.data())
def test_any_change_to_any_sealed_row_is_detected(n: int, data: st.DataObject) -> None:
    rows = sealed(n)
    head = head_of(rows)
    i = data.draw(st.integers(0, n - 1))
    name = data.draw(st.sampled_from(FIELDS))
    old = getattr(rows[i], name)
    if name in ("seq", "id", "at_us"):
        new: Any = data.draw(st.integers(-2**62, 2**62).filter(lambda v: v != old))
    elif name in ("before", "after"):
        column = data.draw(st.sampled_from(sorted(GRANT)))
        value = data.draw(VALUES.filter(lambda v: v != (old or {}).get(column, ...)))
        new = dict(old or {}) | {column: value}
    else:
        new = data.draw(st.one_of(st.none(), st.text(max_size=12)).filter(lambda v: v != old))
    rows[i] = rows[i]._replace(**{name: new})
    assert not check(rows, head).ok


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 10), data=st.data())
def test_any_deletion_of_rows_up_to_the_head_is_detected(n: int, data: st.DataObject) -> None:
    rows = sealed(n)
    start = data.draw(st.integers(0, n - 1))
    end = data.draw(st.integers(start + 1, n))
    rep = check(rows[:start] + rows[end:], head_of(rows))
    assert not rep.ok and "missing" in rep.counts


# --- the bus's own rules ----------------------------------------------------------------------

def test_changes_the_bus_never_makes_are_outside_the_rules() -> None:
    revoked = GRANT | {"revoked_at": "2026-02-01T00:00:00+00:00", "revoked_by": "tax",
                       "revoke_reason": "duty ended", "changed_at": "2026-02-01T00:00:00+00:00"}
    widened = GRANT | {"masked_fields": []}
    row = link([unsealed(1, op="UPDATE", before=GRANT, after=revoked),
                unsealed(2, op="UPDATE", before=GRANT, after=widened),
                unsealed(3, table="filings", op="DELETE", before=FILING),
                unsealed(4, table="filings", op="UPDATE", before=FILING,
                         after=FILING | {"decision": "rejected"}),
                unsealed(5, table="agency_credentials", op="DELETE", before={"agency": "tax"}),
                unsealed(6, table="some_future_table", op="DELETE", before={"x": 1}),
                unsealed(7, table="catalogue_resources", op="UPDATE", before={"title": "a"},
                         after={"title": "b"})], (0, GENESIS))
    found = [outside_rules(r) for r in row]
    assert found[0] is None
    assert found[1] is not None and "masked_fields" in found[1] and "grants 2" in found[1]
    assert found[2] is not None and "DELETE of filings 3" in found[2]
    assert found[3] is not None and "UPDATE of filings" in found[3]
    assert found[4:] == [None, None, None]
    rep = check(row, head_of(row))
    assert rep.counts == {"outside_rules": 3}
    assert [p.seq for p in rep.problems] == [2, 3, 4]


def test_changed_columns_compares_canonical_values() -> None:
    a = parse_image('{"m": {"x": 1.10}, "n": 1, "k": [1, 2]}')
    b = parse_image('{"m": {"x": 1.10}, "n": 2, "k": [1, 2], "new": null}')
    assert changed_columns(a, b) == ["n", "new"]
    assert changed_columns(None, b) == []


def test_unsealed_rows_are_a_warning_not_a_break() -> None:
    rows = sealed(2)
    rep = check(rows, head_of(rows))
    rep.unsealed, rep.warnings = 3, ["3 row(s) not sealed"]
    assert rep.ok
    assert rep.lines()[-1] == "  warning: 3 row(s) not sealed"
    assert rep.as_dict()["warnings"] == ["3 row(s) not sealed"]
    assert rep.as_dict()["unsealed"] == 3


def test_the_migration_installs_the_trigger_on_every_audited_table_with_its_arguments() -> None:
    """migration 0012's list, with the triggers later migrations create, and :data:`AUDITED`
    (what verify checks the triggers against) are the same; no high-volume data table is
    audited."""
    found = re.findall(r"\('(\w+)', '(\w+)', '([\w,]*)', '([\w,]*)'\)", MIGRATION.read_text())
    for later in sorted(MIGRATION.parent.glob("*.sql")):
        if later.name > MIGRATION.name:
            found += re.findall(r"CREATE TRIGGER govbus_audit AFTER INSERT OR UPDATE OR DELETE "
                                r"ON (\w+)\s+FOR EACH ROW EXECUTE FUNCTION govbus_audit\("
                                r"'(\w+)', '([\w,]*)', '([\w,]*)'\)", later.read_text())
    assert {name: (key, secrets, ignored) for name, key, secrets, ignored in found} == \
        {name: rule.trigger_args for name, rule in AUDITED.items()}
    data = {"deliveries", "receipts", "entity_state", "event_counts", "accepted_events",
            "quarantine", "reconcile_state", "notifications"}
    assert not data & set(AUDITED)
    assert AUDITED["agency_credentials"].secrets == ("salt", "token_hash")


@pytest.mark.parametrize("table", sorted(AUDITED))
def test_every_audited_table_accepts_what_its_code_writes(table: str) -> None:
    rule = AUDITED[table]
    assert "INSERT" in rule.ops
    row = link([unsealed(1, table=table, after={rule.key: "1"})], (0, GENESIS))[0]
    assert outside_rules(row) is None
