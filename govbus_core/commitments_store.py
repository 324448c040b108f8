"""Security commitments and confidentiality agreements in PostgreSQL (Art. 24, 25; migration
0018, audited). Registering and withdrawing name their actor for the audit ledger; a
withdrawal ends, within the hot path's refresh interval, every grant resting on it (the grant's
effective end is computed where grants are loaded, :func:`govbus.core.sharing_store.read_grants`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extras

from govbus.core import db
from govbus.core.access import INFORMATION_CENTER
from govbus.core.commitments import (
    RESTRICTIONS,
    Commitment,
    CommitmentError,
    CommitmentNotFound,
    check_new,
)
from govbus.core.errors import ConflictError, DatabaseError, ForbiddenError

_COLS = ("number, kind, agency, resources, purpose, signed_on, valid_until, document_sha256, "
         "restrictions, withdrawn_at")


def _commitment(row: Sequence[Any]) -> Commitment:
    return Commitment(row[0], row[1], row[2], tuple(row[3]), row[4], row[5], row[6], row[7],
                      tuple(row[8]), row[9])


def read_commitment(cur: Any, number: str | None, hold: bool = False) -> Commitment | None:
    """The commitment registered as ``number`` on the caller's cursor, or None; ``hold``:
    locked against a withdrawal until the caller's transaction ends (a grant made on it)."""
    if not number:
        return None
    cur.execute(f"SELECT {_COLS} FROM commitments WHERE number = %s"
                + (" FOR SHARE" if hold else ""), (number,))
    row = cur.fetchone()
    if row is None:
        return None
    values = list(row.values()) if isinstance(row, dict) else list(row)
    return _commitment(values)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _out(row: dict[str, Any], at: dt.datetime) -> dict[str, Any]:
    c = _commitment([row[k] for k in _COLS.split(", ")])
    out: dict[str, Any] = {}
    for k, v in row.items():
        out[k] = v.isoformat() if isinstance(v, dt.datetime | dt.date) else v
    out["resources"], out["restrictions"] = list(c.resources), list(c.restrictions)
    out["state"] = c.state(at)
    out["ends_at"] = c.ends_at.isoformat()
    return out


