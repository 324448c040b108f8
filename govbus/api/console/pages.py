"""Sign-in, the language switch, the catalogue, sharing requests and grants.

Every action calls the API's own route function with the signed-in caller, so the console
decides nothing the API does not (Art. 24)."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from govbus.api import routes_catalogue, routes_commitments, routes_sharing
from govbus.api.console.web import (
    BEIJING,
    LANG_COOKIE,
    LOCALES,
    ConsoleRoute,
    Session,
    anonymous_csrf,
    current,
    form,
    read_cookie,
    render,
    see_other,
    signed_in,
    write_cookie,
)
from govbus.core.access import AccessError

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


def _local(path: str | None) -> str:
    """A path of this site to go back to; anything else (another host): the home page."""
    if not path or not path.startswith("/") or path.startswith("//"):
        return "/"
    return path


@router.get("/signin")
def signin_page(request: Request, next: str = Query("/", max_length=500)) -> Response:
    response = Response()
    csrf = anonymous_csrf(request, response)
    page = render(request, "signin.html", csrf=csrf, next=_local(next))
    for header in response.headers.getlist("set-cookie"):
        page.headers.append("set-cookie", header)
    return page


@router.post("/signin")
async def signin(request: Request) -> Response:
    posted = await form(request, read_cookie(request).get("csrf", "-"))
    token = posted.one("token") or ""
    state = request.app.state
    try:
        await run_in_threadpool(state.verified.agency, state.settings.database_url, token)
    except AccessError:
        return render(request, "signin.html", status=401, csrf=read_cookie(request)["csrf"],
                      next=_local(posted.one("next")), failed=True)
    response = see_other(_local(posted.one("next")))
    write_cookie(request, response, {"token": token, "csrf": secrets.token_urlsafe(32)})
    return response


@router.post("/signout")
async def signout(request: Request, session: Session = Depends(signed_in)) -> Response:
    await form(request, session.csrf)
    request.app.state.console_ended.add(session.csrf)
    response = see_other("/signin")
    response.delete_cookie("govbus_console", path="/")
    return response


@router.get("/lang/{locale}")
def switch_language(locale: str, request: Request,
                    next: str = Query("/", max_length=500)) -> Response:
    response = see_other(_local(next))
    if locale in LOCALES:
        response.set_cookie(LANG_COOKIE, locale, max_age=365 * 86400, samesite="lax",
                            secure=request.url.scheme == "https", path="/")
    return response


@router.get("/")
def home(request: Request) -> Response:
    return see_other("/catalogue" if current(request) else "/signin")


# --- the catalogue ----------------------------------------------------------------------

@router.get("/catalogue")
def catalogue_page(request: Request, session: Session = Depends(signed_in),
                   agency: str = Query("", max_length=64), share_class: str = Query(
                       "", max_length=32), database_class: str = Query("", max_length=32),
                   q: str = Query("", max_length=200)) -> Response:
    rows = routes_catalogue.list_catalogue(
        request, session.who, agency or None, share_class or None,  # type: ignore[arg-type]
        database_class or None, q or None)  # type: ignore[arg-type]
    agencies = sorted({r["provider"] for r in routes_catalogue.list_catalogue(
        request, session.who, None, None, None, None)})
    return render(request, "catalogue.html", session, rows=rows, agencies=agencies,
                  chosen={"agency": agency, "share_class": share_class,
                          "database_class": database_class, "q": q})


@router.get("/catalogue/{resource_id}")
def entry_page(resource_id: str, request: Request,
               session: Session = Depends(signed_in)) -> Response:
    entry = routes_catalogue.get_entry(resource_id, request, session.who)
    return render(request, "entry.html", session, entry=entry)


# --- sharing requests -------------------------------------------------------------------

def _working_days_left(due: Any) -> int | None:
    from govbus.core.workdays import working_days_between

    if not due:
        return None
    due_at = dt.datetime.fromisoformat(due) if isinstance(due, str) else due
    today = dt.datetime.now(BEIJING).date()
    day = due_at.astimezone(BEIJING).date()
    if day < today:
        return -working_days_between(day, today)
    return working_days_between(today, day)


@router.get("/requests")
def requests_page(request: Request, session: Session = Depends(signed_in),
                  resource: str = Query("", max_length=200),
                  done: str = Query("", max_length=40)) -> Response:
    who = session.who
    rows = routes_sharing.list_requests(request, who, None, None, False)
    for row in rows:
        row["days_left"] = _working_days_left(row.get("due_at"))
    inbox = [r for r in rows if r["provider"] == who.agency and r["status"] == "pending"]
    filed = [r for r in rows if r["requester"] == who.agency]
    others = [r for r in rows if r not in inbox and r not in filed]
    commitments = [c for c in routes_commitments.list_commitments(request, who, None)
                   if c.get("agency") == who.agency and c.get("kind") == "security"]
    entries = routes_catalogue.list_catalogue(request, who, None, None, None, None)
    shared = [e["resource"] for e in entries if e["share_class"] != "not_shared"]
    return render(request, "requests.html", session, inbox=inbox, filed=filed, others=others,
                  commitments=commitments, resources=shared, chosen=resource, done=done)


@router.post("/requests")
async def file_request(request: Request, session: Session = Depends(signed_in)) -> Response:
    posted = await form(request, session.csrf)
    fields = [f.strip() for part in posted.many("fields") for f in part.split(",")
              if f.strip()]
    body = routes_sharing.RequestIn.model_validate({
        "resource": posted.one("resource") or "", "purpose": posted.one("purpose") or "",
        "fields": fields or None, "commitment": posted.one("commitment") or "",
        "confidentiality": posted.one("confidentiality"),
        "valid_until": posted.one("valid_until")})
    out = await run_in_threadpool(routes_sharing.file_request, body, request, session.who)
    return see_other(f"/requests?done={out['status']}")


@router.post("/requests/{request_id}/decide")
async def decide(request_id: int, request: Request,
                 session: Session = Depends(signed_in)) -> Response:
    posted = await form(request, session.csrf)
    reason = posted.one("reason")
    if posted.one("decision") == "approve":
        approve = routes_sharing.ApproveIn.model_validate(
            {"reason": reason, "valid_until": posted.one("valid_until")})
        await run_in_threadpool(routes_sharing.approve, request_id, approve, request,
                                session.who)
        return see_other("/requests?done=approved")
    rejection = routes_sharing.ReasonIn(reason=reason or "")
    await run_in_threadpool(routes_sharing.reject, request_id, rejection, request, session.who)
    return see_other("/requests?done=rejected")


# --- grants -----------------------------------------------------------------------------

LAPSING_DAYS = 30  # a grant in force that ends within this many days is shown as lapsing


def _lapsing(grant: dict[str, Any]) -> bool:
    ends = grant.get("valid_until") or grant.get("ends_at")
    if grant.get("state") != "in_force" or not ends:
        return False
    end = dt.datetime.fromisoformat(ends) if isinstance(ends, str) else ends
    return bool(end - dt.datetime.now(dt.UTC) < dt.timedelta(days=LAPSING_DAYS))


@router.get("/grants")
def grants_page(request: Request, session: Session = Depends(signed_in),
                done: str = Query("", max_length=40)) -> Response:
    rows = routes_sharing.list_grants(request, session.who, None, None, False)
    groups: dict[str, list[dict[str, Any]]] = {"in_force": [], "lapsing": [], "ended": []}
    for g in rows:
        key = "lapsing" if _lapsing(g) else ("in_force" if g["state"] == "in_force"
                                              else "ended")
        groups[key].append(g)
    return render(request, "grants.html", session, groups=groups, done=done)


@router.post("/grants/{grant_id}/revoke")
async def revoke(grant_id: int, request: Request,
                 session: Session = Depends(signed_in)) -> Response:
    posted = await form(request, session.csrf)
    body = routes_sharing.ReasonIn(reason=posted.one("reason") or "")
    await run_in_threadpool(routes_sharing.revoke, grant_id, body, request, session.who)
    return see_other("/grants?done=revoked")
