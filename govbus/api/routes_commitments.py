"""Security commitments (Art. 24) and confidentiality agreements (Art. 25) as registered
documents: an agency registers its own, lists and reads them, withdraws one early (which ends
every grant resting on it within the hot path's refresh interval)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field

from govbus.api.auth import Caller, caller
from govbus.api.deps import Body, catalogue, dsn

router = APIRouter(prefix="/v1", tags=["commitments"])

AgencyName = Field(default=None, pattern=r"^[a-z0-9_]{1,64}$",
                   description="the agency acting; default and only value: the caller's")


class CommitmentIn(Body):
    number: str = Field(min_length=1, max_length=64, description="the registered "
                        "document's number (no space, none of ; = , / ? # % \\)")
    kind: Literal["security", "confidentiality"] = Field(
        description="security commitment (Art. 24) or confidentiality agreement (Art. 25)")
    resources: list[str] = Field(min_length=1, max_length=500, description="the scope: "
                                 "agency.resource ids (or agency.* for all of an agency's)")
    purpose: str = Field(min_length=1, max_length=2000, description="the duties the data "
                         "serves (Art. 24)")
    signed_on: str = Field(max_length=10, description="YYYY-MM-DD")
    valid_until: str = Field(max_length=40, description="YYYY-MM-DD (its last second, UTC) "
                             "or an ISO 8601 instant")
    sha256: str | None = Field(default=None, max_length=64, description="the SHA-256 of the "
                               "signed document, hex; or send the document")
    document: str | None = Field(default=None, max_length=67_108_864, description="the "
                                 "signed document, base64 (within GOVBUS_API_MAX_BODY_BYTES): "
                                 "the service hashes it and keeps the hash, not the document")
    agency: str | None = AgencyName


class WithdrawIn(Body):
    reason: str = Field(min_length=1, max_length=2000)
    agency: str | None = AgencyName


@router.post("/commitments", status_code=201, summary="register a signed commitment or "
             "agreement of the caller (Art. 24, 25)")
def register(body: CommitmentIn, request: Request,
             who: Caller = Depends(caller)) -> dict[str, Any]:
    from govbus.core import commitments, commitments_store

    agency = who.acts_as(body.agency)
    document = commitments.decode_document(body.document) if body.document is not None \
        else None
    digest = commitments.document_digest(body.sha256, document)
    return commitments_store.register(
        dsn(request), body.number, body.kind, agency, body.resources, body.purpose,
        commitments.parse_day(body.signed_on), commitments.parse_until(body.valid_until),
        digest, who.agency, known=catalogue(request).resources)


@router.get("/commitments", summary="the caller's commitments and agreements (every "
            "agency's for the information center and the office)")
def list_commitments(request: Request, who: Caller = Depends(caller),
                     agency: str | None = Query(None, max_length=64)) -> list[dict[str, Any]]:
    from govbus.core import commitments_store

    return commitments_store.list_commitments(dsn(request), who.reads_for(agency))


@router.get("/commitments/{number}", summary="one commitment, with the grants resting on it")
def get_commitment(number: str, request: Request,
                   who: Caller = Depends(caller)) -> dict[str, Any]:
    """Its agency, the providers whose resources it covers, the information center and the
    office may read it."""
    from govbus.core import commitments_store
    from govbus.core.errors import ForbiddenError

    row = commitments_store.get(dsn(request), number)
    providers = {r.partition(".")[0] for r in row["resources"]}
    if not who.oversees and who.agency != row["agency"] and who.agency not in providers:
        raise ForbiddenError(f"commitment {number} is {row['agency']}'s and covers none of "
                             f"{who.agency}'s resources (Art. 24)", rule="access.not_yours")
    return row


@router.post("/commitments/{number}/withdraw", summary="withdraw a commitment early (its "
             "agency or the information center); the grants resting on it lapse")
def withdraw(number: str, body: WithdrawIn, request: Request,
             who: Caller = Depends(caller)) -> dict[str, Any]:
    from govbus.core import commitments_store

    return commitments_store.withdraw(dsn(request), number, who.acts_as(body.agency),
                                      body.reason)
