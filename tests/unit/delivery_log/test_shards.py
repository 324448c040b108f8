"""A chain per shard of the delivery log, without a database: each shard numbered and linked
on its own, the shard in the hashed content (but for the legacy shard, whose rows keep their
hashes), a change in one shard found in that shard only, checkpoints binding every shard's head,
and archives anchored per shard (Art. 24, 26, 31)."""

from __future__ import annotations

import json
from pathlib import Path

from govbus.core import signatures
from govbus.delivery_log import archive
from govbus.delivery_log.chain import (
    GENESIS,
    Head,
    LogEntry,
    LoggedRow,
    ShardedChecker,
    VerifyReport,
    chain,
    chain_shards,
    ingest_shard,
    row_hash,
)
from govbus.delivery_log.checkpoints import (
    DELIVERIES,
    Binder,
    ChainHead,
    log_chain,
    log_rows,
    log_shard,
    make,
)

A = ingest_shard("ingest.tax.tax_registration", 0)
B = ingest_shard("ingest.tax.tax_registration", 1)
T0 = 1_700_000_000_500_000
KEY = signatures.generate()


def entry(i: int, shard: str) -> LogEntry:
    return LogEntry(f"e-{shard}-{i}", "exchange", "tax", "hrss", "tax.tax_registration", 3,
                    ("uscc",), (), "deliver.hrss.tax_registration", 0, i, 1_700_000_000_000 + i,
                    "ab" * 32, shard)


def two_shards(n: int = 5) -> dict[str, list[LoggedRow]]:
    """Interleaved deliveries of shards A and B, chained in one batch."""
    batch = [entry(i, s) for i in range(n) for s in (A, B)]
    return chain_shards(batch, {}, T0)


def verify(rows: dict[str, list[LoggedRow]], heads: dict[str, Head | None] | None = None,
           starts: dict[str, Head] | None = None) -> VerifyReport:
    checker = ShardedChecker(starts=starts)
    for shard_rows in rows.values():
        for r in shard_rows:
            checker.feed(r)
    return checker.finish(heads if heads is not None else {
        s: Head(r[-1].seq, r[-1].row_hash, r[-1].logged_us) for s, r in rows.items()})


def test_each_shard_is_numbered_from_one_and_linked_on_its_own() -> None:
    rows = two_shards()
    assert sorted(rows) == [A, B]
    for s, mine in rows.items():
        assert [r.seq for r in mine] == [1, 2, 3, 4, 5] and {r.shard for r in mine} == {s}
        prev = GENESIS
        for r in mine:
            assert r.prev_hash == prev and r.row_hash == row_hash(prev, r.content())
            prev = r.row_hash
    # chaining a shard's batch after its head goes on from there, whatever the other does
    more = chain_shards([entry(9, A)], {A: Head(5, rows[A][-1].row_hash)}, T0 + 1)
    assert more[A][0].seq == 6 and more[A][0].prev_hash == rows[A][-1].row_hash


def test_the_shard_is_hashed_but_the_legacy_rows_keep_their_hashes() -> None:
    legacy = chain([entry(1, "")], Head(0, GENESIS), T0)[0]
    assert "shard" not in legacy.content()  # what a row logged before shards was hashed over
    sharded = chain([entry(1, "")._replace(shard=A)], Head(0, GENESIS), T0)[0]
    assert sharded.content()["shard"] == A and sharded.row_hash != legacy.row_hash
    # moving a row to another shard shows: its hash no longer matches
    moved = sharded._replace(shard=B)
    assert row_hash(moved.prev_hash, moved.content()) != moved.row_hash


def test_an_intact_log_of_shards_verifies_with_a_head_each() -> None:
    report = verify(two_shards())
    assert report.ok and report.rows == 10, report.lines()
    assert sorted(report.heads) == [A, B] and report.heads[A]["head_seq"] == 5
    assert report.head_seq is None  # several chains: no one head
    text = report.lines()
    assert "2 shards: intact" in text[0] and any(A in line for line in text[1:])
    assert sorted(report.as_dict()["heads"]) == [A, B]


def test_a_change_in_one_shard_is_found_in_that_shard_only() -> None:
    rows = two_shards()
    rows[B][2] = rows[B][2]._replace(recipient="someone_else")
    del rows[A][-1]  # and shard A's newest row deleted: its head says so
    report = verify(rows, {A: Head(5, "f" * 64), B: Head(5, rows[B][-1].row_hash)})
    assert {(p.shard, p.seq, p.kind) for p in report.problems} == {
        (B, 3, "altered"), (A, 5, "missing")}, report.lines()
    assert any(line.startswith(f"  [{B}] seq 3: altered") for line in report.lines())


