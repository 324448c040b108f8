"""The registered contracts, for publishers and the outbox relay that frame records with a
schema id without reading the central database (Art. 11, 13)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from govbus.api.auth import Caller, caller
from govbus.api.deps import dsn
from govbus.core.errors import NotFoundError

router = APIRouter(prefix="/v1/schemas", tags=["catalogue"])


def _out(row: tuple[Any, ...] | None, what: str) -> dict[str, Any]:
    if row is None:
        raise NotFoundError(f"{what} is not registered", rule="registry.not_registered",
                            article="Art. 13")
    return {"schema_id": row[0], "resource_id": row[1], "version": row[2],
            "contract": row[3], "envelope_schema": row[4]}


@router.get("/ids/{schema_id}", summary="a registered version by its schema id")
def by_id(schema_id: int, request: Request, _: Caller = Depends(caller)) -> dict[str, Any]:
    from govbus.core.registry import SchemaRegistry

    return _out(SchemaRegistry(dsn(request)).fetch(schema_id=schema_id),
                f"schema id {schema_id}")


@router.get("/latest/{resource_id}", summary="the newest registered version of a resource")
def latest(resource_id: str, request: Request,
           _: Caller = Depends(caller)) -> dict[str, Any]:
    from govbus.core.registry import SchemaRegistry

    return _out(SchemaRegistry(dsn(request)).fetch(resource_id=resource_id),
                f"resource {resource_id}")
