"""Signed checkpoints in PostgreSQL: taking one, listing them, reading an agency's copies.

:func:`take` reads the head of every chain (every shard of the delivery log's, and the
audit ledger's) and, when any moved since the last checkpoint,
signs the next checkpoint and records it in ``log_checkpoints`` (migration 0013), under an
advisory lock so that two checkpointers never number two checkpoints alike. The checkpointer
(:mod:`govbus.stream_apps.checkpointer`) also publishes each on ``govbus.log.checkpoints``;
a subscriber keeps those it receives in the agency's own database (:data:`AGENCY_DDL`).
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterable
from typing import Any

import orjson
import psycopg2
import psycopg2.extensions

from govbus.core import db
from govbus.core.errors import DatabaseError
from govbus.core.signatures import Ed25519PrivateKey
from govbus.delivery_log import audit
from govbus.delivery_log.chain import GENESIS, LEGACY, MalformedEntry
from govbus.delivery_log.checkpoints import AUDIT, ChainHead, Checkpoint, log_chain, make, parse

LOCK_KEY = 0x60B0C4EC  # advisory lock of the checkpointer
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

#: where an agency keeps the checkpoints its subscriber received, in its own database
AGENCY_DDL = """
CREATE SCHEMA IF NOT EXISTS govbus_evidence;
CREATE TABLE IF NOT EXISTS govbus_evidence.checkpoints (
    number      bigint PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    checkpoint  text NOT NULL
);
"""


def read_heads(cur: Any) -> dict[str, ChainHead]:
    """The head of every chain a checkpoint covers: every shard of the delivery log's
    (named by :func:`govbus.delivery_log.checkpoints.log_chain`) and the audit ledger's
    sealed head."""
    cur.execute("SELECT shard, seq, row_hash FROM delivery_log_head ORDER BY shard")
    found = cur.fetchall()
    if not any(s == LEGACY for s, _, _ in found):
        raise DatabaseError("delivery_log_head has no row for the legacy shard: migrations not "
                            "applied, or the log was tampered with; run `govbus log verify`")
    heads = {log_chain(str(s)): ChainHead(int(seq), str(h)) for s, seq, h in found}
    seq, row_hash = audit.head(cur)
    heads[AUDIT] = ChainHead(int(seq), str(row_hash))
    return heads


def _row(number: Any, body: str, key_id: str, signature: Any) -> Checkpoint:
    """A checkpoint from its table row: the signed body, the key id and the signature."""
    obj = orjson.loads(body) | {"key_id": key_id,
                                "signature": base64.b64encode(bytes(signature)).decode()}
    return parse(orjson.dumps(obj))


def read_all(cur: Any) -> list[Checkpoint]:
    """Every checkpoint the bus records, oldest first, on the caller's cursor (its snapshot)."""
    cur.execute("SELECT number, body, key_id, signature FROM log_checkpoints ORDER BY number")
    return [_row(*r) for r in cur.fetchall()]


def latest(cur: Any) -> Checkpoint | None:
    cur.execute("SELECT number, body, key_id, signature FROM log_checkpoints "
                "ORDER BY number DESC LIMIT 1")
    found = cur.fetchone()
    return _row(*found) if found else None


def take(conn: psycopg2.extensions.connection, private: Ed25519PrivateKey,
         now_us: int | None = None) -> Checkpoint | None:
    """The next checkpoint, signed and recorded in the caller's transaction; None when no
    chain moved since the last one. The audit ledger's head is its sealed one: seal it
    first (:func:`govbus.delivery_log.audit.seal`, which commits on its own) to cover what
    happened up to now."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        heads = read_heads(cur)
        last = latest(cur)
        if last is not None and dict(last.heads) == heads:
            return None
        if now_us is None:
            cur.execute("SELECT round(extract(epoch FROM clock_timestamp()) * 1000000)::bigint")
            now_us = int(cur.fetchone()[0])
        cp = make(last.number + 1 if last else 1, now_us, heads,
                  last.digest if last else GENESIS, private)
        cur.execute("INSERT INTO log_checkpoints (number, at, body, key_id, signature, digest) "
                    "VALUES (%s, %s, %s, %s, %s, %s)",
                    (cp.number, EPOCH + dt.timedelta(microseconds=cp.at_us),
                     cp.body.decode(), cp.key_id, cp.signature, cp.digest))
    return cp


def list_checkpoints(dsn: str, limit: int | None = None) -> list[Checkpoint]:
    """The bus's checkpoints, oldest first (the newest ``limit`` when given)."""
    try:
        with db.transaction(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT number, body, key_id, signature FROM (SELECT * FROM "
                        "log_checkpoints ORDER BY number DESC LIMIT %s) c ORDER BY number",
                        (limit,))
            return [_row(*r) for r in cur.fetchall()]
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot read the checkpoints: {exc}") from exc


def keep(conn: psycopg2.extensions.connection, checkpoints: Iterable[Checkpoint]) -> int:
    """Keep ``checkpoints`` in an agency's database (its subscriber's sink); returns how many
    were new. A checkpoint kept is never replaced: a different one with the same number is
    the evidence of a rewrite, and stays as it was first received."""
    rows = [(cp.number, orjson.dumps(cp.as_dict()).decode()) for cp in checkpoints]
    if not rows:
        return 0
    with conn.cursor() as cur:
        cur.execute(AGENCY_DDL)
        new = 0
        for number, text in rows:
            cur.execute("INSERT INTO govbus_evidence.checkpoints (number, checkpoint) "
                        "VALUES (%s, %s) ON CONFLICT DO NOTHING", (number, text))
            new += cur.rowcount
    return new


def kept(dsn: str) -> list[Checkpoint]:
    """The checkpoints an agency's database keeps (its subscriber's sink), oldest first."""
    try:
        with db.transaction(dsn) as conn, conn.cursor() as cur:
            cur.execute(AGENCY_DDL)
            cur.execute("SELECT checkpoint FROM govbus_evidence.checkpoints ORDER BY number")
            return [parse(r[0]) for r in cur.fetchall()]
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot read the kept checkpoints: {exc}") from exc
    except MalformedEntry as exc:
        raise DatabaseError(f"a kept checkpoint is malformed: {exc}") from exc