def test_a_shard_without_a_head_and_a_head_without_rows_are_reported() -> None:
    rows = two_shards(2)
    report = verify(rows, {A: Head(2, rows[A][-1].row_hash), "query": Head(3, "e" * 64)})
    assert {(p.shard, p.kind) for p in report.problems} == {
        (B, "head_mismatch"), ("query", "missing")}, report.lines()


def test_a_shard_verifies_from_its_archived_boundary() -> None:
    rows = two_shards()
    boundary = rows[A][1]
    rows[A] = rows[A][2:]  # seq 1..2 archived
    starts = {A: Head(boundary.seq, boundary.row_hash)}
    assert verify(rows, starts=starts).ok
    report = verify(rows, starts={A: Head(2, "0" * 64)})
    assert [(p.shard, p.seq, p.kind) for p in report.problems] == [(A, 3, "broken_link")]


def test_checkpoint_chain_names_of_shards() -> None:
    assert log_chain("") == DELIVERIES and log_chain(A) == f"deliveries/{A}"
    assert log_shard(DELIVERIES) == "" and log_shard(log_chain(A)) == A
    assert log_shard("audit") is None
    assert log_rows({DELIVERIES: ChainHead(4, "a"), log_chain(A): ChainHead(3, "b"),
                     "audit": ChainHead(9, "c")}) == 7


def test_a_checkpoint_binds_every_shard() -> None:
    rows = two_shards()
    heads = {log_chain(s): ChainHead(r[3].seq, r[3].row_hash) for s, r in rows.items()}
    cp = make(1, T0, heads, GENESIS, KEY)
    assert set(cp.heads) == {log_chain(A), log_chain(B)}
    # shard B rewritten consistently from seq 2 (every hash recomputed): only B's binder finds it
    forged = chain([entry(i, B)._replace(recipient="x") for i in range(1, 5)],
                   Head(1, rows[B][0].row_hash), T0)
    findings = {}
    for s, mine in (("A", rows[A]), ("B", [rows[B][0], *forged])):
        binder = Binder(log_chain(A if s == "A" else B), [cp])
        for r in mine:
            binder.feed(r.seq, r.row_hash)
        findings[s] = [(f.seq, f.kind) for f in binder.finish()]
    assert findings == {"A": [], "B": [(4, "rewritten")]}
    # a shard cut back below its checkpointed seq
    binder = Binder(log_chain(A), [cp])
    for r in rows[A][:2]:
        binder.feed(r.seq, r.row_hash)
    assert [(f.seq, f.kind) for f in binder.finish()] == [(4, "truncated")]


def test_an_archive_of_shards_verifies_each_from_its_anchor(tmp_path: Path) -> None:
    rows = two_shards()
    kept = {s: r[2:] for s, r in rows.items()}  # each shard's seq 3..5, after an archived 1..2
    heads = {log_chain(s): ChainHead(r[-1].seq, r[-1].row_hash) for s, r in kept.items()}
    cp = make(1, T0, heads, GENESIS, KEY)
    header = {"shards": {s: {"first_seq": 3, "last_seq": 5, "prev_hash": r[0].prev_hash}
                         for s, r in kept.items()}}
    path = tmp_path / "a.jsonl"
    with open(path, "w") as out:
        archive.write(out, header, [*kept[A], *kept[B]], [cp], {signatures.key_id(
            KEY.public_key()): KEY.public_key()})
    found = archive.read(path)
    assert archive.verify(found).ok
    # a changed byte in shard B's rows is named in shard B
    lines = path.read_text().splitlines()
    n = next(i for i, line in enumerate(lines)
             if f'"shard":"{B}"' in line and '"seq":4' in line)
    obj = json.loads(lines[n])
    obj["row"]["recipient"] = "someone_else"
    lines[n] = json.dumps(obj)
    forged = archive.Archive(found.header, archive.read(_write(tmp_path, lines)).rows,
                             found.checkpoints, found.keys)
    assert [(p.shard, p.seq, p.kind) for p in archive.verify(forged).problems] == [
        (B, 4, "altered")]
    # a checkpoint that covers only shard A leaves shard B's rows uncovered
    only_a = make(1, T0, {log_chain(A): heads[log_chain(A)]}, GENESIS, KEY)
    partial = archive.Archive(found.header, found.rows, [only_a], found.keys)
    assert [(p.shard, p.kind) for p in archive.verify(partial).problems] == [(B, "uncovered")]


def test_a_version_one_archive_is_the_legacy_shard() -> None:
    assert archive.ranges({"first_seq": 13, "last_seq": 20, "prev_hash": "a" * 64}) == {
        "": {"first_seq": 13, "last_seq": 20, "prev_hash": "a" * 64}}


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "forged.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path
