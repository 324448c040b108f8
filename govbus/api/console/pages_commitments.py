"""Security commitments (Art. 24) and confidentiality agreements (Art. 25): an agency's clerk
lists them, registers a signed one by its SHA-256, withdraws one early — the API's routes."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from govbus.api import routes_catalogue, routes_commitments
from govbus.api.console.web import ConsoleRoute, Session, form, render, see_other, signed_in

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


@router.get("/commitments")
def commitments_page(request: Request, session: Session = Depends(signed_in),
                     done: str = Query("", max_length=40)) -> Response:
    rows = routes_commitments.list_commitments(request, session.who, None)
    entries = routes_catalogue.list_catalogue(request, session.who, None, None, None, None)
    return render(request, "commitments.html", session, rows=rows, done=done,
                  resources=[e["resource"] for e in entries if e["share_class"] != "not_shared"])


@router.post("/commitments")
async def register(request: Request, session: Session = Depends(signed_in)) -> Response:
    posted = await form(request, session.csrf)
    body = routes_commitments.CommitmentIn.model_validate({
        "number": posted.one("number") or "", "kind": posted.one("kind") or "",
        "resources": posted.many("resources"), "purpose": posted.one("purpose") or "",
        "signed_on": posted.one("signed_on") or "", "valid_until": posted.one("valid_until")
        or "", "sha256": posted.one("sha256")})
    await run_in_threadpool(routes_commitments.register, body, request, session.who)
    return see_other("/commitments?done=filed")


@router.post("/commitments/{number}/withdraw")
async def withdraw(number: str, request: Request,
                   session: Session = Depends(signed_in)) -> Response:
    posted = await form(request, session.csrf)
    body = routes_commitments.WithdrawIn(reason=posted.one("reason") or "")
    await run_in_threadpool(routes_commitments.withdraw, number, body, request, session.who)
    return see_other("/commitments?done=withdrawn")
