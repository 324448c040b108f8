"""Sharing requests, grants and filings in PostgreSQL (the control plane).

Every response to a request — granted, rejected, refused, revoked — is written to ``filings``
in the same transaction as the decision (Art. 18), so no decision exists unfiled.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import psycopg2
import psycopg2.extras

from govbus.core import db
from govbus.core.catalogue import Resource
from govbus.core.commitments import (
    CONFIDENTIALITY,
    RESTRICTIONS,
    SECURITY,
    check_reference,
    check_valid_until,
)
from govbus.core.commitments_store import read_commitment
from govbus.core.deliveries import DEFAULT_FORMAT, FORMATS
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
    provide_deadline,
)

# a grant with the end of what it rests on: the earliest end or withdrawal of its security
# commitment and confidentiality agreement (Art. 24, 25), so that it lapses with them
_GRANT_SQL = """SELECT g.grant_id, g.recipient, g.resource_id, g.fields, g.masked_fields,
           g.valid_from, g.valid_until, g.revoked_at, g.commitment_no, g.confidentiality_no,
           g.restrictions, g.provide_by,
           LEAST(sc.valid_until, sc.withdrawn_at, ca.valid_until, ca.withdrawn_at),
           g.delivery_format
    FROM grants g
    LEFT JOIN commitments sc ON sc.number = g.commitment_no
    LEFT JOIN commitments ca ON ca.number = g.confidentiality_no"""


def _grant(row: tuple[Any, ...]) -> Grant:
    return Grant(row[0], row[1], row[2], tuple(row[3]), tuple(row[4]), row[5], row[6], row[7],
                 row[8], row[9], tuple(row[10]) if row[10] else RESTRICTIONS, row[11], row[12],
                 row[13] or DEFAULT_FORMAT)


def load_grants(dsn: str, resource_id: str | None = None, recipient: str | None = None
                ) -> list[Grant]:
    """Every grant (revoked and lapsed ones too: ``Grant.in_force`` decides at a given time,
    by its effective end: its own, or its commitment's or agreement's if earlier)."""
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
        where.append("g.resource_id = %s")
        params.append(resource_id)
    if recipient:
        where.append("g.recipient = %s")
        params.append(recipient)
    cur.execute(f"{_GRANT_SQL} WHERE {' AND '.join(where)} ORDER BY g.grant_id", params)
    return [_grant(r) for r in cur.fetchall()]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _file(cur: Any, request: dict[str, Any], provider: str, decision: str, reason: str | None,
          by: str, at: dt.datetime) -> None:
    """Art. 18: file the response with the municipal office, in the deciding transaction."""
    cur.execute("""INSERT INTO filings (request_id, requester, provider, resource_id, purpose,
                       fields, requested_at, decision, reason, decided_by, decided_at,
                       commitment_no, confidentiality_no)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                (request["request_id"], request["requester"], provider, request["resource_id"],
                 request["purpose"], list(request["fields"]), request["requested_at"], decision,
                 reason, by, at, request["commitment_ref"], request["confidentiality_ref"]))


def _notify(cur: Any, agency: str, kind: str, body: dict[str, Any]) -> None:
    cur.execute("INSERT INTO notifications (agency, kind, body) VALUES (%s, %s, %s)",
                (agency, kind, psycopg2.extras.Json(body, dumps=_dumps)))


def _dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, default=str, ensure_ascii=False)


