"""One error shape for every refusal of the service: the HTTP status, the rule that refused,
the article of the measures it comes from, and a message a person can act on.

``{"error": {"status": 403, "rule": "access.other_agency", "article": "Art. 24",
"message": "…"}}``; a contract violation adds ``violations``. Bad input is a 4xx, never a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from govbus.core.access import AccessError
from govbus.core.errors import (
    BrokerError,
    ConfigError,
    ConflictError,
    ContractError,
    DatabaseError,
    ForbiddenError,
    GovbusError,
    NotFoundError,
)

log = logging.getLogger("govbus.api")


class ApiError(GovbusError):
    """A refusal the service itself makes, with its status."""

    def __init__(self, status: int, rule: str, message: str, article: str = "",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message, rule=rule, article=article)
        self.status = status
        self.headers = headers or {}


def body(status: int, rule: str, message: str, article: str = "",
         **extra: Any) -> dict[str, Any]:
    return {"error": {"status": status, "rule": rule, "article": article, "message": message}
            | extra}


def status_of(exc: GovbusError) -> int:
    """The HTTP status of a refusal, from its kind."""
    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, ForbiddenError):
        return 403
    if isinstance(exc, AccessError):
        return 401
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, DatabaseError | BrokerError | ConfigError):
        return 503
    return 422


def _govbus(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GovbusError)
    status = status_of(exc)
    extra: dict[str, Any] = {}
    if isinstance(exc, ContractError):
        extra["violations"] = [v.as_dict() for v in exc.violations]
    if status >= 500:
        log.error("%s %s: %s", request.method, request.url.path, exc)
    headers = exc.headers if isinstance(exc, ApiError) else {}
    if status == 401:
        headers = headers | {"WWW-Authenticate": 'Bearer realm="govbus"'}
    return JSONResponse(body(status, exc.rule, str(exc), exc.article, **extra), status,
                        headers=headers)


def _where(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for e in exc.errors():
        if e.get("type") == "json_invalid":
            return JSONResponse(body(400, "input.malformed_json", "the body is not valid JSON: "
                                     f"{e.get('ctx', {}).get('error', e.get('msg'))}",
                                     "Art. 11"), 400)
        kind = e.get("type", "")
        where = _where(tuple(e.get("loc", ())))
        if kind == "extra_forbidden":
            problems.append({"field": where, "rule": "input.unknown_field",
                             "message": f"{where}: not a field of this request"})
        elif kind == "missing":
            problems.append({"field": where, "rule": "input.missing",
                             "message": f"{where}: required"})
        else:
            problems.append({"field": where, "rule": "input.invalid",
                             "message": f"{where}: {e.get('msg')}"})
    message = "; ".join(p["message"] for p in problems) or "the request is not valid"
    rule = problems[0]["rule"] if len(problems) == 1 else "input.invalid"
    return JSONResponse(body(422, rule, message, "Art. 11", problems=problems), 422)


def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    rule = {404: "http.not_found", 405: "http.method_not_allowed"}.get(exc.status_code,
                                                                       "http.refused")
    message = str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}: see /docs"
    return JSONResponse(body(exc.status_code, rule, message), exc.status_code,
                        headers=getattr(exc, "headers", None))


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path)
    return JSONResponse(body(500, "server.error", "the service failed; the operator's log "
                             "has the details"), 500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(GovbusError, _govbus)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
