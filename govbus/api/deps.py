"""What the routes share: the settings, the catalogue, the request models' base."""

from __future__ import annotations

import datetime as dt
import threading
import time

from fastapi import Request
from pydantic import BaseModel, ConfigDict

from govbus.core.catalogue import Catalogue, Resource
from govbus.core.config import Settings
from govbus.core.errors import GovbusError


class Body(BaseModel):
    """A request body: an unknown field is refused by name (422), never ignored."""

    model_config = ConfigDict(extra="forbid", str_max_length=10_000)


def settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def dsn(request: Request) -> str:
    return settings(request).database_url


#: how long the registered catalogue is reused before it is read again (seconds)
CATALOGUE_TTL_S = 1.0
_catalogues: dict[str, tuple[float, Catalogue]] = {}
_catalogue_lock = threading.Lock()


def catalogue(request: Request) -> Catalogue:
    """The catalogue the service decides by: the latest registered version of each resource
    in PostgreSQL, with its entry as registered (Art. 7, 13), read again after
    :data:`CATALOGUE_TTL_S`, so that an approved proposal decides requests within a second."""
    from govbus.core.proposals import registered_catalogue

    url = dsn(request)
    now = time.monotonic()
    cached = _catalogues.get(url)
    if cached is not None and now - cached[0] < CATALOGUE_TTL_S:
        return cached[1]
    with _catalogue_lock:
        cached = _catalogues.get(url)
        if cached is not None and time.monotonic() - cached[0] < CATALOGUE_TTL_S:
            return cached[1]
        loaded = registered_catalogue(url)
        _catalogues[url] = (time.monotonic(), loaded)
        return loaded


def forget_catalogue(request: Request) -> None:
    """Read the registered catalogue again on the next call (after this process changed it)."""
    with _catalogue_lock:
        _catalogues.pop(dsn(request), None)


def resource(request: Request, resource_id: str) -> Resource:
    """``agency.resource`` of the catalogue; 404 naming the known ones otherwise."""
    agency, dot, name = resource_id.partition(".")
    if not dot:
        raise GovbusError(f"resource {resource_id!r}: name it as agency.resource, e.g. "
                          "tax.tax_registration", rule="input.resource_id", article="Art. 7")
    return catalogue(request).get(agency, name)


def until(day: dt.date | None) -> dt.datetime | None:
    """The last instant of ``day`` (UTC), as ``--valid-until`` means it."""
    if day is None:
        return None
    return dt.datetime.combine(day, dt.time(23, 59, 59), tzinfo=dt.UTC)
