"""Archives of the delivery log, on a real PostgreSQL and then with nothing running: a month
exported with its checkpoints and keys verifies offline, a changed byte is named by its seq,
and a month archived out of the database leaves a log that still verifies from the boundary
(Art. 24, 26, 31)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path

import orjson

from govbus import delivery_log as dl
from govbus.core import db, keys_store, signatures
from govbus.delivery_log import checkpoint_store
from tests.integration.delivery_log.test_checkpoints import entries, insert_rows
from tests.integration.govbus.test_access import cli
from tests.integration.govbus.test_cli import govbus

KEY = signatures.generate()
OCTOBER_US = int(dt.datetime(2026, 10, 15, tzinfo=dt.UTC).timestamp() * 1e6)


def october_rows(dsn: str, n: int) -> None:
    """Rows as the writer logged them in October: chained, with the head after them."""
    rows = dl.chain(entries(n, "oct"), dl.Head(0, dl.GENESIS), OCTOBER_US)
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        insert_rows(cur, rows)
        cur.execute("UPDATE delivery_log_head SET seq = %s, row_hash = %s, logged_at = "
                    "to_timestamp(%s / 1e6)", (rows[-1].seq, rows[-1].row_hash, OCTOBER_US))


def offline(*args: str) -> tuple[int, str]:
    """A command with no database and no broker configured."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",
                                                            "KAFKA_BOOTSTRAP_SERVERS")}
    out = govbus(*args, env=env | {"DATABASE_URL": "", "KAFKA_BOOTSTRAP_SERVERS": ""})
    return out.returncode, out.stdout + out.stderr


def test_a_month_exported_verifies_offline_and_archived_leaves_a_verifiable_log(
        empty_database: str, tmp_path: Path) -> None:
    dsn = empty_database
    db.migrate(dsn)
    keys_store.register(dsn, "information_center", KEY.public_key(), "tests")
    october_rows(dsn, 12)
    conn = db.connect(dsn)
    try:
        with conn:
            checkpoint_store.take(conn, KEY)  # covers October
        with conn:
            dl.append(conn, entries(5, "dec"))  # logged now
        with conn:
            checkpoint_store.take(conn, KEY)
    finally:
        conn.close()

    exported = tmp_path / "october.jsonl"
    code, out, err = cli(dsn, "log", "export", "--from", "2026-10-01", "--to", "2026-10-31",
                         "--out", str(exported))
    assert code == 0 and "12 rows (seq 1..12)" in out, out + err
    pinned = tmp_path / "center.pub"
    pinned.write_bytes(signatures.public_pem(KEY.public_key()))
    code, text = offline("log", "verify", "--archive", str(exported), "--checkpoint-key",
                         str(pinned))
    assert code == 0 and "intact" in text and "pinned" in text, text

    # one byte of one row changed: the first break is named
    lines = exported.read_bytes().splitlines()
    row = orjson.loads(lines[7])
    row["row"]["recipient"] = "someone_else"
    lines[7] = orjson.dumps(row, option=orjson.OPT_SORT_KEYS)
    forged = tmp_path / "forged.jsonl"
    forged.write_bytes(b"\n".join(lines) + b"\n")
    code, text = offline("log", "verify", "--archive", str(forged), "--checkpoint-key",
                         str(pinned))
    assert code == 1 and "first break at seq 7: altered" in text, text
    other = tmp_path / "other.pub"
    other.write_bytes(signatures.public_pem(signatures.generate().public_key()))
    code, text = offline("log", "verify", "--archive", str(exported), "--checkpoint-key",
                         str(other))
    assert code == 1 and "bad_signature" in text, text

    # archiving: only the oldest month, only once covered, then the log verifies from it
    code, out, err = cli(dsn, "log", "archive", "--month", "2026-12", "--out",
                         str(tmp_path / "dec.jsonl"))
    assert code == 1 and "archive the months before it first" in err, out + err
    archived = tmp_path / "log-2026-10.jsonl"
    code, out, err = cli(dsn, "log", "archive", "--month", "2026-10", "--out", str(archived))
    assert code == 0 and "12 rows deleted" in out, out + err
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT min(seq), count(*) FROM deliveries")
        assert cur.fetchone() == (13, 5)
        cur.execute("SELECT sha256 FROM log_archives WHERE month = '2026-10'")
        assert cur.fetchone()[0] == hashlib.sha256(archived.read_bytes()).hexdigest()
    code, out, err = cli(dsn, "log", "verify", "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["first_seq"] == 13, out + err
    assert report["archives"][0]["last_seq"] == 12
    kept = tmp_path / "kept.jsonl"
    cli(dsn, "log", "checkpoints", "--out", str(kept))
    code, out, err = cli(dsn, "log", "verify", "--checkpoints", str(kept))
    assert code == 0 and "archived in 1 file(s)" in out, out + err
    # the rows archived cannot come back unnoticed, nor the boundary move
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("UPDATE log_archives SET last_row_hash = %s", ("f" * 64,))
    code, out, _ = cli(dsn, "log", "verify", "--json")
    assert code == 1 and "broken_link" in json.loads(out)["problem_counts"]
