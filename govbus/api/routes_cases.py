"""Reconciliation cases (Art. 8, 20), objections (Art. 19) and complaints (Art. 29).

Who reads what:
- a case: its parties — the owner (the source of record, Art. 8) and the agency whose value
  differs — and the information center and the municipal office; only the owner resolves it;
- an objection or a complaint: the agency that filed it, the agency it is against, the
  information center and the municipal office; an objection is answered by the provider it is
  against or the information center (Art. 19), a complaint by the municipal office (Art. 29).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field

from govbus.api.auth import Caller, caller
from govbus.api.deps import Body, catalogue, dsn

router = APIRouter(prefix="/v1", tags=["cases"])

AgencyName = Field(default=None, pattern=r"^[a-z0-9_]{1,64}$",
                   description="the agency acting; default and only value: the caller's")
CaseStatus = Literal["open", "closed", "resolved"]
Resolution = Literal["corrected", "confirmed", "dismissed"]
Kind = Literal["objection", "complaint"]
ObjectionStatus = Literal["open", "answered", "withdrawn"]


class ResolveIn(Body):
    resolution: Resolution = Field(description="corrected, confirmed or dismissed")
    note: str = Field(min_length=1, max_length=2000, description="what the owner verified "
                      "(Art. 20)")
    agency: str | None = AgencyName


class ComplaintIn(Body):
    against: str = Field(pattern=r"^[a-z0-9_]{1,64}$", description="the agency concerned")
    reason: str = Field(min_length=1, max_length=2000, description="the rule broken")
    resource: str | None = Field(default=None, max_length=200, description="agency.resource")
    key: str | None = Field(default=None, max_length=200, description="the entity's key")
    event_id: str | None = Field(default=None, max_length=200)
    agency: str | None = AgencyName


class ObjectionIn(ComplaintIn):
    resource: str = Field(max_length=200, description="agency.resource: the data doubted, "
                          "which the caller received (Art. 19)")


class AnswerIn(Body):
    answer: str = Field(min_length=1, max_length=4000)
    agency: str | None = AgencyName


def _readable_case(who: Caller, case: dict[str, Any]) -> dict[str, Any]:
    from govbus.core.cases_store import CaseForbidden, parties

    if not who.oversees and who.agency not in parties(case):
        raise CaseForbidden(f"case {case['id']} concerns {' and '.join(parties(case))}; "
                            f"{who.agency} may not read it (Art. 24)", rule="access.not_yours",
                            article="Art. 24")
    return case


@router.get("/cases", summary="reconciliation cases owned by or involving the caller "
            "(every case for the information center and the office)")
def list_cases(request: Request, who: Caller = Depends(caller),
               agency: str | None = Query(None, max_length=64),
               status: CaseStatus | None = None,
               resource: str | None = Query(None, max_length=200,
                                            description="agency.resource a value comes from"),
               entity: str | None = Query(None, max_length=200),
               owned: bool = Query(False, description="only the cases the agency owns: its "
                                   "inbox as source of record (Art. 8, 20)"),
               overdue: bool = False) -> list[dict[str, Any]]:
    from govbus.core import cases_store

    return cases_store.list_cases(dsn(request), who.reads_for(agency), status, overdue,
                                  entity, resource, owned)


@router.get("/cases/{case_id}", summary="one case (its parties, the information center, "
            "the office)")
def get_case(case_id: int, request: Request, who: Caller = Depends(caller)) -> dict[str, Any]:
    from govbus.core import cases_store

    return _readable_case(who, cases_store.list_cases_by_id(dsn(request), case_id))


@router.post("/cases/{case_id}/resolve", summary="resolve an open case (its owner, the "
             "source of record; Art. 8, 20)")
def resolve_case(case_id: int, body: ResolveIn, request: Request,
                 who: Caller = Depends(caller)) -> dict[str, Any]:
    from govbus.core import cases_store

    return cases_store.resolve(dsn(request), case_id, who.acts_as(body.agency),
                               body.resolution, body.note)


def _file(kind: str, body: ComplaintIn, request: Request, who: Caller) -> dict[str, Any]:
    from govbus.core import objections

    return objections.file(dsn(request), catalogue(request), kind, who.acts_as(body.agency),
                           body.against, body.resource, body.key, body.event_id, body.reason)


@router.post("/objections", status_code=201, summary="object to data received from a "
             "provider (Art. 19)")
def file_objection(body: ObjectionIn, request: Request,
                   who: Caller = Depends(caller)) -> dict[str, Any]:
    """Only on data the caller received (a grant of the resource; with ``event_id``, that
    delivery); the provider or the information center answers by the deadline."""
    return _file("objection", body, request, who)


@router.post("/complaints", status_code=201, summary="complain that an agency broke the "
             "rules (Art. 29, 31)")
def file_complaint(body: ComplaintIn, request: Request,
                   who: Caller = Depends(caller)) -> dict[str, Any]:
    """The municipal office answers by the deadline."""
    return _file("complaint", body, request, who)


@router.get("/objections", summary="objections and complaints filed by or against the caller "
            "(every one for the information center and the office)")
def list_objections(request: Request, who: Caller = Depends(caller),
                    agency: str | None = Query(None, max_length=64),
                    kind: Kind | None = None, status: ObjectionStatus | None = None,
                    overdue: bool = False) -> list[dict[str, Any]]:
    from govbus.core import objections

    return objections.list_all(dsn(request), kind, who.reads_for(agency), status, overdue)


@router.get("/objections/{objection_id}", summary="one objection or complaint, with its "
            "history")
def get_objection(objection_id: int, request: Request,
                  who: Caller = Depends(caller)) -> dict[str, Any]:
    from govbus.core import objections

    row = objections.get(dsn(request), objection_id)
    if not who.oversees and who.agency not in objections.parties(row):
        raise objections.ObjectionForbidden(
            f"{row['kind']} {objection_id} is between {row['filed_by']} and "
            f"{row['against_agency']}; {who.agency} may not read it (Art. 24)",
            rule="access.not_yours", article="Art. 24")
    return row


@router.post("/objections/{objection_id}/answer", summary="answer an open objection (its "
             "provider or the information center) or complaint (the office)")
def answer_objection(objection_id: int, body: AnswerIn, request: Request,
                     who: Caller = Depends(caller)) -> dict[str, Any]:
    from govbus.core import objections

    return objections.answer(dsn(request), objection_id, who.acts_as(body.agency), body.answer)
