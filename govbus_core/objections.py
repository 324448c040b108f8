"""Objections (Art. 19) and complaints (Art. 29), with deadlines and history, in PostgreSQL.

- An **objection**: an agency doubts data it received from a provider. It must have received
  the resource (a grant, in force or not, for it; with ``event_id``, that very delivery in the
  delivery log). The provider answers, or the information center (Art. 19: "the center and the
  provider handle it and answer").
- A **complaint**: anyone complains that an agency broke the rules (Art. 29, 31); the
  municipal office handles and answers it.

Both get a deadline in working days on the official calendar (``GOVBUS_OBJECTION_DEADLINE_DAYS``,
``GOVBUS_COMPLAINT_DEADLINE_DAYS``, default 5 and 10), and every step is appended to
``objection_events``, in the same transaction as the change it records. No record copies are
stored: the resource, the entity key and the event id identify what is disputed.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg2
import psycopg2.extras

from govbus.core import db
from govbus.core.catalogue import Catalogue
from govbus.core.errors import (
    ConflictError,
    DatabaseError,
    ForbiddenError,
    GovbusError,
    NotFoundError,
)
from govbus.core.settings_spec import Deadlines
from govbus.core.workdays import add_working_days

KINDS = ("objection", "complaint")
CENTER, OFFICE = "information_center", "municipal_office"
CHINA = dt.timezone(dt.timedelta(hours=8))


class ObjectionError(GovbusError):
    """An objection or complaint cannot be filed or answered as asked."""

    rule = "objection.invalid"
    article = "Art. 19"


class ObjectionNotFound(ObjectionError, NotFoundError):
    """The objection or complaint named does not exist."""


class ObjectionForbidden(ObjectionError, ForbiddenError):
    """The agency may not answer (or read) it: objections are answered by the provider or
    the information center (Art. 19), complaints by the municipal office (Art. 29)."""


class ObjectionConflict(ObjectionError, ConflictError):
    """It is no longer open: already answered or withdrawn."""


def deadline_days(kind: str) -> int:
    """Working days to answer: ``GOVBUS_COMPLAINT_DEADLINE_DAYS`` for a complaint,
    ``GOVBUS_OBJECTION_DEADLINE_DAYS`` for an objection."""
    deadlines = Deadlines.from_env()
    if kind == "complaint":
        return deadlines.complaint_deadline_days
    return deadlines.objection_deadline_days


def check_filing(catalogue: Catalogue, kind: str, filed_by: str, against: str,
                 resource: str | None, reason: str) -> list[str]:
    """Every problem with a filing, each naming its option and rule (empty: fine)."""
    problems = []
    if kind not in KINDS:
        problems.append(f"--kind {kind!r}: one of {', '.join(KINDS)}")
    if not filed_by.strip():
        problems.append("--as is empty: who files it")
    if against not in catalogue.agencies:
        problems.append(f"--against {against!r} is not an agency of the catalogue "
                        f"({', '.join(catalogue.agencies)})")
    if not reason.strip():
        problems.append("--reason is empty: say what is doubted or what rule was broken")
    if kind == "objection":
        if filed_by == against:
            problems.append("an agency cannot object to its own data: correct it (Art. 19)")
        if not resource:
            problems.append("--resource is required for an objection: the data doubted")
    if resource:
        res = catalogue.resources.get(resource)
        if res is None:
            problems.append(f"--resource {resource!r} is not in the catalogue")
        elif res.provider != against:
            problems.append(f"--resource {resource} is provided by {res.provider}, "
                            f"not {against}")
    return problems


def _received(cur: Any, filed_by: str, resource: str, event_id: str | None) -> bool:
    if event_id:
        cur.execute("SELECT 1 FROM deliveries WHERE event_id = %s AND recipient = %s "
                    "AND resource_id = %s LIMIT 1", (event_id, filed_by, resource))
    else:
        cur.execute("SELECT 1 FROM grants WHERE recipient = %s AND resource_id = %s LIMIT 1",
                    (filed_by, resource))
    return cur.fetchone() is not None


def file(dsn: str, catalogue: Catalogue, kind: str, filed_by: str, against: str,
         resource: str | None, entity_key: str | None, event_id: str | None, reason: str,
         at: dt.datetime | None = None) -> dict[str, Any]:
    """File an objection or a complaint; its row with ``history``."""
    problems = check_filing(catalogue, kind, filed_by, against, resource, reason)
    if problems:
        raise ObjectionError("; ".join(problems))
    at = at or dt.datetime.now(dt.UTC)
    deadline = add_working_days(at.astimezone(CHINA), deadline_days(kind))
    try:
        with db.transaction(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT set_config('govbus.actor', %s, true)", (filed_by,))
            if kind == "objection" and not _received(cur, filed_by, str(resource), event_id):
                what = f"event {event_id} of {resource}" if event_id else resource
                raise ObjectionError(f"{filed_by} has not received {what}: an objection is "
                                     "filed on data the agency received (Art. 19)",
                                     rule="objection.not_received")
            cur.execute("""INSERT INTO objections (kind, filed_by, against_agency, resource,
                               entity_key, reason, filed_at, deadline, status, event_id, handler)
                           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'open', %s, %s)
                           RETURNING id""",
                        (kind, filed_by, against, resource, entity_key, reason.strip(), at,
                         deadline, event_id, CENTER if kind == "objection" else OFFICE))
            new_id = int(cur.fetchone()[0])
            _event(cur, new_id, filed_by, "filed", reason.strip(), at)
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot file the {kind}: {exc}") from exc
    return get(dsn, new_id)


def _event(cur: Any, objection_id: int, actor: str, action: str, detail: str,
           at: dt.datetime) -> None:
    cur.execute("INSERT INTO objection_events (objection_id, at, actor, action, detail) "
                "VALUES (%s, %s, %s, %s, %s)", (objection_id, at, actor, action, detail))


def answerers(row: dict[str, Any]) -> tuple[str, ...]:
    """Who may answer: the provider or the center (objection), the office (complaint)."""
    if row["kind"] == "complaint":
        return (OFFICE,)
    return (row["against_agency"], CENTER)


def answer(dsn: str, objection_id: int, by: str, text: str,
           at: dt.datetime | None = None) -> dict[str, Any]:
    """Answer an open objection or complaint."""
    if not text.strip():
        raise ObjectionError("--answer is empty", rule="input.answer")
    at = at or dt.datetime.now(dt.UTC)
    try:
        with db.transaction(dsn) as conn, conn.cursor(
                cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute("SELECT set_config('govbus.actor', %s, true)", (by,))
            cur.execute("SELECT * FROM objections WHERE id = %s FOR UPDATE", (objection_id,))
            row = cur.fetchone()
            if row is None:
                raise ObjectionNotFound(f"objection {objection_id} does not exist",
                                        rule="objection.not_found")
            article = "Art. 19" if row["kind"] == "objection" else "Art. 29"
            if by not in answerers(row):
                raise ObjectionForbidden(f"{row['kind']} {objection_id} is answered by "
                                         f"{' or '.join(answerers(row))} ({article}); not by "
                                         f"{by}", rule="objection.not_answerer",
                                         article=article)
            if row["status"] != "open":
                raise ObjectionConflict(f"{row['kind']} {objection_id} is already "
                                        f"{row['status']}", rule="objection.not_open",
                                        article=article)
            cur.execute("""UPDATE objections SET status = 'answered', answered_at = %s,
                               answer = %s, answered_by = %s WHERE id = %s""",
                        (at, text.strip(), by, objection_id))
            _event(cur, objection_id, by, "answered", text.strip(), at)
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot answer objection {objection_id}: {exc}") from exc
    return get(dsn, objection_id)


def _iso(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in row.items()}


def list_all(dsn: str, kind: str | None = None, agency: str | None = None,
             status: str | None = None, overdue: bool = False,
             ids: list[int] | None = None) -> list[dict[str, Any]]:
    """Objections and complaints with their history; overdue = open past the deadline."""
    where: list[str] = ["true"]
    params: list[Any] = []
    for column, value in (("kind", kind), ("status", status)):
        if value:
            where.append(f"o.{column} = %s")
            params.append(value)
    if agency:
        where.append("(o.filed_by = %s OR o.against_agency = %s)")
        params += [agency, agency]
    if overdue:
        where.append("o.status = 'open' AND o.deadline < now()")
    if ids is not None:
        where.append("o.id = ANY(%s)")
        params.append(ids)
    sql = f"""SELECT o.*, (o.status = 'open' AND o.deadline < now()) AS overdue,
                     COALESCE((SELECT json_agg(json_build_object('at', e.at, 'actor', e.actor,
                               'action', e.action, 'detail', e.detail) ORDER BY e.id)
                               FROM objection_events e WHERE e.objection_id = o.id), '[]')
                       AS history
              FROM objections o WHERE {' AND '.join(where)}
              ORDER BY (o.status = 'open' AND o.deadline < now()) DESC, o.deadline, o.id"""
    try:
        with db.transaction(dsn) as conn, conn.cursor(
                cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(sql, params)
            return [_iso(dict(r)) for r in cur.fetchall()]
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot read objections: {exc}") from exc


def get(dsn: str, objection_id: int) -> dict[str, Any]:
    rows = list_all(dsn, ids=[objection_id])
    if not rows:
        raise ObjectionNotFound(f"objection {objection_id} does not exist",
                                rule="objection.not_found")
    return rows[0]


def parties(row: dict[str, Any]) -> tuple[str, ...]:
    """Who reads an objection or complaint besides the information center and the office:
    the agency that filed it and the agency it is against."""
    return (row["filed_by"], row["against_agency"])
