"""Reports: the Art. 18 filings, the yearly evaluation (Art. 28) and the city's yearly report
(Art. 26). The municipal office receives them and the information center makes them: both
read them whole. An agency reads the filings it is party to (as requester or provider) and
its own row of the evaluation; the city's report is the office's and the center's."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from govbus.api.auth import Caller, caller
from govbus.api.deps import dsn
from govbus.core.errors import ForbiddenError

router = APIRouter(prefix="/v1/reports", tags=["reports"])

Format = Literal["json", "csv"]
YEAR = Query(None, ge=2000, le=9998, description="default: this year")


def _year(year: int | None) -> int:
    return year or dt.datetime.now(dt.UTC).year


def _csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ",".join(map(str, v)) if isinstance(v, list) else v
                             for k, v in row.items()})
    return out.getvalue()


def _as_csv(text: str, name: str) -> Response:
    return Response(text, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


@router.get("/filings", summary="responses to sharing requests filed with the municipal office "
            "(Art. 18); an agency: those it is party to", response_model=None)
def filings(request: Request, who: Caller = Depends(caller),
            year: int | None = Query(None, ge=2000, le=9998, description="default: every year"),
            format: Format = "json") -> list[dict[str, Any]] | Response:
    from govbus.core import sharing_store

    rows = sharing_store.list_filings(dsn(request), year)
    if not who.oversees:
        rows = [r for r in rows if who.agency in (r["requester"], r["provider"])]
    return _as_csv(_csv(rows), f"filings-{year or 'all'}") if format == "csv" else rows


@router.get("/evaluation", summary="each agency's quantity, quality, timeliness and "
            "responsiveness in a year (Art. 28); an agency: its own row", response_model=None)
def evaluation(request: Request, who: Caller = Depends(caller), year: int | None = YEAR,
               format: Format = "json") -> dict[str, Any] | Response:
    from govbus import report_render, reports

    report = reports.evaluation(dsn(request), _year(year))
    if not who.oversees:
        report["agencies"] = [a for a in report["agencies"] if a["agency"] == who.agency]
    if format == "csv":
        return _as_csv(report_render.evaluation_csv(report), f"evaluation-{report['year']}")
    return report


@router.get("/annual", summary="the city's sharing in a year (Art. 26): the municipal office "
            "and the information center")
def annual(request: Request, who: Caller = Depends(caller),
           year: int | None = YEAR) -> dict[str, Any]:
    from govbus import reports

    if not who.oversees:
        raise ForbiddenError(f"the city's annual report (Art. 26) is the municipal office's and "
                             f"the information center's, not {who.agency}'s; an agency reads "
                             "its own row of /v1/reports/evaluation (Art. 28)",
                             rule="access.oversight_only", article="Art. 26")
    return reports.annual(dsn(request), _year(year))
