"""Reconciliation cases (Art. 8, 20), objections (Art. 19), complaints (Art. 29) and notices
(Art. 18), through the API's route functions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from govbus.api import routes_cases, routes_notices
from govbus.api.console.web import ConsoleRoute, Session, form, render, see_other, signed_in

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


@router.get("/cases")
def cases_page(request: Request, session: Session = Depends(signed_in),
               done: str = Query("", max_length=40)) -> Response:
    who = session.who
    rows = routes_cases.list_cases(request, who, None, None, None, None, False, False)
    inbox = [c for c in rows if c["owner_agency"] == who.agency and c["status"] == "open"]
    rest = [c for c in rows if c not in inbox]
    return render(request, "cases.html", session, inbox=inbox, rest=rest, done=done)


@router.get("/cases/{case_id}")
def case_page(case_id: int, request: Request,
              session: Session = Depends(signed_in)) -> Response:
    case = routes_cases.get_case(case_id, request, session.who)
    return render(request, "case.html", session, case=case)


@router.post("/cases/{case_id}/resolve")
async def resolve(case_id: int, request: Request,
                  session: Session = Depends(signed_in)) -> Response:
    posted = await form(request, session.csrf)
    body = routes_cases.ResolveIn.model_validate(
        {"resolution": posted.one("resolution") or "", "note": posted.one("note") or ""})
    await run_in_threadpool(routes_cases.resolve_case, case_id, body, request, session.who)
    return see_other(f"/cases/{case_id}")


@router.get("/objections")
def objections_page(request: Request, session: Session = Depends(signed_in),
                    done: str = Query("", max_length=40)) -> Response:
    who = session.who
    rows = routes_cases.list_objections(request, who, None, None, None, False)
    return render(request, "objections.html", session, rows=rows, done=done)


@router.post("/objections")
async def file_objection(request: Request, session: Session = Depends(signed_in)) -> Response:
    posted = await form(request, session.csrf)
    values = {"against": posted.one("against") or "", "reason": posted.one("reason") or "",
              "resource": posted.one("resource"), "key": posted.one("key"),
              "event_id": posted.one("event_id")}
    if posted.one("kind") == "objection":
        objection = routes_cases.ObjectionIn.model_validate(values)
        await run_in_threadpool(routes_cases.file_objection, objection, request, session.who)
    else:
        complaint = routes_cases.ComplaintIn.model_validate(values)
        await run_in_threadpool(routes_cases.file_complaint, complaint, request, session.who)
    return see_other("/objections?done=filed")


@router.post("/objections/{objection_id}/answer")
async def answer(objection_id: int, request: Request,
                 session: Session = Depends(signed_in)) -> Response:
    posted = await form(request, session.csrf)
    body = routes_cases.AnswerIn(answer=posted.one("answer") or "")
    await run_in_threadpool(routes_cases.answer_objection, objection_id, body, request,
                            session.who)
    return see_other("/objections?done=answered")


@router.get("/notices")
def notices_page(request: Request, session: Session = Depends(signed_in)) -> Response:
    rows = routes_notices.list_notices(request, session.who, None, False, 200)
    return render(request, "notices.html", session, rows=rows)


@router.post("/notices/{notice_id}/ack")
async def ack(notice_id: int, request: Request,
              session: Session = Depends(signed_in)) -> Response:
    await form(request, session.csrf)
    await run_in_threadpool(routes_notices.ack_notice, notice_id, request, session.who)
    return see_other("/notices")
