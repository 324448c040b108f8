"""The quarantine: whole payloads the bus set aside, kept for their provider (Art. 19).

A DLQ record is bounded whatever its input (a digest, the size and a prefix of the payload);
the payload itself is filed here, where size does not matter, by the hot path's settling step
in the same pass that logs its batch. Two stages file rows:

- ``gate``: a record the gate rejected (its first rule and the reasons of its DLQ record);
- ``produce``: an output the broker or the client refused for good (larger than the limit,
  invalid), set aside per record instead of retrying its batch for ever.

A replayed batch files nothing twice (the row's source position, digest and output topic are
unique). The provider reads its own rows only (``govbus quarantine list|show --agency``, token
checked, Art. 24); rows are purged after ``GOVBUS_QUARANTINE_RETENTION_DAYS`` (personal data,
Art. 25).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson
import psycopg2.extras

from govbus.core import db
from govbus.core.batching import SetAside


class Row(NamedTuple):
    """One quarantined payload, as the settling process is sent it (pickles as a tuple)."""

    agency: str
    stage: str  # gate | produce
    rule: str
    reason: str
    topic: str
    partition: int
    offset: int
    output_topic: str
    event_id: str | None
    key: bytes | None
    payload: bytes | None
    payload_bytes: int
    payload_sha256: str


def _bytes(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return str(value).encode()


def rejected(agency: str, rule: str, reason: str, topic: str, partition: int, offset: int,
             event_id: str | None, key: bytes | None, payload: bytes | None) -> Row:
    """The row of a record the gate rejected."""
    body = payload or b""
    return Row(agency, "gate", rule, reason, topic, partition, offset, "", event_id, key,
               payload, len(body), hashlib.sha256(body).hexdigest())


def refused(entry: SetAside) -> Row:
    """The row of an output set aside at produce. Its provider: the ingest topic's agency
    when the position of the record it came from is known, else the delivery's provider."""
    body = _bytes(entry.value) or b""
    event_id: str | None = None
    if entry.source is not None:
        topic, partition, offset = entry.source
        agency = topic.split(".")[1] if topic.count(".") >= 2 else "unknown"
    else:  # a delivery: its value names its provider and event
        topic, partition, offset = entry.topic, -1, -1
        try:
            value = orjson.loads(body)
            agency, event_id = str(value["provider"]), str(value["event_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            agency = "unknown"
    return Row(agency, "produce", entry.error, entry.reason, topic, partition, offset,
               entry.topic, event_id, _bytes(entry.key), body, len(body),
               hashlib.sha256(body).hexdigest())


INSERT = """INSERT INTO quarantine (agency, stage, rule, reason, topic, kafka_partition,
                kafka_offset, output_topic, event_id, record_key, payload, payload_bytes,
                payload_sha256)
            VALUES %s
            ON CONFLICT (topic, kafka_partition, kafka_offset, payload_sha256, output_topic)
            DO NOTHING"""


class Writer:
    """Files rows on one reused connection; returns how many were new."""

    def __init__(self, dsn: str) -> None:
        self.db = db.Reused(dsn)

    def write(self, rows: Sequence[tuple[Any, ...]]) -> int:
        if not rows:
            return 0
        values = [(*r[:9], psycopg2.Binary(r[9]) if r[9] is not None else None,
                   psycopg2.Binary(r[10]) if r[10] is not None else None, r[11], r[12])
                  for r in rows]
        with self.db.use("cannot file quarantined records") as conn, conn, \
                conn.cursor() as cur:
            psycopg2.extras.execute_values(cur, INSERT, values, page_size=100)
            return int(cur.rowcount)

    def close(self) -> None:
        self.db.close()


COLUMNS = ("id", "agency", "stage", "rule", "reason", "topic", "kafka_partition",
           "kafka_offset", "output_topic", "event_id", "payload_bytes", "payload_sha256",
           "quarantined_at")


def listing(dsn: str, agency: str | None, limit: int = 100) -> list[dict[str, Any]]:
    """The newest rows, of one agency or (``None``) of all, without their payloads."""
    where, params = ("WHERE agency = %s", [agency]) if agency else ("", [])
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT {', '.join(COLUMNS)} FROM quarantine {where} "
                    "ORDER BY id DESC LIMIT %s", [*params, limit])
        rows = cur.fetchall()
    return [{**dict(zip(COLUMNS, r, strict=True)), "quarantined_at": r[-1].isoformat()}
            for r in rows]


def fetch(dsn: str, row_id: int) -> tuple[dict[str, Any], bytes | None, bytes | None] | None:
    """One row with its key and whole payload, or ``None``."""
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT {', '.join(COLUMNS)}, record_key, payload FROM quarantine "
                    "WHERE id = %s", (row_id,))
        r = cur.fetchone()
    if r is None:
        return None
    meta = {**dict(zip(COLUMNS, r[:len(COLUMNS)], strict=True)),
            "quarantined_at": r[len(COLUMNS) - 1].isoformat()}
    key, payload = r[len(COLUMNS)], r[len(COLUMNS) + 1]
    return meta, bytes(key) if key is not None else None, \
        bytes(payload) if payload is not None else None
