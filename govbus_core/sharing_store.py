"""Sharing requests, grants and filings in PostgreSQL (the control plane).

Every response to a request — granted, rejected, refused, revoked — is written to ``filings``
in the same transaction as the decision (Art. 18), so no decision exists unfiled.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg2
import psycopg2.extras

from govbus.core import db
from govbus.core.catalogue import Resource
from govbus.core.errors import DatabaseError
from govbus.core.sharing import (
    PLATFORM,
    Grant,
    SharingConflict,
    SharingError,
    SharingForbidden,
    SharingNotFound,
    decide_request,
    due_at,
)

_GRANT_COLS = ("grant_id, recipient, resource_id, fields, masked_fields, valid_from, "
               "valid_until, revoked_at")


def _grant(row: tuple[Any, ...]) -> Grant:
    return Grant(row[0], row[1], row[2], tuple(row[3]), tuple(row[4]), row[5], row[6], row[7])


def load_grants(dsn: str, resource_id: str | None = None, recipient: str | None = None
                ) -> list[Grant]:
    """Every grant (revoked ones too: ``Grant.in_force`` decides at a given time)."""
    try:
        with db.transaction(dsn) as conn, conn.cursor() as cur:
            return read_grants(cur, resource_id, recipient)
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot read grants: {exc}") from exc


def read_grants(cur: Any, resource_id: str | None = None, recipient: str | None = None
                ) -> list[Grant]:
    """:func:`load_grants` on the caller's cursor (a stage that reloads them every second
    keeps its connection)."""
    where, params = ["true"], []
    if resource_id:
        where.append("resource_id = %s")
        params.append(resource_id)
    if recipient:
        where.append("recipient = %s")
        params.append(recipient)
    cur.execute(f"SELECT {_GRANT_COLS} FROM grants WHERE {' AND '.join(where)} "
                "ORDER BY grant_id", params)
    return [_grant(r) for r in cur.fetchall()]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _file(cur: Any, request: dict[str, Any], provider: str, decision: str, reason: str | None,
          by: str, at: dt.datetime) -> None:
    """Art. 18: file the response with the municipal office, in the deciding transaction."""
    cur.execute("""INSERT INTO filings (request_id, requester, provider, resource_id, purpose,
                       fields, requested_at, decision, reason, decided_by, decided_at)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                (request["request_id"], request["requester"], provider, request["resource_id"],
                 request["purpose"], list(request["fields"]), request["requested_at"], decision,
                 reason, by, at))


def _notify(cur: Any, agency: str, kind: str, body: dict[str, Any]) -> None:
    cur.execute("INSERT INTO notifications (agency, kind, body) VALUES (%s, %s, %s)",
                (agency, kind, psycopg2.extras.Json(body, dumps=_dumps)))


def _dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, default=str, ensure_ascii=False)


def _insert_grant(cur: Any, request: dict[str, Any], masked: list[str],
                  valid_until: dt.datetime | None) -> int:
    cur.execute("""INSERT INTO grants (request_id, recipient, resource_id, fields, masked_fields,
                       valid_until) VALUES (%s, %s, %s, %s, %s, %s) RETURNING grant_id""",
                (request["request_id"], request["requester"], request["resource_id"],
                 list(request["fields"]), masked, valid_until))
    return int(cur.fetchone()["grant_id"])


