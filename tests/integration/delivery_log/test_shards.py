"""A chain per shard on a real PostgreSQL: writers of different shards append at once without
waiting for each other, writers of the same shard wait their turn, a replay is logged once
whatever shard it lands in, every checkpoint covers every shard's head, a change in one shard
is named in that shard, and a month archived per shard leaves a log that verifies from each
shard's boundary (Art. 24, 26, 31)."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from pathlib import Path

from govbus import delivery_log as dl
from govbus.core import db, keys_store, signatures
from govbus.delivery_log import archive, checkpoint_store
from govbus.delivery_log.checkpoints import AUDIT, DELIVERIES, log_chain
from tests.integration.delivery_log.test_checkpoints import insert_rows
from tests.integration.helpers import wait_until

KEY = signatures.generate()
ONE, TWO = dl.ingest_shard("ingest.tax.tax_registration", 1), \
    dl.ingest_shard("ingest.tax.tax_registration", 2)
OCTOBER_US = int(dt.datetime(2026, 10, 15, tzinfo=dt.UTC).timestamp() * 1e6)


def entries(n: int, tag: str, shard: str) -> list[dl.LogEntry]:
    return [dl.LogEntry(f"{tag}-{i}", "exchange", "tax", "hrss", "tax.tax_registration", 3,
                        ("uscc",), (), "deliver.hrss.tax_registration", 0, i,
                        1_760_000_000_000 + i, hashlib.sha256(b"%d" % i).hexdigest(), shard)
            for i in range(n)]


def waiting_for_a_lock(dsn: str) -> int:
    """Sessions waiting for an advisory lock (a log writer waiting for a shard's)."""
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        return int(cur.fetchone()[0])  # type: ignore[index]


class Writer(threading.Thread):
    """One log writer appending one batch in a transaction of its own, on a thread."""

    def __init__(self, dsn: str, batch: list[dl.LogEntry]) -> None:
        super().__init__(daemon=True)
        self.dsn, self.batch = dsn, batch
        self.result: dl.AppendResult | None = None

    def run(self) -> None:
        conn = db.connect(self.dsn)
        try:
            with conn:
                self.result = dl.append(conn, self.batch)
        finally:
            conn.close()


def test_writers_of_different_shards_do_not_wait_and_of_one_shard_do(
        empty_database: str) -> None:
    dsn = empty_database
    db.migrate(dsn)
    holder = db.connect(dsn)  # writer A: appended to shard ONE, its transaction kept open
    try:
        held = dl.append(holder, entries(5, "a", ONE))
        assert held.written == 5 and held.heads[ONE].seq == 5

        other = Writer(dsn, entries(4, "b", TWO))  # writer B, another shard: goes through
        other.start()
        other.join(timeout=20)
        assert not other.is_alive(), "a writer of another shard waited for shard ONE's lock"
        assert other.result is not None and other.result.written == 4
        assert other.result.heads == {TWO: other.result.head} and other.result.head.seq == 4

        same = Writer(dsn, entries(3, "c", ONE))  # writer C, the same shard: waits for A
        same.start()
        wait_until(lambda: waiting_for_a_lock(dsn) == 1, 20, "writer C waiting for shard ONE")
        assert same.is_alive() and same.result is None
        holder.commit()
        same.join(timeout=20)
        assert not same.is_alive() and same.result is not None
        assert same.result.written == 3 and same.result.head.seq == 8  # after A's five
        assert same.result.waited_s > 0 and other.result.waited_s < same.result.waited_s
    finally:
        holder.close()
    report = dl.verify(dsn)
    assert report.ok, report.lines()
    assert {s: h["head_seq"] for s, h in report.heads.items()} == {"": 0, ONE: 8, TWO: 4}


def test_a_replay_is_logged_once_whatever_shard_it_lands_in(empty_database: str) -> None:
    dsn = empty_database
    db.migrate(dsn)
    conn = db.connect(dsn)
    try:
        with conn:
            assert dl.append(conn, entries(5, "r", ONE)).written == 5
        with conn:  # the partition moved to another worker, the batch replayed there
            again = dl.append(conn, entries(5, "r", TWO))
        assert (again.written, again.duplicates) == (0, 5)
        with conn:  # a replay mixed with new deliveries: the new ones only
            mixed = dl.append(conn, [*entries(5, "r", TWO), *entries(2, "n", TWO)])
        assert (mixed.written, mixed.duplicates, mixed.head.seq) == (2, 5, 2)
        with conn, conn.cursor() as cur:
            cur.execute("SELECT shard, count(*) FROM deliveries GROUP BY shard ORDER BY shard")
            assert cur.fetchall() == [(ONE, 5), (TWO, 2)]
    finally:
        conn.close()
    assert dl.verify(dsn).ok


def test_every_checkpoint_covers_every_shard_and_a_change_is_named_in_its_shard(
        empty_database: str) -> None:
    dsn = empty_database
    db.migrate(dsn)
    keys_store.register(dsn, "information_center", KEY.public_key(), "tests")
    conn = db.connect(dsn)
    try:
        with conn:
            dl.append(conn, [*entries(6, "x", ONE), *entries(4, "y", TWO),
                             *entries(2, "q", dl.QUERY_SHARD)])
        with conn:
            cp = checkpoint_store.take(conn, KEY)
    finally:
        conn.close()
    assert cp is not None
    assert {n: h.seq for n, h in cp.heads.items()} == {
        DELIVERIES: 0, log_chain(ONE): 6, log_chain(TWO): 4, log_chain("query"): 2, AUDIT: 0}
    assert dl.verify(dsn, checkpoints=[cp]).ok
    with db.transaction(dsn) as c, c.cursor() as cur:  # shard TWO rewritten consistently
        rows = dl.chain([e._replace(recipient="someone_else") for e in entries(4, "y", TWO)],
                        dl.Head(0, dl.GENESIS), 1_760_000_000_000_000)
        for r in rows:
            cur.execute("UPDATE deliveries SET recipient = %s, prev_hash = %s, row_hash = %s, "
                        "logged_at = to_timestamp(%s / 1e6) WHERE shard = %s AND seq = %s",
                        (r.recipient, r.prev_hash, r.row_hash, r.logged_us, TWO, r.seq))
        cur.execute("UPDATE delivery_log_head SET row_hash = %s WHERE shard = %s",
                    (rows[-1].row_hash, TWO))
    assert dl.verify(dsn).ok  # consistent: the chain alone cannot tell
    report = dl.verify(dsn, checkpoints=[cp])
    assert [(p.shard, p.seq, p.kind) for p in report.problems] == [(TWO, 4, "rewritten")], \
        report.lines()


def october_rows(dsn: str, n: int, shard: str) -> None:
    """Rows of ``shard`` as the writer logged them in October, with its head after them."""
    rows = dl.chain(entries(n, f"oct-{shard}", shard), dl.Head(0, dl.GENESIS), OCTOBER_US)
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        insert_rows(cur, rows)
        cur.execute("INSERT INTO delivery_log_head (shard, seq, row_hash, logged_at) VALUES "
                    "(%s, %s, %s, to_timestamp(%s / 1e6))",
                    (shard, rows[-1].seq, rows[-1].row_hash, OCTOBER_US))


def test_a_month_is_archived_per_shard_and_each_verifies_from_its_boundary(
        empty_database: str, tmp_path: Path) -> None:
    dsn = empty_database
    db.migrate(dsn)
    keys_store.register(dsn, "information_center", KEY.public_key(), "tests")
    october_rows(dsn, 7, ONE)
    october_rows(dsn, 3, TWO)
    conn = db.connect(dsn)
    try:
        with conn:
            checkpoint_store.take(conn, KEY)  # covers October, both shards
        with conn:
            dl.append(conn, [*entries(4, "dec1", ONE), *entries(2, "dec2", TWO)])  # now
        with conn:
            checkpoint_store.take(conn, KEY)
    finally:
        conn.close()
    path = tmp_path / "log-2026-10.jsonl"
    out = archive.archive_month(dsn, "2026-10", path)
    assert out["deleted"] == 10 and out["shards"] == {ONE: (1, 7), TWO: (1, 3)}
    found = archive.read(path)
    assert archive.verify(found).ok
    assert {s: (r["first_seq"], r["last_seq"]) for s, r in found.header["shards"].items()} == {
        ONE: (1, 7), TWO: (1, 3)}
    with db.transaction(dsn) as c, c.cursor() as cur:
        cur.execute("SELECT shard, last_seq FROM log_archives ORDER BY shard")
        assert cur.fetchall() == [(ONE, 7), (TWO, 3)]
    checkpoints = checkpoint_store.list_checkpoints(dsn)
    report = dl.verify(dsn, checkpoints=checkpoints)
    assert report.ok and report.rows == 6, report.lines()
    assert (report.heads[ONE]["first_seq"], report.heads[TWO]["first_seq"]) == (8, 4)
    # one shard's boundary moved: that shard's first row no longer links
    with db.transaction(dsn) as c, c.cursor() as cur:
        cur.execute("UPDATE log_archives SET last_row_hash = %s WHERE shard = %s",
                    ("f" * 64, TWO))
    report = dl.verify(dsn)
    assert [(p.shard, p.seq, p.kind) for p in report.problems] == [(TWO, 4, "broken_link")]
