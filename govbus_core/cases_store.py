"""Reconciliation cases in PostgreSQL: listing and resolution by the owner (Art. 8, 20).

Cases are written by the cases sink (:mod:`govbus.consumers.cases_sink`); here they are read and
resolved. Only the source-of-record agency that owns a case may resolve it (Art. 8: it verifies
the datum), and only while it is open; a resolved case is never reopened by the reconciler.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import psycopg2
import psycopg2.extras

from govbus.core import db
from govbus.core.errors import (
    ConflictError,
    DatabaseError,
    ForbiddenError,
    GovbusError,
    NotFoundError,
)

STATUSES = ("open", "closed", "resolved")
RESOLUTIONS = ("corrected", "confirmed", "dismissed")


class CaseError(GovbusError):
    """A case cannot be read or resolved as asked (unknown, not open, not the owner, bad
    input)."""

    rule = "case.invalid"
    article = "Art. 20"


class CaseNotFound(CaseError, NotFoundError):
    """The case named does not exist."""


class CaseForbidden(CaseError, ForbiddenError):
    """The agency may not resolve (or read) the case: another agency owns it (Art. 8, 24)."""


class CaseConflict(CaseError, ConflictError):
    """The case is not open: resolved by its owner, or closed by the reconciler (Art. 20)."""


_COLUMNS = """id, case_key, entity_key, attribute, owner_agency, other_agency, status, values,
              opened_at, deadline, closed_at, resolution, note, resolved_by,
              (status = 'open' AND deadline < now()) AS overdue"""


def _rows(dsn: str, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    try:
        with db.transaction(dsn) as conn, conn.cursor(
                cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(sql, params)
            return [_out(dict(r)) for r in cur.fetchall()]
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot read cases: {exc}") from exc


def _out(row: dict[str, Any]) -> dict[str, Any]:
    for key in ("opened_at", "deadline", "closed_at"):
        if isinstance(row.get(key), dt.datetime):
            row[key] = row[key].isoformat()
    return row


def parties(case: dict[str, Any]) -> tuple[str, ...]:
    """The agencies a case concerns: its owner (the source of record, Art. 8) and the agency
    whose value differs. They, the information center and the municipal office read it."""
    return tuple(a for a in (case["owner_agency"], case.get("other_agency")) if a)


def list_cases(dsn: str, agency: str | None = None, status: str | None = None,
               overdue: bool = False, entity: str | None = None,
               resource: str | None = None, owned: bool = False) -> list[dict[str, Any]]:
    """Cases owned by or involving ``agency`` (``owned``: owned by it only, the cases it must
    resolve); ``overdue``: open past their deadline; ``resource``: a value of it disagrees."""
    if status is not None and status not in STATUSES:
        raise CaseError(f"--status {status!r}: one of {', '.join(STATUSES)}",
                        rule="input.status")
    where, params = ["true"], []
    if agency and owned:
        where.append("owner_agency = %s")
        params.append(agency)
    elif agency:
        where.append("(owner_agency = %s OR other_agency = %s)")
        params += [agency, agency]
    if resource:
        where.append("values @> %s::jsonb")
        params.append(json.dumps([{"resource": resource}]))
    if status:
        where.append("status = %s")
        params.append(status)
    if overdue:
        where.append("status = 'open' AND deadline < now()")
    if entity:
        where.append("entity_key = %s")
        params.append(entity)
    return _rows(dsn, f"SELECT {_COLUMNS} FROM cases WHERE {' AND '.join(where)} "
                      "ORDER BY (status = 'open' AND deadline < now()) DESC, deadline, id",
                 params)


def resolve(dsn: str, case_id: int, by: str, resolution: str, note: str) -> dict[str, Any]:
    """The owner resolves an open case: corrected, confirmed or dismissed, with a note."""
    if resolution not in RESOLUTIONS:
        raise CaseError(f"--resolution {resolution!r}: one of {', '.join(RESOLUTIONS)}",
                        rule="input.resolution")
    if not note or not note.strip():
        raise CaseError("--note is empty: say what was verified (Art. 20)", rule="input.note")
    try:
        with db.transaction(dsn) as conn, conn.cursor(
                cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute("SELECT set_config('govbus.actor', %s, true)", (by,))
            cur.execute("SELECT id, owner_agency, status FROM cases WHERE id = %s FOR UPDATE",
                        (case_id,))
            row = cur.fetchone()
            if row is None:
                raise CaseNotFound(f"case {case_id} does not exist", rule="case.not_found")
            if row["owner_agency"] != by:
                raise CaseForbidden(f"case {case_id} is owned by {row['owner_agency']}, the "
                                    f"source of record (Art. 8); {by} cannot resolve it",
                                    rule="case.not_owner", article="Art. 8")
            if row["status"] != "open":
                raise CaseConflict(f"case {case_id} is {row['status']}, not open",
                                   rule="case.not_open")
            cur.execute("""UPDATE cases SET status = 'resolved', resolution = %s, note = %s,
                               resolved_by = %s, closed_at = now(), updated_at = now()
                           WHERE id = %s""", (resolution, note.strip(), by, case_id))
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot resolve case {case_id}: {exc}") from exc
    return list_cases_by_id(dsn, case_id)


def list_cases_by_id(dsn: str, case_id: int) -> dict[str, Any]:
    rows = _rows(dsn, f"SELECT {_COLUMNS} FROM cases WHERE id = %s", [case_id])
    if not rows:
        raise CaseNotFound(f"case {case_id} does not exist", rule="case.not_found")
    return rows[0]
