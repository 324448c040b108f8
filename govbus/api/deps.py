"""What the routes share: the settings, the catalogue, the request models' base."""

from __future__ import annotations

import datetime as dt

from fastapi import Request
from pydantic import BaseModel, ConfigDict

from govbus.core.catalogue import Catalogue, Resource, load_catalogue
from govbus.core.config import Settings
from govbus.core.errors import GovbusError


class Body(BaseModel):
    """A request body: an unknown field is refused by name (422), never ignored."""

    model_config = ConfigDict(extra="forbid", str_max_length=10_000)


def settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def dsn(request: Request) -> str:
    return settings(request).database_url


def catalogue(request: Request) -> Catalogue:
    """The catalogue the service decides by."""
    return load_catalogue(settings(request).schemas_dir)


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
