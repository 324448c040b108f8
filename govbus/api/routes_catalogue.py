"""The catalogue: its registered entries, the proposals that change it and the yearly review
(Art. 4, 7, 8, 12, 13)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1/catalogue", tags=["catalogue"])
