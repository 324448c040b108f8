"""The cases sink: ``reconcile.cases`` → the ``cases`` table, in batches, idempotently.

Every message is a full snapshot of one case (see :mod:`govbus.stream_apps.reconcile_rules`);
the sink upserts by ``case_key`` with one rule: only an *open* row changes. An open case takes
the newest values or becomes closed; a closed or resolved case never reopens, so replays,
re-emissions after a reconciler restart and late duplicates change nothing. Several messages of
one case in one batch collapse first (closed wins over open). Offsets are committed after the
database commit.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import psycopg2
import psycopg2.extensions
import psycopg2.extras
from confluent_kafka import Consumer

from govbus.core import db, metrics, topics
from govbus.core.batching import BatchStage, commit, next_offsets, serve, usable
from govbus.core.config import Settings
from govbus.core.kafka import consumer_config, ensure_topics

log = logging.getLogger("govbus.cases_sink")
CASES_TOPIC = topics.RECONCILE_CASES

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


class CasesSink(BatchStage):
    """One sink worker (several may share the group: upserts by key commute as needed)."""

    component = "cases_sink"
    eager = False  # off the delivery path: full batches, fewer wake-ups

    def __init__(self, settings: Settings, group: str = "govbus-cases-sink",
                 batch: int = 500) -> None:
        ensure_topics(settings, [CASES_TOPIC])
        super().__init__(Consumer(consumer_config(settings, group)), batch)
        self.settings = settings
        self.consumer.subscribe([CASES_TOPIC])
        self.db = db.Reused(settings.database_url)

    def close(self) -> None:
        super().close()
        self.db.close()

    def process(self, msgs: list[Any]) -> None:
        cases: list[dict[str, Any]] = []
        msgs = usable(msgs)
        for msg in msgs:
            try:
                case = json.loads(msg.value())
                row(case)
                cases.append(case)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("malformed case at %s[%d]@%d skipped: %s", msg.topic(),
                          msg.partition(), msg.offset(), exc)
                self.stats["malformed"] += 1
                metrics.CASES_SINK_RECORDS.labels("malformed").inc()
        with self.db.use("cannot write cases") as conn:
            self.stats["written"] += write(conn, cases)
        self.stats["read"] += len(cases)
        metrics.CASES_SINK_RECORDS.labels("read").inc(len(cases))
        commit(self.consumer, next_offsets(msgs))


def main() -> None:
    """``python -m govbus.consumers.cases_sink``: run until SIGTERM or SIGINT."""
    serve("cases sink", lambda: CasesSink(Settings.from_env()),
          lambda _: f"{CASES_TOPIC} → PostgreSQL")


if __name__ == "__main__":
    main()
