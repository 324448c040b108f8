"""The catalogue: its registered entries, the proposals that change it and the yearly review
(Art. 4, 7, 8, 12, 13).

An agency proposes a new or changed contract of a resource it provides (the ``.avsc`` as the
body); the checks run at once and their findings come back with the stored proposal. The
information center approves (only then is the contract registered, and so reaches the stream
apps) or rejects with a reason. Each agency confirms the yearly review of its entries; the
entries not reviewed within a year are listed. The catalogue read here is the registered one.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import Field

from govbus.api import errors
from govbus.api.auth import Caller, caller
from govbus.api.deps import Body, catalogue, dsn, forget_catalogue, resource, settings
from govbus.core import proposals
from govbus.core.catalogue import Resource
from govbus.core.errors import ForbiddenError, GovbusError

router = APIRouter(prefix="/v1/catalogue", tags=["catalogue"])

Status = Literal["pending", "approved", "rejected"]
AgencyName = Field(default=None, pattern=r"^[a-z0-9_]{1,64}$",
                   description="the agency acting; default and only value: the caller's")
AVSC_BODY = {"requestBody": {"required": True, "description": "the contract: an .avsc file "
                             "(an Avro record schema with its `govbus` catalogue entry), as "
                             "schemas/<agency>/<resource>.avsc",
                             "content": {"application/json": {"schema": {"type": "object"}}}}}


class ApproveIn(Body):
    reason: str | None = Field(default=None, max_length=2000)


class RejectIn(Body):
    reason: str = Field(min_length=1, max_length=2000, description="why, so that the "
                        "provider can act on it (Art. 13)")


class ReviewIn(Body):
    note: str = Field(min_length=1, max_length=2000, description="what was reviewed and "
                      "found (Art. 13)")
    agency: str | None = AgencyName


def _center(who: Caller, what: str) -> None:
    if not who.is_center:
        raise ForbiddenError(f"only the information_center {what}, not {who.agency}: agencies "
                             "propose, the center confirms (Art. 13)",
                             rule="access.center_only", article="Art. 13")


def _refused(exc: proposals.ProposalConflict) -> JSONResponse:
    return JSONResponse(errors.body(409, exc.rule, str(exc), exc.article,
                                    findings=exc.findings), 409)


def _entry(res: Resource) -> dict[str, Any]:
    out = res.summary()
    out.pop("file", None)
    return out


def _matches(res: Resource, q: str) -> bool:
    text = " ".join(str(v) for v in (res.id, res.title, res.legal_basis,
                                     res.meta.get("conditions"), res.meta.get("doc"),
                                     res.schema.get("doc")) if v)
    text += " " + " ".join(f"{f.name} {f.canonical or ''}" for f in res.fields)
    return all(word in text.lower() for word in q.lower().split())


# --- proposals (declared before /{resource_id}, which would match their paths) ----------

@router.post("/proposals", status_code=201, openapi_extra=AVSC_BODY,
             summary="propose a new or changed contract of a resource the caller provides "
             "(Art. 13); checked at once")
async def propose(request: Request, who: Caller = Depends(caller),
                  resource_id: str = Query(alias="resource", max_length=200,
                                           description="agency.resource, the agency being "
                                           "the caller"),
                  note: str | None = Query(None, max_length=2000,
                                           description="what changes and why"),
                  amends_grants: list[int] = Query(
                      [], max_length=1000, description="the grants in force whose fields "
                      "the change removes, renames or retypes, which the approval amends "
                      "(repeated: amends_grants=12&amends_grants=15; Art. 24)")
                  ) -> dict[str, Any]:
    """The stored proposal with its findings (``errors`` counts those that block approval).
    422 when the body is not an Avro record schema with its catalogue entry, naming what is
    wrong; 403 for a resource another agency provides. A field a grant in force lists that
    the change removes, renames or retypes is an error naming the grant, unless the grant is
    in ``amends_grants``."""
    raw = await request.body()
    return await run_in_threadpool(proposals.propose, dsn(request), who.agency, resource_id,
                                   raw, note, amends_grants=amends_grants)


@router.get("/proposals", summary="proposals: the caller's; every one for the information "
            "center and the municipal office")
def list_proposals(request: Request, who: Caller = Depends(caller),
                   status: Status | None = None,
                   agency: str | None = Query(None, max_length=64),
                   resource_id: str | None = Query(None, alias="resource", max_length=200)
                   ) -> list[dict[str, Any]]:
    return proposals.list_proposals(dsn(request), who.reads_for(agency), status, resource_id)


@router.get("/proposals/{proposal_id}", summary="one proposal, with its contract and findings")
def get_proposal(proposal_id: int, request: Request,
                 who: Caller = Depends(caller)) -> dict[str, Any]:
    row = proposals.get(dsn(request), proposal_id)
    if not who.oversees and row["agency"] != who.agency:
        raise ForbiddenError(f"proposal {proposal_id} is {row['agency']}'s; {who.agency} may "
                             "not read it (Art. 24)", rule="access.not_yours")
    return row


@router.post("/proposals/{proposal_id}/approve", summary="approve and register a proposal "
             "(the information center, Art. 13)", response_model=None)
def approve(proposal_id: int, body: ApproveIn, request: Request,
            who: Caller = Depends(caller)) -> dict[str, Any] | JSONResponse:
    """Checked again against what is registered now; 409 with the ``findings`` when they
    have errors, or when the resource changed since it was proposed."""
    _center(who, "approves catalogue changes")
    try:
        out = proposals.approve(dsn(request), proposal_id, who.agency, body.reason)
    except proposals.ProposalConflict as exc:
        return _refused(exc)
    forget_catalogue(request)
    if out["kind"] == "new":
        out["topics"] = _topics(request, out["resource"])
    return out


def _topics(request: Request, resource_id: str) -> dict[str, Any]:
    """The topics a newly registered resource needs (ingest, validated, its provider's DLQ),
    so that the hot path, which subscribes to every ingest topic, receives its events."""
    from govbus.core import topics
    from govbus.core.kafka import ensure_topics

    agency, name = resource_id.split(".", 1)
    names = [topics.ingest(agency, name), topics.validated(resource_id), topics.dlq(agency)]
    try:
        return {"created": ensure_topics(settings(request), names, timeout=10.0)}
    except GovbusError as exc:
        return {"created": [], "error": f"{exc} (the topics {', '.join(names)} are created by "
                                        "`govbus up` or the deployment's init)"}


@router.post("/proposals/{proposal_id}/reject", summary="reject a proposal with a reason "
             "(the information center, Art. 13)")
def reject(proposal_id: int, body: RejectIn, request: Request,
           who: Caller = Depends(caller)) -> dict[str, Any]:
    _center(who, "rejects catalogue changes")
    return proposals.reject(dsn(request), proposal_id, who.agency, body.reason)


# --- the yearly review (Art. 13) --------------------------------------------------------

@router.get("/reviews/due", summary="entries not reviewed within a year (Art. 13): the "
            "caller's; every one for the information center and the municipal office")
def reviews_due(request: Request, who: Caller = Depends(caller),
                agency: str | None = Query(None, max_length=64),
                as_of: dt.datetime | None = Query(None, description="the moment judged "
                                                  "(ISO 8601; default: now)")
                ) -> list[dict[str, Any]]:
    return proposals.reviews_due(dsn(request), who.reads_for(agency), as_of)


@router.post("/{resource_id}/review", status_code=201, summary="confirm the yearly review "
             "of an entry the caller provides (Art. 13)")
def review(resource_id: str, body: ReviewIn, request: Request,
           who: Caller = Depends(caller)) -> dict[str, Any]:
    return proposals.review(dsn(request), resource_id, who.acts_as(body.agency), body.note)


# --- the registered catalogue -----------------------------------------------------------

@router.get("", summary="the registered catalogue (Art. 7), filtered")
def list_catalogue(request: Request, _: Caller = Depends(caller),
                   agency: str | None = Query(None, max_length=64),
                   share_class: Literal["unconditional", "on_application", "not_shared"]
                   | None = None,
                   database_class: Literal["foundational", "thematic", "departmental"]
                   | None = None,
                   q: str | None = Query(None, max_length=200, description="words found in "
                                         "the id, title, legal basis, conditions, field names "
                                         "or canonical attributes")) -> list[dict[str, Any]]:
    rows = []
    for res in catalogue(request):
        if agency and res.agency != agency:
            continue
        if share_class and res.share_class != share_class:
            continue
        if database_class and res.database_class != database_class:
            continue
        if q and not _matches(res, q):
            continue
        entry = _entry(res)
        entry["fields"] = len(res.fields)
        rows.append(entry)
    return rows


@router.get("/{resource_id}", summary="one registered entry: fields, sensitivity, canonical "
            "attributes, legal basis, update period, versions, grantees in force")
def get_entry(resource_id: str, request: Request,
              who: Caller = Depends(caller)) -> dict[str, Any]:
    """Grantees in force: all of them for the provider, the information center and the
    municipal office; another agency sees its own grants only (Art. 24)."""
    from govbus.core import sharing_store

    res = resource(request, resource_id)
    out = _entry(res)
    out |= proposals.registration(dsn(request), res.id) or {}
    grants = sharing_store.list_grants(dsn(request), None, res.id, active=True)
    if not (who.oversees or who.agency == res.agency):
        grants = [g for g in grants if g["recipient"] == who.agency]
    out["grantees"] = [{k: g.get(k) for k in ("grant_id", "recipient", "fields",
                                              "masked_fields", "valid_until")}
                       for g in grants]
    out["pending_proposals"] = [p["proposal_id"] for p in proposals.list_proposals(
        dsn(request), None, "pending", res.id)]
    return out
