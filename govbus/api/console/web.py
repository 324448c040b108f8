"""What every page of the console shares: templates and their language, the session, the
CSRF check, forms, and refusals rendered as pages.

The session is a cookie encrypted and authenticated with Fernet (``cryptography``): it holds
the agency's token and the session's CSRF token, and expires after :data:`SESSION_TTL_S`.
Every request verifies the token again through the service's own check (Art. 24), so a revoked
credential ends its sessions at once. The key is drawn when the process starts: its sessions
end with it.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote
from zoneinfo import ZoneInfo

from babel.dates import format_datetime, format_timedelta
from babel.support import Translations
from cryptography.fernet import Fernet, InvalidToken
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError

from govbus.api.auth import Caller, role_of
from govbus.core.access import AccessError
from govbus.core.errors import ForbiddenError, GovbusError

HERE = Path(__file__).parent
LOCALES = ("zh_CN", "en")  # the first is the default: Simplified Chinese
BEIJING = ZoneInfo("Asia/Shanghai")
COOKIE, LANG_COOKIE = "govbus_console", "lang"
SESSION_TTL_S = 8 * 3600  # one working day; then sign in again


def _environment(locale: str) -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      extensions=["jinja2.ext.i18n"], trim_blocks=True, lstrip_blocks=True)
    translations = Translations.load(str(HERE / "locale"), [locale], domain="messages")
    env.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
    env.filters["when"] = lambda value: when(value, locale)
    env.filters["avro"] = avro_type
    env.filters["period"] = lambda value: period(value, locale)
    env.globals["locale"] = locale
    return env


def when(value: Any, locale: str) -> str:
    """An instant in Beijing time, as the locale writes it; '' for none."""
    if value in (None, ""):
        return ""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time(), tzinfo=BEIJING)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return format_datetime(value, "medium", tzinfo=BEIJING, locale=locale)


def period(text: Any, locale: str) -> str:
    """An update period (ISO 8601, ``P1D``) in words (``1天``, ``1 day``); as written when
    it is not one."""
    from govbus.core.catalogue import parse_period

    delta = parse_period(text)
    return format_timedelta(delta, format="long", locale=locale) if delta else str(text or "")


def avro_type(schema: Any) -> str:
    """An Avro type as a clerk reads it: ``string``, ``string?`` (nullable), ``array<string>``."""
    if isinstance(schema, list):
        kinds = [avro_type(s) for s in schema if s != "null"]
        return " | ".join(kinds) + ("?" if "null" in schema else "")
    if isinstance(schema, dict):
        kind = schema.get("logicalType") or schema.get("type")
        if kind == "array":
            return f"array<{avro_type(schema.get('items'))}>"
        if kind == "map":
            return f"map<{avro_type(schema.get('values'))}>"
        return str(schema.get("name") if kind in ("record", "enum", "fixed") else kind)
    return str(schema)


ENVIRONMENTS = {locale: _environment(locale) for locale in LOCALES}


def locale_of(request: Request) -> str:
    chosen = request.cookies.get(LANG_COOKIE, "")
    return chosen if chosen in LOCALES else LOCALES[0]


def gettext(request: Request) -> Callable[[str], str]:
    """The translation function of the request's language, for messages made in Python."""
    return ENVIRONMENTS[locale_of(request)].globals["gettext"]  # type: ignore[return-value]


# --- the session ------------------------------------------------------------------------

@dataclass(frozen=True)
class Session:
    """A signed-in clerk: the agency's caller, its token and the session's CSRF token."""

    who: Caller
    token: str
    csrf: str


class SignIn(Exception):
    """No valid session: the page redirects to the sign-in form."""


class Ended:
    """The sessions signed out in this process (by their CSRF token, random per session),
    kept until they would have expired anyway: a copy of a signed-out cookie opens nothing."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, csrf: str) -> None:
        now = time.time()
        with self._lock:
            for old in [k for k, t in self._until.items() if t < now]:
                del self._until[old]
            self._until[csrf] = now + SESSION_TTL_S

    def has(self, csrf: str) -> bool:
        with self._lock:
            return csrf in self._until


def new_key() -> Fernet:
    """The sessions' key of this process."""
    return Fernet(Fernet.generate_key())


def _fernet(request: Request) -> Fernet:
    return request.app.state.console_fernet  # type: ignore[no-any-return]


