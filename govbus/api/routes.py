"""The routers the service serves, in the order of the OpenAPI document."""

from __future__ import annotations

from fastapi import APIRouter

from govbus.api import (
    routes_admin,
    routes_cases,
    routes_catalogue,
    routes_commitments,
    routes_notices,
    routes_registry,
    routes_reports,
    routes_schemas,
    routes_sharing,
)

ROUTERS: list[APIRouter] = [
    routes_sharing.router,
    routes_commitments.router,  # security commitments, agreements (Art. 24, 25)
    routes_schemas.router,
    routes_catalogue.router,
    routes_cases.router,  # cases, objections, complaints (Art. 19, 20, 29)
    routes_notices.router,  # notices (Art. 18)
    routes_reports.router,  # filings, evaluation, annual (Art. 18, 26, 28)
    routes_admin.router,  # credentials, keys, quarantine (Art. 8, 19, 24)
    routes_registry.router,  # Confluent-compatible Schema Registry API (/registry)
]
