"""A Schema Registry API compatible with Confluent's for reading, under ``/registry``."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/registry", tags=["schema registry"])
