"""An agency's notices (Art. 18): what the control plane told it — a request to decide as
provider, a decision on its request, a grant of its revoked — read by the agency (the
information center and the office read any agency's) and acknowledged by the recipient only."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from govbus.api.auth import Caller, caller
from govbus.api.deps import dsn

router = APIRouter(prefix="/v1", tags=["notices"])


@router.get("/notices", summary="the caller's notices, newest first")
def list_notices(request: Request, who: Caller = Depends(caller),
                 agency: str | None = Query(None, max_length=64),
                 unread: bool = Query(False, description="only those not acknowledged"),
                 limit: int = Query(100, ge=1, le=10_000)) -> list[dict[str, Any]]:
    from govbus.core import notices

    return notices.listing(dsn(request), who.reads_for(agency), unread, limit)


@router.post("/notices/{notice_id}/ack", summary="acknowledge a notice (its recipient only; "
             "again: unchanged)")
def ack_notice(notice_id: int, request: Request,
               who: Caller = Depends(caller)) -> dict[str, Any]:
    from govbus.core import notices

    return notices.acknowledge(dsn(request), notice_id, who.agency)