def file_request(dsn: str, resource: Resource, requester: str, purpose: str,
                 fields: list[str] | None, commitment_ref: str | None,
                 confidentiality_ref: str | None = None,
                 valid_until: dt.datetime | None = None) -> dict[str, Any]:
    """File a request; unconditional ones are granted and not-shared ones refused at once."""
    if not purpose.strip():
        raise SharingError("a request states its purpose (--purpose, Art. 24: use is limited "
                           "to the requester's duties)")
    decision = decide_request(resource, requester, fields, commitment_ref, confidentiality_ref)
    at = now()
    with db.transaction(dsn) as conn, conn.cursor(
            cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("SELECT set_config('govbus.actor', %s, true)", (requester,))
        cur.execute("""INSERT INTO sharing_requests (requester, resource_id, purpose, fields,
                           commitment_ref, confidentiality_ref, masked_fields, share_class,
                           status, requested_at, due_at, reason, decided_at, decided_by)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                       RETURNING *""",
                    (requester, resource.id, purpose, list(decision.fields), commitment_ref,
                     confidentiality_ref, list(decision.masked_fields), resource.share_class,
                     decision.status, at, due_at(at), decision.reason,
                     None if decision.status == "pending" else at,
                     None if decision.status == "pending" else PLATFORM))
        request = dict(cur.fetchone())
        grant_id = None
        if decision.status == "granted":
            grant_id = _insert_grant(cur, request, list(decision.masked_fields), valid_until)
        if decision.status != "pending":
            _file(cur, request, str(resource.provider), decision.status, decision.reason,
                  PLATFORM, at)
        _notify(cur, str(resource.provider), f"request_{decision.status}",
                {"request_id": request["request_id"], "requester": requester,
                 "resource": resource.id, "purpose": purpose})
    return _request_out(request) | {"grant_id": grant_id,
                                    "masked_fields": list(decision.masked_fields)}


def _request_out(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in row.items()}
    out["fields"] = list(row["fields"])
    return out


def _pending(cur: Any, request_id: int) -> dict[str, Any]:
    cur.execute("SELECT r.*, c.provider FROM sharing_requests r JOIN "
                "catalogue_resources c USING (resource_id) WHERE request_id = %s FOR UPDATE",
                (request_id,))
    row = cur.fetchone()
    if row is None:
        raise SharingNotFound(f"no sharing request {request_id}", rule="request.not_found")
    if row["status"] != "pending":
        raise SharingConflict(f"request {request_id} is already {row['status']} "
                              f"(by {row['decided_by']} at {row['decided_at']:%Y-%m-%d %H:%M})")
    return dict(row)


def decide(dsn: str, request_id: int, by: str, approve: bool, reason: str | None,
           valid_until: dt.datetime | None = None) -> dict[str, Any]:
    """The provider approves or rejects a pending request; both are filed (Art. 18)."""
    if not approve and not (reason or "").strip():
        raise SharingError("a rejection explains itself to the applicant (--reason, Art. 18)")
    at = now()
    with db.transaction(dsn) as conn, conn.cursor(
            cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("SELECT set_config('govbus.actor', %s, true)", (by,))
        request = _pending(cur, request_id)
        if by != request["provider"]:
            raise SharingForbidden(f"only the provider {request['provider']} decides request "
                                   f"{request_id}, not {by} (Art. 18)", rule="request.not_provider")
        status = "granted" if approve else "rejected"
        masked = list(request["masked_fields"])
        cur.execute("UPDATE sharing_requests SET status = %s, decided_at = %s, decided_by = %s, "
                    "reason = %s WHERE request_id = %s", (status, at, by, reason, request_id))
        grant_id = _insert_grant(cur, request, masked, valid_until) if approve else None
        _file(cur, request, request["provider"], status, reason, by, at)
        _notify(cur, request["requester"], f"request_{status}",
                {"request_id": request_id, "reason": reason, "grant_id": grant_id})
    return {"request_id": request_id, "status": status, "grant_id": grant_id, "reason": reason,
            "decided_by": by, "decided_at": at.isoformat(), "masked_fields": masked}


def revoke(dsn: str, grant_id: int, by: str, reason: str) -> dict[str, Any]:
    """End a grant now; the hot path stops delivering within its refresh interval."""
    if not reason.strip():
        raise SharingError("a revocation states its reason (--reason)")
    at = now()
    with db.transaction(dsn) as conn, conn.cursor(
            cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("SELECT set_config('govbus.actor', %s, true)", (by,))
        cur.execute("SELECT g.*, c.provider, r.purpose, r.requester, r.requested_at "
                    "FROM grants g JOIN catalogue_resources c USING (resource_id) "
                    "JOIN sharing_requests r USING (request_id) WHERE grant_id = %s FOR UPDATE",
                    (grant_id,))
        grant = cur.fetchone()
        if grant is None:
            raise SharingNotFound(f"no grant {grant_id}", rule="grant.not_found")
        if grant["revoked_at"] is not None:
            raise SharingConflict(f"grant {grant_id} was already revoked at "
                                  f"{grant['revoked_at']:%Y-%m-%d %H:%M} by {grant['revoked_by']}")
        if by not in (grant["provider"], PLATFORM):
            raise SharingForbidden(f"only the provider {grant['provider']} or the {PLATFORM} "
                                   f"revokes grant {grant_id}, not {by}", rule="grant.not_provider")
        cur.execute("UPDATE grants SET revoked_at = %s, revoked_by = %s, revoke_reason = %s, "
                    "changed_at = %s WHERE grant_id = %s", (at, by, reason, at, grant_id))
        _file(cur, dict(grant), grant["provider"], "revoked", reason, by, at)
        _notify(cur, grant["recipient"], "grant_revoked", {"grant_id": grant_id,
                                                           "reason": reason})
    return {"grant_id": grant_id, "revoked_at": at.isoformat(), "revoked_by": by,
            "reason": reason}


def _rows(dsn: str, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    try:
        with db.transaction(dsn) as conn, conn.cursor(
                cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(sql, params)
            return [_request_out(dict(r)) if "fields" in r else dict(r) for r in cur.fetchall()]
    except psycopg2.Error as exc:
        raise DatabaseError(f"control-plane query failed: {exc}") from exc


def list_requests(dsn: str, agency: str | None = None, status: str | None = None,
                  overdue: bool = False) -> list[dict[str, Any]]:
    """Requests, each with ``overdue`` (pending past its working-day deadline, Art. 31)."""
    where, params = ["true"], []
    if agency:
        where.append("(r.requester = %s OR c.provider = %s)")
        params += [agency, agency]
    if status:
        where.append("r.status = %s")
        params.append(status)
    if overdue:
        where.append("r.status = 'pending' AND r.due_at < now()")
    return _rows(dsn, f"""SELECT r.request_id, r.requester, c.provider, r.resource_id, r.purpose,
                              r.fields, r.masked_fields, r.commitment_ref,
                              r.confidentiality_ref, r.status, r.requested_at, r.due_at,
                              r.decided_at, r.decided_by, r.reason,
                              (r.status = 'pending' AND r.due_at < now()) AS overdue
                          FROM sharing_requests r JOIN catalogue_resources c USING (resource_id)
                          WHERE {' AND '.join(where)} ORDER BY r.request_id""", params)


def list_grants(dsn: str, agency: str | None = None, resource_id: str | None = None,
                active: bool = False) -> list[dict[str, Any]]:
    """Grants with their state (in force, expired, revoked) as of now."""
    at = now()
    grants = load_grants(dsn, resource_id=resource_id)
    out = []
    for g in grants:
        if agency and g.recipient != agency and not g.resource_id.startswith(f"{agency}."):
            continue
        state = "in_force" if g.in_force(at) else ("revoked" if g.revoked_at else "expired")
        if active and state != "in_force":
            continue
        out.append(g.as_dict() | {"state": state})
    return out


def list_filings(dsn: str, year: int | None = None) -> list[dict[str, Any]]:
    """Art. 18 filings, oldest first: what the municipal office receives."""
    where, params = "true", []
    if year:
        where = "extract(year FROM decided_at) = %s"
        params = [year]
    rows = _rows(dsn, f"""SELECT filing_id, request_id, requester, provider, resource_id,
                             purpose, fields, requested_at, decision, reason, decided_by,
                             decided_at, filed_at FROM filings WHERE {where}
                          ORDER BY filing_id""", params)
    return rows