def register(dsn: str, number: str, kind: str, agency: str, resources: Sequence[str],
             purpose: str, signed_on: dt.date, valid_until: dt.datetime, document_sha256: str,
             by: str, known: Iterable[str] | None = None) -> dict[str, Any]:
    """Register a signed commitment or agreement of ``agency`` (registered by ``by``: the
    agency itself, or the information center for it)."""
    if by not in (agency, INFORMATION_CENTER):
        raise ForbiddenError(f"{by} cannot register a commitment of {agency} (Art. 24: an "
                             "agency signs its own)", rule="access.other_agency")
    at = _now()
    scope = check_new(number, kind, agency, resources, purpose, signed_on, valid_until, at,
                      known)
    try:
        with db.transaction(dsn) as conn, conn.cursor(
                cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute("SELECT set_config('govbus.actor', %s, true)", (by,))
            cur.execute("""INSERT INTO commitments (number, kind, agency, resources, purpose,
                               restrictions, signed_on, valid_until, document_sha256,
                               registered_by, registered_at)
                           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING *""",
                        (number, kind, agency, list(scope), purpose.strip(),
                         list(RESTRICTIONS), signed_on, valid_until, document_sha256, by, at))
            row = dict(cur.fetchone())
    except psycopg2.errors.UniqueViolation as exc:
        raise ConflictError(f"commitment {number} is already registered",
                            rule="commitment.exists", article="Art. 24") from exc
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot register commitment {number}: {exc}") from exc
    return _out(row, at)


def _rows(dsn: str, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
    try:
        with db.transaction(dsn) as conn, conn.cursor(
                cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(sql, params)
            return [dict(r) for r in cur.fetchall()]
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot read commitments: {exc}") from exc


def list_commitments(dsn: str, agency: str | None = None) -> list[dict[str, Any]]:
    """Commitments (of ``agency``; every agency's for None), each with its state now."""
    at = _now()
    where, params = ("agency = %s", [agency]) if agency else ("true", [])
    return [_out(r, at) for r in _rows(dsn, f"SELECT * FROM commitments WHERE {where} "
                                       "ORDER BY agency, number", params)]


def get(dsn: str, number: str) -> dict[str, Any]:
    """One commitment with its state and the grants resting on it."""
    rows = _rows(dsn, "SELECT * FROM commitments WHERE number = %s", [number])
    if not rows:
        raise CommitmentNotFound(f"no commitment {number} is registered",
                                 rule="commitment.not_found")
    grants = _rows(dsn, "SELECT grant_id FROM grants WHERE commitment_no = %s OR "
                   "confidentiality_no = %s ORDER BY grant_id", [number, number])
    return _out(rows[0], _now()) | {"grants": [g["grant_id"] for g in grants]}


def withdraw(dsn: str, number: str, by: str, reason: str) -> dict[str, Any]:
    """Withdraw a commitment early (its agency or the information center): every grant
    resting on it lapses now; their recipients and providers are notified."""
    if not reason.strip():
        raise CommitmentError("a withdrawal states its reason (--reason)",
                              rule="commitment.reason")
    at = _now()
    with db.transaction(dsn) as conn, conn.cursor(
            cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("SELECT set_config('govbus.actor', %s, true)", (by,))
        cur.execute("SELECT * FROM commitments WHERE number = %s FOR UPDATE", (number,))
        row = cur.fetchone()
        if row is None:
            raise CommitmentNotFound(f"no commitment {number} is registered",
                                     rule="commitment.not_found")
        if by not in (row["agency"], INFORMATION_CENTER):
            raise ForbiddenError(f"commitment {number} is {row['agency']}'s; only it or the "
                                 f"{INFORMATION_CENTER} withdraws it, not {by}",
                                 rule="commitment.not_yours")
        if row["withdrawn_at"] is not None:
            raise ConflictError(f"commitment {number} was already withdrawn at "
                                f"{row['withdrawn_at']:%Y-%m-%d %H:%M} by {row['withdrawn_by']}",
                                rule="commitment.withdrawn", article="Art. 24")
        cur.execute("UPDATE commitments SET withdrawn_at = %s, withdrawn_by = %s, "
                    "withdraw_reason = %s WHERE number = %s RETURNING *",
                    (at, by, reason, number))
        row = dict(cur.fetchone())
        cur.execute("""SELECT g.grant_id, g.recipient, c.provider FROM grants g
                       JOIN catalogue_resources c USING (resource_id)
                       WHERE (g.commitment_no = %s OR g.confidentiality_no = %s)
                         AND g.revoked_at IS NULL AND (g.valid_until IS NULL OR g.valid_until > %s)
                       ORDER BY g.grant_id""", (number, number, at))
        ended = [dict(g) for g in cur.fetchall()]
        for g in ended:
            body = psycopg2.extras.Json({"grant_id": g["grant_id"], "commitment": number,
                                         "reason": reason})
            for agency in dict.fromkeys((g["recipient"], g["provider"])):
                cur.execute("INSERT INTO notifications (agency, kind, body) VALUES (%s, %s, "
                            "%s)", (agency, "grant_lapsed", body))
    return _out(row, at) | {"grants_ended": [g["grant_id"] for g in ended]}


def ensure(dsn: str, number: str, kind: str, agency: str, resources: Sequence[str],
           purpose: str, days: int = 365) -> str:
    """Register ``number`` for ``agency`` unless it is registered (the demo's and the
    benchmark's sample commitments, signed today and valid ``days``); its number."""
    rows = _rows(dsn, "SELECT agency FROM commitments WHERE number = %s", [number])
    if rows:
        if rows[0]["agency"] != agency:
            raise ConflictError(f"commitment {number} is {rows[0]['agency']}'s, not {agency}'s",
                                rule="commitment.exists", article="Art. 24")
        return number
    at = _now()
    digest = hashlib.sha256(f"{kind} {number} signed by {agency}".encode()).hexdigest()
    register(dsn, number, kind, agency, resources, purpose, at.date(),
             at + dt.timedelta(days=days), digest, agency)
    return number


def sample_commitments(dsn: str, requests: Iterable[Sequence[Any]], purpose: str
                       ) -> dict[str, str]:
    """For sample requests ``(requester, resource_id, fields, agreement, …)``: each
    requester's security commitment ``SC-<year>-<requester>`` covering every resource it asks
    for, and each named agreement covering the resources asked under it, registered unless
    they are (:func:`ensure`); the commitment number per requester."""
    year = _now().year
    scope: dict[str, list[str]] = {}
    agreements: dict[tuple[str, str], list[str]] = {}
    for requester, resource_id, _fields, agreement, *_ in requests:
        scope.setdefault(requester, []).append(resource_id)
        if agreement:
            agreements.setdefault((agreement, requester), []).append(resource_id)
    signed = {who: ensure(dsn, f"SC-{year}-{who}", "security", who, resources, purpose)
              for who, resources in scope.items()}
    for (number, who), resources in agreements.items():
        ensure(dsn, number, "confidentiality", who, resources, purpose)
    return signed
