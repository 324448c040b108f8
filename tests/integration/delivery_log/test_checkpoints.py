"""Signed checkpoints against the tamperings the chain alone misses, on copies of a real
PostgreSQL database: the newest rows deleted and the head moved back, every row deleted and
the head reset, a forged row appended with its hash recomputed below a checkpoint, the chain
rewritten consistently from a row; each found by `govbus log verify --checkpoints FILE` with
the checkpoints an agency kept, and an untouched log intact (Art. 24, 26, 31)."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from govbus import delivery_log as dl
from govbus.core import db, keys_store, signatures
from govbus.delivery_log import checkpoint_store
from tests.integration.govbus.test_access import cli

KEY = signatures.generate()


def entries(n: int, tag: str) -> list[dl.LogEntry]:
    return [dl.LogEntry(f"{tag}-{i}", "exchange", "tax", "hrss", "tax.tax_registration", 3,
                        ("uscc",), (), "deliver.hrss.tax_registration", 0, i,
                        1_760_000_000_000 + i, hashlib.sha256(b"%d" % i).hexdigest())
            for i in range(n)]


@pytest.fixture
def logged(empty_database: str, pg_admin: str) -> Iterator[tuple[str, str]]:
    """A log of 30 rows in two batches, a checkpoint after each; (dsn, admin dsn)."""
    db.migrate(empty_database)
    keys_store.register(empty_database, "information_center", KEY.public_key(), "tests")
    conn = db.connect(empty_database)
    try:
        for batch in ("a", "b"):
            with conn:
                dl.append(conn, entries(15, batch))
            with conn:
                assert checkpoint_store.take(conn, KEY) is not None
        with conn:
            assert checkpoint_store.take(conn, KEY) is None  # nothing moved: none taken
    finally:
        conn.close()
    yield empty_database, pg_admin


def copy_of(dsn: str, admin: str) -> str:
    """A copy of ``dsn``'s database, dropped by the session's cleanup of test databases."""
    name = f"govbus_test_{uuid.uuid4().hex[:10]}"
    source = dsn.rsplit("/", 1)[1].split("?")[0]
    conn = db.connect(admin, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
    finally:
        conn.close()
    return dsn.rsplit("/", 1)[0] + "/" + name


def drop(dsn: str, admin: str) -> None:
    conn = db.connect(admin, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{dsn.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        conn.close()


def sql(dsn: str, *statements: str) -> None:
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        for s in statements:
            cur.execute(s)


def insert_rows(cur: Any, rows: list[dl.LoggedRow]) -> None:
    """Chained rows written straight into ``deliveries``, each in its own shard, as anyone
    with the database can (no project code: the log writer's checks are bypassed)."""
    for r in rows:
        cur.execute("INSERT INTO deliveries (shard, seq, event_id, channel, provider, "
                    "recipient, resource_id, grant_id, fields, masked_fields, topic, "
                    "kafka_partition, kafka_offset, delivered_at, logged_at, prev_hash, "
                    "row_hash, content_sha256) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, "
                    "%s, %s, %s, %s, to_timestamp(%s / 1e6), to_timestamp(%s / 1e6), %s, "
                    "%s, %s)",
                    (r.shard, r.seq, r.event_id, r.channel, r.provider, r.recipient,
                     r.resource, r.grant_id, r.fields, r.masked_fields, r.topic,
                     r.partition, r.offset, r.delivered_us, r.logged_us, r.prev_hash,
                     r.row_hash, r.content_sha256))


def forge_append(dsn: str) -> None:
    """A forged row appended after seq 14 with its hash recomputed and the rest re-chained,
    as anyone with the database and twenty lines of SHA-256 can (no project code needed)."""
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT seq, row_hash FROM deliveries WHERE seq = 14")
        _, prev = cur.fetchone()
        cur.execute("DELETE FROM deliveries WHERE seq > 14")
        head = dl.Head(14, prev)
        later = int(time.time() * 1e6) + 10**6  # logged after the genuine rows, as it would be
        rows = dl.chain(entries(1, "forged") + entries(15, "b")[:-1], head, later)
        insert_rows(cur, rows)
        cur.execute("UPDATE delivery_log_head SET seq = %s, row_hash = %s",
                    (rows[-1].seq, rows[-1].row_hash))


TAMPERINGS = {
    "newest rows deleted, head moved back": lambda d: sql(
        d, "DELETE FROM deliveries WHERE seq > 20",
        "UPDATE delivery_log_head SET (seq, row_hash) = (SELECT seq, row_hash FROM "
        "deliveries WHERE seq = 20)"),
    "every row deleted, head reset": lambda d: sql(
        d, "DELETE FROM deliveries",
        f"UPDATE delivery_log_head SET seq = 0, row_hash = '{'0' * 64}'"),
    "forged row appended, hashes recomputed": forge_append,
}


def test_the_chain_alone_misses_what_the_checkpoints_find(logged: tuple[str, str],
                                                          tmp_path: Path) -> None:
    dsn, admin = logged
    kept = tmp_path / "kept.jsonl"  # as an agency exports what its subscriber kept
    kept.write_text("".join(json.dumps(c.as_dict()) + "\n"
                            for c in checkpoint_store.list_checkpoints(dsn)))
    code, out, err = cli(dsn, "log", "verify", "--checkpoints", str(kept))
    assert code == 0 and "intact" in out and "2 checkpoint(s)" in out, out + err
    for name, tamper in TAMPERINGS.items():
        copy = copy_of(dsn, admin)
        try:
            tamper(copy)
            assert dl.verify(copy).ok, f"{name}: the chain alone should not see it"
            code, out, err = cli(copy, "log", "verify", "--checkpoints", str(kept), "--json")
            report = json.loads(out)
            assert code == 1 and not report["ok"], (name, out, err)
            assert set(report["problem_counts"]) & {"truncated", "rewritten"}, (name, report)
        finally:
            drop(copy, admin)


def test_deleted_checkpoints_and_a_foreign_key_are_found(logged: tuple[str, str],
                                                         tmp_path: Path) -> None:
    dsn, admin = logged
    kept = tmp_path / "kept.jsonl"
    code, out, _ = cli(dsn, "log", "checkpoints", "--out", str(kept))
    assert code == 0 and "2 checkpoint(s)" in out
    copy = copy_of(dsn, admin)
    try:
        sql(copy, "DELETE FROM log_checkpoints")
        code, out, _ = cli(copy, "log", "verify", "--checkpoints", str(kept), "--json")
        assert code == 1 and json.loads(out)["problem_counts"] == {"checkpoint_missing": 2}
    finally:
        drop(copy, admin)
    other = tmp_path / "other.pub"
    other.write_bytes(signatures.public_pem(signatures.generate().public_key()))
    code, out, _ = cli(dsn, "log", "verify", "--checkpoints", str(kept), "--checkpoint-key",
                       str(other), "--json")
    assert code == 1 and json.loads(out)["problem_counts"] == {"bad_signature": 2}


def test_a_receipt_of_other_bytes_than_logged_is_found(logged: tuple[str, str]) -> None:
    dsn, _ = logged
    dl.confirm_receipts(dsn, [("a-1", "hrss", "exchange", hashlib.sha256(b"1").hexdigest()),
                              ("a-2", "hrss", "exchange", "0" * 64)])
    report = dl.verify(dsn)
    assert report.counts == {"receipt_mismatch": 1}
    assert report.problems[0].seq == 3 and "a-2" in report.problems[0].message


def test_an_event_id_delivered_again_with_other_bytes_is_on_record(empty_database: str) -> None:
    """A replay (the same bytes) is logged once and silently; the same key with other bytes is
    logged once too, but kept in log_conflicts and reported: one event id, two contents."""
    db.migrate(empty_database)
    first = entries(2, "x")
    conn = db.connect(empty_database)
    try:
        with conn:
            assert dl.append(conn, first).written == 2
        with conn:
            again = dl.append(conn, first)
        assert (again.written, again.duplicates, again.conflicts) == (0, 2, 0)
        other = first[1]._replace(content_sha256=hashlib.sha256(b"other").hexdigest())
        with conn:
            clash = dl.append(conn, [other])
        assert (clash.written, clash.conflicts) == (0, 1)
        with conn:
            assert dl.append(conn, [other]).conflicts == 0  # on record once
    finally:
        conn.close()
    report = dl.verify(empty_database)
    assert report.counts == {"event_id_conflict": 1}
    assert "x-1" in report.problems[0].message and "two contents" in report.problems[0].message