def _insert_grant(cur: Any, request: dict[str, Any], masked: list[str],
                  valid_until: dt.datetime | None, at: dt.datetime, at_once: bool) -> int:
    """The grant of ``request``, resting on its commitment and agreement (as registered to
    the requester; a reference no registered document answers is left NULL), with the
    restrictions of Art. 24 and the date its data must be provided by (Art. 31)."""
    cur.execute("""INSERT INTO grants (request_id, recipient, resource_id, fields, masked_fields,
                       valid_until, commitment_no, confidentiality_no, restrictions,
                       provide_by, delivery_format)
                   VALUES (%s, %s, %s, %s, %s, %s,
                           (SELECT number FROM commitments WHERE number = %s AND agency = %s),
                           (SELECT number FROM commitments WHERE number = %s AND agency = %s),
                           %s, %s, %s) RETURNING grant_id""",
                (request["request_id"], request["requester"], request["resource_id"],
                 list(request["fields"]), masked, valid_until, request["commitment_ref"],
                 request["requester"], request["confidentiality_ref"], request["requester"],
                 list(RESTRICTIONS), provide_deadline(at, at_once),
                 request.get("delivery_format")))
    return int(cur.fetchone()["grant_id"])


def _check_references(cur: Any, requester: str, resource_id: str, commitment_ref: str | None,
                      confidentiality_ref: str | None, at: dt.datetime) -> None:
    """Art. 24, 25: the commitment (and the agreement, if named) registered, the
    requester's, in force and covering the resource; CommitmentError otherwise."""
    number = (commitment_ref or "").strip()
    check_reference(read_commitment(cur, number, hold=True), number, SECURITY, requester,
                    resource_id, at)
    if confidentiality_ref is not None:
        number = confidentiality_ref.strip()
        check_reference(read_commitment(cur, number, hold=True), number, CONFIDENTIALITY,
                        requester, resource_id, at)


def _still_valid(cur: Any, request: dict[str, Any], at: dt.datetime) -> None:
    """At approval: the registered commitment and agreement the request names still hold
    (CommitmentError otherwise: the provider rejects it with a reason instead). A reference
    no registered document answers is not checked: its grant rests on no document."""
    for ref, kind in ((request["commitment_ref"], SECURITY),
                      (request["confidentiality_ref"], CONFIDENTIALITY)):
        found = read_commitment(cur, ref, hold=True)
        if found is not None:
            check_reference(found, str(ref), kind, request["requester"],
                            request["resource_id"], at)


