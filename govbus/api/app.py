"""The service's application: its routers, its error shape, its limits and its metrics."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from govbus.api import errors
from govbus.api.errors import ApiError
from govbus.core.access import Verified
from govbus.core.config import Settings
from govbus.core.metrics import API_LATENCY as LATENCY
from govbus.core.metrics import API_RATE_LIMITED as RATE_LIMITED
from govbus.core.metrics import API_REQUESTS as REQUESTS

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class BodyLimit:
    """Refuses a body over ``limit`` bytes with 413 before the route reads it: by its
    Content-Length when stated, else as it streams in."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._refuse(send)
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Any) -> None:
        import json

        payload = json.dumps(errors.body(413, "input.too_large", f"the body exceeds "
                                         f"{self.limit} bytes (GOVBUS_API_MAX_BODY_BYTES)",
                                         "Art. 11")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


class _TooLarge(Exception):
    pass


class Limits:
    """Per-agency rate limits (``GOVBUS_QUERY_RATE`` for the online query, Art. 17)."""

    def __init__(self, settings: Settings) -> None:
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.query = parse(settings.query_rate)

    def hit(self, name: str, agency: str) -> None:
        item = self.query
        if self.limiter.hit(item, name, agency):
            return
        reset = self.limiter.get_window_stats(item, name, agency).reset_time
        wait = max(1, int(reset - time.time() + 0.999))
        RATE_LIMITED.labels(agency, name).inc()
        raise ApiError(429, "rate.exceeded", f"{agency} exceeded {self.query} for {name} "
                       f"(GOVBUS_QUERY_RATE); retry in {wait} s", "Art. 17",
                       headers={"Retry-After": str(wait)})


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service over ``settings`` (default: the environment's)."""
    from govbus.api import console, routes

    settings = settings or Settings.from_env()
    app = FastAPI(title="govbus", version="1",
                  description="The control plane of the government data-exchange bus, for "
                  "agencies: catalogue, sharing requests and grants, online query, "
                  "deliveries, cases, objections, notices, reports, keys. Every route but "
                  "`/healthz` needs `Authorization: Bearer <token>` (Art. 24).")
    app.state.settings = settings
    app.state.verified = Verified()
    app.state.limits = Limits(settings)
    errors.install(app)

    @app.middleware("http")
    async def measure(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            path = getattr(route, "path", "unmatched")
            LATENCY.labels(request.method, path).observe(time.perf_counter() - started)
            REQUESTS.labels(request.method, path, str(status)).inc()

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    for router in routes.ROUTERS:
        app.include_router(router)
    console.mount(app)  # the web console at / (docs/console.md)
    app.add_middleware(BodyLimit, limit=settings.api_max_body_bytes)  # type: ignore[arg-type]
    return app