def read_cookie(request: Request) -> dict[str, str]:
    raw = request.cookies.get(COOKIE)
    if not raw:
        return {}
    try:
        data = json.loads(_fernet(request).decrypt(raw.encode(), ttl=SESSION_TTL_S))
    except (InvalidToken, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_cookie(request: Request, response: Response, data: dict[str, str]) -> None:
    value = _fernet(request).encrypt(json.dumps(data).encode()).decode()
    response.set_cookie(COOKIE, value, max_age=SESSION_TTL_S, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")


def anonymous_csrf(request: Request, response: Response) -> str:
    """The CSRF token of the sign-in form, kept in a session cookie without a token."""
    data = read_cookie(request)
    if not data.get("csrf"):
        data = {"csrf": secrets.token_urlsafe(32)}
        write_cookie(request, response, data)
    return data["csrf"]


def current(request: Request) -> Session | None:
    """The session, its token verified again (revoked or unknown: none; the database
    unreachable: DatabaseError)."""
    data = read_cookie(request)
    token = data.get("token")
    if not token or not data.get("csrf"):
        return None
    state = request.app.state
    if state.console_ended.has(data["csrf"]):
        return None
    try:
        agency = state.verified.agency(state.settings.database_url, token)
    except AccessError:  # revoked or rotated; a database outage is a 503 page, not a sign-out
        return None
    return Session(Caller(agency, role_of(agency)), token, data["csrf"])


def signed_in(request: Request) -> Session:
    """The dependency of every page but the sign-in form."""
    session = current(request)
    if session is None:
        raise SignIn
    return session


# --- forms ------------------------------------------------------------------------------

class Form:
    """A posted ``application/x-www-form-urlencoded`` form."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs

    def one(self, name: str) -> str | None:
        values = [v.strip() for k, v in self.pairs if k == name]
        return values[0] if values and values[0] else None

    def many(self, name: str) -> list[str]:
        return [v.strip() for k, v in self.pairs if k == name and v.strip()]


class CsrfRefused(ForbiddenError):
    """A form posted without the session's CSRF token, or with another."""


async def form(request: Request, csrf: str) -> Form:
    """The posted form, once its CSRF token is the session's (403 otherwise)."""
    pairs = parse_qsl((await request.body()).decode("utf-8", "replace"),
                      keep_blank_values=True)
    posted = Form(pairs).one("csrf") or ""
    if not hmac.compare_digest(posted.encode(), csrf.encode()):
        raise CsrfRefused("the form was posted without this session's CSRF token; open the "
                          "page again and resend it", rule="console.csrf", article="Art. 24")
    return Form(pairs)


# --- rendering --------------------------------------------------------------------------

NAV = [("/catalogue", "Catalogue"), ("/requests", "Requests"), ("/grants", "Grants"),
       ("/commitments", "Commitments"),
       ("/cases", "Cases"), ("/objections", "Objections"), ("/notices", "Notices"),
       ("/proposals", "Proposals"), ("/reports", "Reports"), ("/operations", "Operations")]


#: every page: never cached (it shows one agency's records), never framed, no script at all
HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
           "Content-Security-Policy": "default-src 'self'; script-src 'none'; "
                                      "frame-ancestors 'none'; form-action 'self'"}


def render(request: Request, template: str, session: Session | None = None,
           status: int = 200, **context: Any) -> HTMLResponse:
    env = ENVIRONMENTS[locale_of(request)]
    html = env.get_template(template).render(
        request=request, session=session, nav=NAV, path=request.url.path,
        here=str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""),
        **context)
    return HTMLResponse(html, status, headers=HEADERS)


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, 303)


def refusal(request: Request, exc: Exception) -> HTMLResponse:
    """A refusal of the API as a page: its status, rule, article and message."""
    from govbus.api.errors import status_of

    if isinstance(exc, ValidationError | RequestValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors())
        status, rule, article, message = 422, "input.invalid", "Art. 11", problems
    else:
        assert isinstance(exc, GovbusError)
        status, rule, article, message = status_of(exc), exc.rule, exc.article, str(exc)
    from govbus.api.console.messages import RULES

    explained = RULES.get(rule)
    try:
        session = current(request)
    except GovbusError:  # the refusal may be the database's own
        session = None
    return render(request, "refused.html", session, status=status, code=status,
                  rule=rule, article=article, message=message, explained=explained)


class ConsoleRoute(APIRoute):
    """A console route: no session sends the browser to sign in; a refusal is a page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except SignIn:
                query = f"?{request.url.query}" if request.url.query else ""
                back = request.url.path + query if request.method == "GET" else "/"
                return see_other(f"/signin?next={quote(back, safe='/')}")
            except (GovbusError, ValidationError, RequestValidationError) as exc:
                return refusal(request, exc)

        return handle