def file_request(dsn: str, resource: Resource, requester: str, purpose: str,
                 fields: list[str] | None, commitment_ref: str | None,
                 confidentiality_ref: str | None = None,
                 valid_until: dt.datetime | None = None,
                 delivery_format: str = DEFAULT_FORMAT) -> dict[str, Any]:
    """File a request; unconditional ones are granted and not-shared ones refused at once.
    ``delivery_format`` is how its grant's deliveries are written (:mod:`govbus.core.deliveries`:
    framed Avro, or the same envelope as JSON).

    A request whose commitment or agreement the rules refuse (:func:`_check_references`), or
    whose ``valid_until`` is past, is not filed: it is refused as an incomplete application
    (CommitmentError, 422 from the service, with its rule and article), nothing is decided."""
    if not purpose.strip():
        raise SharingError("a request states its purpose (--purpose, Art. 24: use is limited "
                           "to the requester's duties)")
    if delivery_format not in FORMATS:
        raise SharingError(f"delivery format {delivery_format!r} is not one of "
                           f"{', '.join(FORMATS)}", rule="request.delivery_format",
                           article="Art. 7")
    decision = decide_request(resource, requester, fields, commitment_ref, confidentiality_ref)
    at = now()
    check_valid_until(valid_until, at)
    commitment_ref = (commitment_ref or "").strip()
    confidentiality_ref = (confidentiality_ref or "").strip() or None
    with db.transaction(dsn) as conn, conn.cursor(
            cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("SELECT set_config('govbus.actor', %s, true)", (requester,))
        _check_references(cur, requester, resource.id, commitment_ref, confidentiality_ref, at)
        cur.execute("""INSERT INTO sharing_requests (requester, resource_id, purpose, fields,
                           commitment_ref, confidentiality_ref, masked_fields, share_class,
                           status, requested_at, due_at, reason, decided_at, decided_by,
                           delivery_format)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                       RETURNING *""",
                    (requester, resource.id, purpose, list(decision.fields), commitment_ref,
                     confidentiality_ref, list(decision.masked_fields), resource.share_class,
                     decision.status, at, due_at(at), decision.reason,
                     None if decision.status == "pending" else at,
                     None if decision.status == "pending" else PLATFORM,
                     None if delivery_format == DEFAULT_FORMAT else delivery_format))
        request = dict(cur.fetchone())
        grant_id = None
        if decision.status == "granted":
            grant_id = _insert_grant(cur, request, list(decision.masked_fields), valid_until,
                                     at, at_once=True)
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
    if approve:
        check_valid_until(valid_until, at)
    with db.transaction(dsn) as conn, conn.cursor(
            cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("SELECT set_config('govbus.actor', %s, true)", (by,))
        request = _pending(cur, request_id)
        if by != request["provider"]:
            raise SharingForbidden(f"only the provider {request['provider']} decides request "
                                   f"{request_id}, not {by} (Art. 18)", rule="request.not_provider")
        if approve:  # a grant is made only on a commitment and agreement in force (Art. 24, 25)
            _still_valid(cur, request, at)
        status = "granted" if approve else "rejected"
        masked = list(request["masked_fields"])
        cur.execute("UPDATE sharing_requests SET status = %s, decided_at = %s, decided_by = %s, "
                    "reason = %s WHERE request_id = %s", (status, at, by, reason, request_id))
        grant_id = _insert_grant(cur, request, masked, valid_until, at, at_once=False) \
            if approve else None
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
        cur.execute("SELECT g.*, c.provider, r.purpose, r.requester, r.requested_at, "
                    "r.commitment_ref, r.confidentiality_ref "
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


def amend_grant(cur: Any, grant_id: int, fields: list[str], masked_fields: list[str], by: str,
                reason: str, notice: dict[str, Any]) -> None:
    """On the caller's (dict) cursor, in an approving catalogue transaction: narrow a grant to
    ``fields`` (``masked_fields``) because its resource's contract drops the others (Art. 13,
    24), file the amendment (Art. 18) and tell the grantee (``notice`` added to the body)."""
    at = now()
    cur.execute("SELECT g.*, c.provider, r.purpose, r.requester, r.requested_at, "
                "r.commitment_ref, r.confidentiality_ref "
                "FROM grants g JOIN catalogue_resources c USING (resource_id) "
                "JOIN sharing_requests r USING (request_id) WHERE grant_id = %s FOR UPDATE",
                (grant_id,))
    grant = dict(cur.fetchone())
    cur.execute("UPDATE grants SET fields = %s, masked_fields = %s, changed_at = %s "
                "WHERE grant_id = %s", (fields, masked_fields, at, grant_id))
    _file(cur, grant | {"fields": fields}, grant["provider"], "amended", reason, by, at)
    _notify(cur, grant["recipient"], "grant_amended",
            {"grant_id": grant_id, "fields": fields, "masked_fields": masked_fields,
             "reason": reason} | notice)


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
    """Grants with their state as of now (in force, revoked, lapsed with their commitment or
    agreement, expired) and their provision (Art. 31): ``provide_by``, ``provided_at`` (the
    first delivery or backfill logged for the recipient and resource since the grant began),
    ``provision`` (``met``, ``late``, ``due``, ``overdue``, or ``ended`` for a grant that
    ended before its date with nothing provided) and ``overdue``."""
    at = now()
    grants = load_grants(dsn, resource_id=resource_id)
    chosen = []
    for g in grants:
        if agency and g.recipient != agency and not g.resource_id.startswith(f"{agency}."):
            continue
        state = g.state(at)
        if active and state != "in_force":
            continue
        chosen.append((g, state))
    provided = _first_provided(dsn, [g for g, _ in chosen])
    out = []
    for g, state in chosen:
        first = provided.get(g.grant_id)
        status = provision(g, first, at)
        out.append(g.as_dict() | {"state": state,
                                  "provided_at": first.isoformat() if first else None,
                                  "provision": status, "overdue": status == "overdue"})
    return out


def provision(grant: Grant, provided_at: dt.datetime | None, at: dt.datetime) -> str | None:
    """Whether ``grant``'s data was provided by its date (Art. 31): ``met``, ``late``,
    ``due`` (not yet, the date not reached), ``overdue``, ``ended`` (the grant ended before
    its date with nothing provided); None for a grant without a date."""
    if grant.provide_by is None:
        return None
    if provided_at is not None:
        return "met" if provided_at <= grant.provide_by else "late"
    ended = [t for t in (grant.revoked_at, grant.ends_at) if t is not None]
    if ended and min(ended) <= min(at, grant.provide_by):
        return "ended"
    return "overdue" if at > grant.provide_by else "due"


#: a grant's first provision, once found (it never changes), and the last time a grant
#: without one was looked for, per database: the look-up reads the recipient's log rows, and
#: subscribers list their grants every few seconds
_PROVIDED: dict[tuple[str, int], dt.datetime | None] = {}
_LOOKED: dict[tuple[str, int], float] = {}
PROVISION_RECHECK_S = 30.0  # a grant not provided yet is looked up again after this


def _first_provided(dsn: str, grants: list[Grant]) -> dict[int, dt.datetime]:
    """The first delivery or backfill logged for each grant's recipient and resource since
    the grant began. Found once, it is kept; a grant without one is looked up again after
    :data:`PROVISION_RECHECK_S`, and no more once it has ended (nothing is provided under
    an ended grant)."""
    clock, at = time.monotonic(), now()
    found: dict[int, dt.datetime] = {}
    wanted = []
    for g in grants:
        key = (dsn, g.grant_id)
        if g.provide_by is None:
            continue
        if key in _PROVIDED:
            first = _PROVIDED[key]
            if first is not None:
                found[g.grant_id] = first
        elif clock - _LOOKED.get(key, -PROVISION_RECHECK_S) >= PROVISION_RECHECK_S:
            wanted.append(g)
    if not wanted:
        return found
    rows = _rows(dsn, """SELECT x.grant_id, (SELECT min(d.delivered_at) FROM deliveries d
                                 WHERE d.recipient = x.recipient AND d.resource_id = x.resource
                                   AND d.channel IN ('exchange', 'backfill')
                                   AND d.delivered_at >= x.since) AS first
                         FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::timestamptz[])
                              AS x(grant_id, recipient, resource, since)""",
                 [[g.grant_id for g in wanted], [g.recipient for g in wanted],
                  [g.resource_id for g in wanted], [g.valid_from for g in wanted]])
    firsts = {int(r["grant_id"]): r["first"] for r in rows}
    for g in wanted:
        key, first = (dsn, g.grant_id), firsts.get(g.grant_id)
        ended = min([t for t in (g.revoked_at, g.ends_at) if t is not None], default=None)
        if first is not None:
            _PROVIDED[key] = found[g.grant_id] = first
        elif ended is not None and ended < at - dt.timedelta(minutes=5):
            _PROVIDED[key] = None  # ended long enough ago for its last rows to be logged
        else:
            _LOOKED[key] = clock
    return found


def list_filings(dsn: str, year: int | None = None) -> list[dict[str, Any]]:
    """Art. 18 filings, oldest first: what the municipal office receives."""
    where, params = "true", []
    if year:
        where = "extract(year FROM decided_at) = %s"
        params = [year]
    rows = _rows(dsn, f"""SELECT filing_id, request_id, requester, provider, resource_id,
                             purpose, fields, requested_at, decision, reason, decided_by,
                             decided_at, filed_at, commitment_no, confidentiality_no
                          FROM filings WHERE {where}
                          ORDER BY filing_id""", params)
    return rows
