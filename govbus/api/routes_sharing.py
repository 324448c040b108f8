"""Sharing requests, decisions, grants, the online query, backfills and the agency's own
deliveries and receipts (Art. 15, 17, 18, 24, 25)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field

from govbus.api.auth import Caller, caller
from govbus.api.deps import Body, dsn, resource, settings, until

router = APIRouter(prefix="/v1", tags=["sharing"])

Status = Literal["pending", "granted", "rejected", "refused"]
AgencyName = Field(default=None, pattern=r"^[a-z0-9_]{1,64}$",
                   description="the agency acting; default and only value: the caller's")


class RequestIn(Body):
    resource: str = Field(description="agency.resource", max_length=200)
    purpose: str = Field(max_length=2000, description="the duty the data serves (Art. 24)")
    fields: list[str] | None = Field(default=None, max_length=500,
                                     description="default: every field")
    commitment: str = Field(max_length=200, description="the number of the requester's "
                            "registered security commitment (POST /v1/commitments), in force "
                            "and covering the resource; otherwise 422 commitment.* (Art. 24)")
    confidentiality: str | None = Field(default=None, max_length=200, description="the "
                                        "number of a registered confidentiality agreement of "
                                        "the requester covering the resource, for sensitive "
                                        "fields (Art. 25); without it they are masked")
    valid_until: dt.date | None = Field(default=None, description="the grant ends after "
                                        "this day (not past: 422 request.valid_until_past); "
                                        "it ends earlier with its commitment or agreement")
    delivery_format: Literal["avro", "json"] = Field(
        default="avro", description="how the grant's deliveries are written: framed Avro "
        "under the projection's registered schema, or the same envelope as JSON")
    agency: str | None = AgencyName


class ApproveIn(Body):
    reason: str | None = Field(default=None, max_length=2000)
    valid_until: dt.date | None = None
    agency: str | None = AgencyName


class ReasonIn(Body):
    reason: str = Field(min_length=1, max_length=2000)
    agency: str | None = AgencyName


class QueryIn(Body):
    resource: str = Field(max_length=200, description="agency.resource")
    key: str = Field(min_length=1, max_length=200, description="the entity's key (resident "
                     "id, unified social credit code)")
    agency: str | None = AgencyName


class BackfillIn(Body):
    resource: str = Field(max_length=200)
    agency: str | None = AgencyName


class Receipt(Body):
    event_id: str = Field(min_length=1, max_length=200)
    channel: Literal["exchange", "query", "backfill"] = "exchange"
    content_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class ReceiptsIn(Body):
    receipts: list[Receipt] = Field(max_length=10_000)
    agency: str | None = AgencyName


@router.post("/requests", status_code=201, summary="apply for a resource (Art. 18, 24, 25)")
def file_request(body: RequestIn, request: Request,
                 who: Caller = Depends(caller)) -> dict[str, Any]:
    """Unconditional resources are granted at once, not-shared ones refused at once (with
    the reason), the rest wait for the provider's decision, due in working days. A request
    whose commitment or agreement is unknown, another agency's, not in force or out of scope
    is refused with 422 and that rule (``commitment.*``, ``confidentiality.*``), unfiled: it
    is an incomplete application, nothing was decided."""
    from govbus.core import sharing_store

    agency = who.acts_as(body.agency)
    res = resource(request, body.resource)
    return sharing_store.file_request(dsn(request), res, agency, body.purpose, body.fields,
                                      body.commitment, body.confidentiality,
                                      until(body.valid_until), body.delivery_format)


@router.get("/requests", summary="the caller's requests: filed, or to decide as provider")
def list_requests(request: Request, who: Caller = Depends(caller),
                  agency: str | None = Query(None, max_length=64),
                  status: Status | None = None, overdue: bool = False) -> list[dict[str, Any]]:
    from govbus.core import sharing_store

    return sharing_store.list_requests(dsn(request), who.reads_for(agency), status, overdue)


@router.get("/requests/{request_id}", summary="one request")
def get_request(request_id: int, request: Request,
                who: Caller = Depends(caller)) -> dict[str, Any]:
    from govbus.core import sharing_store
    from govbus.core.sharing import SharingForbidden, SharingNotFound

    rows = [r for r in sharing_store.list_requests(dsn(request)) if r["request_id"] ==
            request_id]
    if not rows:
        raise SharingNotFound(f"no sharing request {request_id}", rule="request.not_found")
    row = rows[0]
    if not who.oversees and who.agency not in (row["requester"], row["provider"]):
        raise SharingForbidden(f"request {request_id} is between {row['requester']} and "
                               f"{row['provider']}; {who.agency} may not read it (Art. 24)",
                               rule="access.not_yours")
    return row


@router.post("/requests/{request_id}/approve", summary="approve a pending request (its "
             "provider, Art. 18)")
def approve(request_id: int, body: ApproveIn, request: Request,
            who: Caller = Depends(caller)) -> dict[str, Any]:
    from govbus.core import sharing_store

    return sharing_store.decide(dsn(request), request_id, who.acts_as(body.agency), True,
                                body.reason,
                                until(body.valid_until))


@router.post("/requests/{request_id}/reject", summary="reject a pending request with a "
             "reason (its provider, Art. 18)")
def reject(request_id: int, body: ReasonIn, request: Request,
           who: Caller = Depends(caller)) -> dict[str, Any]:
    from govbus.core import sharing_store

    return sharing_store.decide(dsn(request), request_id, who.acts_as(body.agency), False,
                                body.reason)


@router.get("/grants", summary="grants the caller received or, as provider, gave")
def list_grants(request: Request, who: Caller = Depends(caller),
                agency: str | None = Query(None, max_length=64),
                resource: str | None = Query(None, max_length=200),
                active: bool = False) -> list[dict[str, Any]]:
    from govbus.core import sharing_store

    return sharing_store.list_grants(dsn(request), who.reads_for(agency), resource, active)


@router.post("/grants/{grant_id}/revoke", summary="revoke a grant (its provider or the "
             "information center)")
def revoke(grant_id: int, body: ReasonIn, request: Request,
           who: Caller = Depends(caller)) -> dict[str, Any]:
    from govbus.core import sharing_store

    return sharing_store.revoke(dsn(request), grant_id, who.acts_as(body.agency), body.reason)


@router.post("/query", summary="online query of one entity's current record (Art. 17)")
def query(body: QueryIn, request: Request, who: Caller = Depends(caller)) -> dict[str, Any]:
    """Logged before it answers; rate limited per agency (``GOVBUS_QUERY_RATE``)."""
    from govbus import query as online

    agency = who.acts_as(body.agency)
    request.app.state.limits.hit("query", agency)
    return online.query(settings(request), agency, body.resource, body.key)


@router.post("/backfill", summary="send the caller the current state of a granted resource")
def backfill(body: BackfillIn, request: Request,
             who: Caller = Depends(caller)) -> dict[str, int]:
    from govbus import query as online

    agency = who.acts_as(body.agency)
    return {"sent": online.backfill(settings(request), agency, body.resource)}


@router.get("/deliveries", summary="the delivery log: the caller's rows as recipient or "
            "provider; every row for the information center")
def deliveries(request: Request, who: Caller = Depends(caller),
               recipient: str | None = Query(None, max_length=64),
               provider: str | None = Query(None, max_length=64),
               resource: str | None = Query(None, max_length=200),
               limit: int = Query(100, ge=1, le=10_000)) -> list[dict[str, Any]]:
    from govbus import delivery_log

    if not who.oversees:
        if recipient is None and provider is None:
            recipient = who.agency
        if who.agency not in (recipient, provider):
            who.acts_as(recipient or provider)
    return delivery_log.list_deliveries(dsn(request), recipient=recipient, provider=provider,
                                        resource=resource, limit=limit)


@router.post("/receipts", summary="confirm deliveries received, with the hash of what was "
             "received (Art. 24)")
def receipts(body: ReceiptsIn, request: Request,
             who: Caller = Depends(caller)) -> dict[str, int]:
    from govbus import delivery_log

    agency = who.acts_as(body.agency)
    new = delivery_log.confirm_receipts(dsn(request), [
        (r.event_id, agency, r.channel, r.content_sha256) for r in body.receipts])
    return {"confirmed": new}
