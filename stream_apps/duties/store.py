"""What the duties app keeps in PostgreSQL (migration 0020): the relay's place in the audit
ledger, the inbox, the facts of time already published, the drafted yearly reports.

Every write here is idempotent by a key derived from its cause, so that the app may be killed
at any point and replay: the inbox by ``notice_id``, the timers' facts by ``event_id``, the
drafts by year and kind, the relay's position by moving forward only.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import Any, TypeAlias

import psycopg2.extensions
import psycopg2.extras

from govbus.stream_apps.duties.events import Change
from govbus.stream_apps.duties.notices import Notice

Conn: TypeAlias = psycopg2.extensions.connection


def _image(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    return dict(json.loads(value) if isinstance(value, (str, bytes)) else value)


def position(conn: Conn) -> int:
    """The last ledger seq whose control events the broker acknowledged."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT seq FROM duty_relay_position WHERE id = 1")
        row = cur.fetchone()
        return int(row[0]) if row else 0


def advance(conn: Conn, seq: int) -> None:
    """Record ``seq`` as relayed; never moves back."""
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO duty_relay_position (id, seq) VALUES (1, %s) ON CONFLICT (id) "
                    "DO UPDATE SET seq = greatest(duty_relay_position.seq, EXCLUDED.seq), "
                    "moved_at = now()", (seq,))


def changes_after(conn: Conn, seq: int, limit: int) -> list[tuple[Change, str | None]]:
    """Sealed ledger rows after ``seq``, in seq order, with their actors. Sealed rows only:
    their seqs are consecutive and final, so nothing committed late is passed over."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT seq, at, table_name, op, row_key, before, after, actor "
                    "FROM audit_ledger WHERE seq > %s ORDER BY seq LIMIT %s", (seq, limit))
        return [(Change(int(r[0]), r[1], r[2], r[3], r[4], _image(r[5]), _image(r[6])), r[7])
                for r in cur.fetchall()]


def to_inbox(conn: Conn, notice: Notice) -> int:
    """Keep ``notice`` in its agency's inbox once; the inbox row's id.

    A notice the control plane already wrote in its own transaction (``notice.adopts``) is
    given the notice's id rather than written again; a notice already kept is left alone.
    """
    nid = notice.notice_id
    with conn, conn.cursor() as cur:
        cur.execute("SELECT notification_id FROM notifications WHERE notice_id = %s", (nid,))
        row = cur.fetchone()
        if row:
            return int(row[0])
        if notice.adopts:
            kind, key, value = notice.adopts
            cur.execute("UPDATE notifications SET notice_id = %s WHERE notification_id = ("
                        "SELECT notification_id FROM notifications WHERE notice_id IS NULL "
                        "AND agency = %s AND kind = %s AND body ->> %s = %s "
                        "ORDER BY notification_id LIMIT 1 FOR UPDATE) "
                        "RETURNING notification_id", (nid, notice.agency, kind, key, value))
            row = cur.fetchone()
            if row:
                return int(row[0])
        cur.execute("INSERT INTO notifications (agency, kind, body, notice_id) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (notice_id) DO NOTHING "
                    "RETURNING notification_id",
                    (notice.agency, notice.event.kind,
                     psycopg2.extras.Json(notice.record(), dumps=_dumps), nid))
        row = cur.fetchone()
        if row is None:
            cur.execute("SELECT notification_id FROM notifications WHERE notice_id = %s",
                        (nid,))
            row = cur.fetchone()
        return int(row[0])


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


def unpublished(conn: Conn, event_ids: Sequence[str]) -> set[str]:
    """Those of ``event_ids`` the timers have not published yet."""
    if not event_ids:
        return set()
    with conn, conn.cursor() as cur:
        cur.execute("SELECT event_id FROM duty_timer_events WHERE event_id = ANY(%s)",
                    (list(event_ids),))
        return set(event_ids) - {r[0] for r in cur.fetchall()}


def mark_published(conn: Conn, event_ids: Iterable[str]) -> None:
    with conn, conn.cursor() as cur:
        psycopg2.extras.execute_values(
            cur, "INSERT INTO duty_timer_events (event_id) VALUES %s ON CONFLICT DO NOTHING",
            [(e,) for e in event_ids])


def draft(conn: Conn, year: int, kind: str, body: dict[str, Any]) -> bool:
    """Keep the draft of ``kind`` for ``year`` unless one is kept; whether this one was."""
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO duty_report_drafts (year, kind, body) VALUES (%s, %s, %s) "
                    "ON CONFLICT DO NOTHING", (year, kind, psycopg2.extras.Json(
                        body, dumps=_dumps)))
        return bool(cur.rowcount)


def drafted(conn: Conn, year: int) -> set[str]:
    """The kinds of report drafted for ``year``."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT kind FROM duty_report_drafts WHERE year = %s", (year,))
        return {r[0] for r in cur.fetchall()}


def rows(conn: Conn, sql: str, params: Sequence[Any] | dict[str, Any] = ()
         ) -> list[dict[str, Any]]:
    """The rows of a read-only query, as dicts."""
    with conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(sql, params)
        return [dict(r) for r in cur.fetchall()]


def exists(conn: Conn, table: str) -> bool:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
        return bool(cur.fetchone()[0])


def utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC)
