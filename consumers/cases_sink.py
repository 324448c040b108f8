"""The cases sink: ``reconcile.cases`` → the ``cases`` table, in batches, idempotently.

Every message is a full snapshot of one case (see :mod:`stream_apps.reconcile_rules`); the sink
upserts by ``case_key`` with one rule: only an *open* row changes. An open case takes the newest
values or becomes closed; a closed or resolved case never reopens, so replays, re-emissions after
a reconciler restart and late duplicates change nothing. Several messages of one case in one
batch collapse first (closed wins over open). Offsets are committed after the database commit.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import signal
import threading
from collections import Counter
from typing import Any

import psycopg2
import psycopg2.extensions
import psycopg2.extras
from confluent_kafka import Consumer, TopicPartition

from govbus_core import db, metrics
from govbus_core.config import Settings
from govbus_core.errors import DatabaseError, GovbusError
from govbus_core.kafka import consumer_config, ensure_topics

log = logging.getLogger("govbus.cases_sink")
CASES_TOPIC = "reconcile.cases"

UPSERT = """
INSERT INTO cases (case_key, entity_key, attribute, owner_agency, other_agency, status, values,
                   opened_at, deadline, closed_at, resolution)
VALUES %s
ON CONFLICT (case_key) DO UPDATE SET
    status = EXCLUDED.status, values = EXCLUDED.values, closed_at = EXCLUDED.closed_at,
    resolution = EXCLUDED.resolution, updated_at = now()
WHERE cases.status = 'open'
"""


def _ts(ms: int | None) -> dt.datetime | None:
    return None if ms is None else dt.datetime.fromtimestamp(int(ms) / 1000, dt.UTC)


def collapse(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One snapshot per case key: the last one, except that closed wins over open."""
    out: dict[str, dict[str, Any]] = {}
    for case in cases:
        held = out.get(case["case_key"])
        if held is None or held["status"] == "open":
            out[case["case_key"]] = case
    return list(out.values())


def row(case: dict[str, Any]) -> tuple[Any, ...]:
    """The ``cases`` row of a case message; KeyError/ValueError if it is malformed."""
    if case["status"] not in ("open", "closed"):
        raise ValueError(f"status {case['status']!r}")
    return (case["case_key"], case["entity_key"], case["attribute"], case["owner_agency"],
            case.get("other_agency"), case["status"],
            psycopg2.extras.Json(case["values"]), _ts(case["opened_ms"]),
            _ts(case["deadline_ms"]), _ts(case.get("closed_ms")), case.get("resolution"))


def write(conn: psycopg2.extensions.connection, cases: list[dict[str, Any]]) -> int:
    """Upsert a batch in one transaction; the number of rows inserted or changed."""
    rows = [row(c) for c in collapse(cases)]
    if not rows:
        return 0
    with conn, conn.cursor() as cur:
        psycopg2.extras.execute_values(cur, UPSERT, rows, page_size=len(rows))
        return int(cur.rowcount)


class CasesSink:
    """One sink worker (several may share the group: upserts by key commute as needed)."""

    def __init__(self, settings: Settings, group: str = "govbus-cases-sink",
                 batch: int = 500) -> None:
        self.settings, self.batch = settings, batch
        ensure_topics(settings, [CASES_TOPIC])
        self.consumer = Consumer(consumer_config(settings, group))
        self.consumer.subscribe([CASES_TOPIC])
        self.stats: Counter[str] = Counter()
        self.stopping = threading.Event()
        self._conn: psycopg2.extensions.connection | None = None

    def run(self) -> None:
        backoff = 0.5
        try:
            while not self.stopping.is_set():
                msgs = [m for m in self.consumer.consume(self.batch, 0.5) if not m.error()]
                if not msgs:
                    continue
                try:
                    self.process(msgs)
                    backoff = 0.5
                except DatabaseError as exc:
                    log.warning("batch not written, retry in %.1f s: %s", backoff, exc)
                    self._rewind(msgs)
                    self.stopping.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
        finally:
            self.consumer.close()
            if self._conn is not None:
                self._conn.close()

    def _rewind(self, msgs: list[Any]) -> None:
        """Seek back to the first message of the failed batch, per partition."""
        first: dict[tuple[str, int], int] = {}
        for m in msgs:
            tp, offset = (str(m.topic()), int(m.partition())), int(m.offset())
            first[tp] = min(first.get(tp, offset), offset)
        for (topic, part), offset in first.items():
            self.consumer.seek(TopicPartition(topic, part, offset))

    def stop(self, *_: Any) -> None:
        self.stopping.set()

    def process(self, msgs: list[Any]) -> None:
        cases: list[dict[str, Any]] = []
        offsets: dict[tuple[str, int], int] = {}
        for msg in msgs:
            offsets[(msg.topic(), msg.partition())] = msg.offset() + 1
            try:
                case = json.loads(msg.value())
                row(case)
                cases.append(case)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("malformed case at %s[%d]@%d skipped: %s", msg.topic(),
                          msg.partition(), msg.offset(), exc)
                self.stats["malformed"] += 1
                metrics.CASES_SINK_RECORDS.labels("malformed").inc()
        try:
            if self._conn is None or self._conn.closed:
                self._conn = db.connect(self.settings.database_url)
            self.stats["written"] += write(self._conn, cases)
        except psycopg2.Error as exc:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            raise DatabaseError(f"cannot write cases: {exc}") from exc
        self.stats["read"] += len(cases)
        metrics.CASES_SINK_RECORDS.labels("read").inc(len(cases))
        self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                             asynchronous=False)


def main() -> None:
    """``python -m consumers.cases_sink``: run until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        sink = CasesSink(Settings.from_env())
        metrics.serve()  # process metrics for the scrape target `govbus up` assigns
    except GovbusError as exc:
        log.error("cases sink not started: %s", exc)
        raise SystemExit(1) from exc
    signal.signal(signal.SIGTERM, sink.stop)
    signal.signal(signal.SIGINT, sink.stop)
    log.info("cases sink started: %s → PostgreSQL", CASES_TOPIC)
    sink.run()
    log.info("cases sink stopped: %s", dict(sink.stats))


if __name__ == "__main__":
    main()
