"""An agency's notices: the ``notifications`` rows the control plane writes for it in the
transaction of what they tell (a request filed with it as provider, a decision on its request,
a grant of its revoked; Art. 18), read by the agency and acknowledged by it alone.

A notice is addressed to one agency: only that agency acknowledges it (Art. 24). An
acknowledgement is kept once: acknowledging again changes nothing and returns the first time.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg2
import psycopg2.extras

from govbus.core import db
from govbus.core.errors import DatabaseError, ForbiddenError, GovbusError, NotFoundError


class NoticeError(GovbusError):
    """A notice cannot be read or acknowledged as asked."""

    rule = "notice.invalid"
    article = "Art. 18"


class NoticeNotFound(NoticeError, NotFoundError):
    """The notice named does not exist."""


class NoticeForbidden(NoticeError, ForbiddenError):
    """The notice is addressed to another agency (Art. 24)."""


_COLUMNS = "notification_id AS id, agency, kind, body, created_at, acknowledged_at"


def _out(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in row.items()}


def listing(dsn: str, agency: str | None, unread: bool = False,
            limit: int = 100) -> list[dict[str, Any]]:
    """``agency``'s notices (None: every agency's), newest first; ``unread``: not
    acknowledged."""
    where, params = ["true"], []
    if agency:
        where.append("agency = %s")
        params.append(agency)
    if unread:
        where.append("acknowledged_at IS NULL")
    try:
        with db.transaction(dsn) as conn, conn.cursor(
                cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(f"SELECT {_COLUMNS} FROM notifications WHERE {' AND '.join(where)} "
                        "ORDER BY notification_id DESC LIMIT %s", [*params, limit])
            return [_out(dict(r)) for r in cur.fetchall()]
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot read notices: {exc}") from exc


def acknowledge(dsn: str, notice_id: int, by: str) -> dict[str, Any]:
    """``by`` acknowledges its notice ``notice_id``; the row, with the (first) time."""
    try:
        with db.transaction(dsn) as conn, conn.cursor(
                cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute("SELECT agency FROM notifications WHERE notification_id = %s "
                        "FOR UPDATE", (notice_id,))
            row = cur.fetchone()
            if row is None:
                raise NoticeNotFound(f"notice {notice_id} does not exist",
                                     rule="notice.not_found")
            if row["agency"] != by:
                raise NoticeForbidden(f"notice {notice_id} is addressed to {row['agency']}; "
                                      f"{by} cannot acknowledge it (Art. 24)",
                                      rule="notice.not_yours", article="Art. 24")
            cur.execute(f"UPDATE notifications SET acknowledged_at = COALESCE(acknowledged_at, "
                        f"now()) WHERE notification_id = %s RETURNING {_COLUMNS}",
                        (notice_id,))
            return _out(dict(cur.fetchone()))
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot acknowledge notice {notice_id}: {exc}") from exc
