"""The routers the service serves, in the order of the OpenAPI document."""

from __future__ import annotations

from fastapi import APIRouter

from govbus.api import routes_catalogue, routes_schemas, routes_sharing

ROUTERS: list[APIRouter] = [routes_sharing.router, routes_schemas.router,
                            routes_catalogue.router]
