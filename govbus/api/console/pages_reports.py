"""Catalogue proposals (Art. 13), the evaluation (Art. 28), the annual report (Art. 26), the
delivery log's verification and operations, through the API's route functions."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from confluent_kafka import KafkaException
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from govbus.api import routes_catalogue, routes_reports, routes_sharing
from govbus.api.console.web import ConsoleRoute, Session, form, render, see_other, signed_in

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


@router.get("/proposals")
def proposals_page(request: Request, session: Session = Depends(signed_in)) -> Response:
    rows = routes_catalogue.list_proposals(request, session.who, None, None, None)
    return render(request, "proposals.html", session, rows=rows)


@router.post("/proposals/{proposal_id}/decide")
async def decide_proposal(proposal_id: int, request: Request,
                          session: Session = Depends(signed_in)) -> Response:
    posted = await form(request, session.csrf)
    reason = posted.one("reason")
    if posted.one("decision") == "approve":
        approve = routes_catalogue.ApproveIn(reason=reason)
        await run_in_threadpool(routes_catalogue.approve, proposal_id, approve, request,
                                session.who)
    else:
        reject = routes_catalogue.RejectIn(reason=reason or "")
        await run_in_threadpool(routes_catalogue.reject, proposal_id, reject, request,
                                session.who)
    return see_other("/proposals")


def bars(items: list[tuple[str, float | None]]) -> list[dict[str, Any]]:
    """Horizontal bars for an inline SVG: label, value and width in percent of the largest;
    a value of None (nothing to measure) has no bar."""
    top = max((v for _, v in items if v is not None), default=0) or 1
    return [{"label": k, "value": v, "width": 0 if v is None else round(100 * v / top, 1)}
            for k, v in items]


def flows(deliveries: list[dict[str, Any]]) -> dict[str, Any]:
    """Deliveries between agencies as a picture: providers on the left, recipients on the
    right, one line per pair, its width by count."""
    pairs = Counter((d.get("provider") or "?", d.get("recipient") or "?") for d in deliveries)
    left = sorted({p for p, _ in pairs})
    right = sorted({r for _, r in pairs})
    top = max(pairs.values(), default=1)
    step = 36
    lines = [{"from": p, "to": r, "count": n, "y1": 24 + step * left.index(p),
              "y2": 24 + step * right.index(r), "width": 1 + round(7 * n / top, 1)}
             for (p, r), n in sorted(pairs.items())]
    height = 24 + step * max(len(left), len(right), 1)
    return {"left": [(a, 24 + step * i) for i, a in enumerate(left)],
            "right": [(a, 24 + step * i) for i, a in enumerate(right)],
            "lines": lines, "height": height}


FLOW_ROWS = 10_000  # the latest deliveries the flow picture counts (the API's largest page)


def _percent(value: Any) -> float | None:
    return 100 * float(value) if isinstance(value, int | float) else None


@router.get("/reports")
def reports_page(request: Request, session: Session = Depends(signed_in),
                 year: int | None = Query(None, ge=2000, le=9998),
                 verify: bool = False) -> Response:
    who = session.who
    evaluation = routes_reports.evaluation(request, who, year, "json")
    assert isinstance(evaluation, dict)
    agencies = evaluation["agencies"]
    charts = {
        "timeliness": bars([(a["agency"], _percent(a["timeliness"]["rate"]))
                            for a in agencies]),
        "responsiveness": bars([(a["agency"], _percent(a["responsiveness"]["on_time_rate"]))
                                for a in agencies]),
        "deliveries": bars([(a["agency"], a["quantity"]["deliveries_out"]) for a in agencies]),
    }
    annual = routes_reports.annual(request, who, year) if who.oversees else None
    if who.oversees:
        shown = routes_sharing.deliveries(request, who, None, None, None, FLOW_ROWS)
    else:  # what it received and what it provided
        shown = (routes_sharing.deliveries(request, who, who.agency, None, None, FLOW_ROWS)
                 + routes_sharing.deliveries(request, who, None, who.agency, None, FLOW_ROWS))
    return render(request, "reports.html", session, evaluation=evaluation, annual=annual,
                  charts=charts, flow=flows(shown), year=evaluation.get("year"),
                  log=_log_state(request, verify and who.oversees))


def _log_state(request: Request, verify: bool) -> dict[str, Any]:
    """The latest checkpoint and, when asked (it walks every chain), the log's verification."""
    from govbus import delivery_log
    from govbus.api.deps import dsn, settings
    from govbus.core.keyring import checkpoint_publics
    from govbus.delivery_log import checkpoint_store
    from govbus.delivery_log.checkpoint_store import EPOCH
    from govbus.delivery_log.checkpoints import check_series

    url = dsn(request)
    recorded = checkpoint_store.list_checkpoints(url)
    latest = recorded[-1] if recorded else None
    out: dict[str, Any] = {"latest": None, "verified": None}
    if latest is not None:
        out["latest"] = {"number": latest.number,
                         "at": EPOCH + dt.timedelta(microseconds=latest.at_us)}
    if verify:
        valid, findings = check_series(recorded, checkpoint_publics(settings(request), url,
                                                                    None))
        report = delivery_log.verify(url, checkpoints=valid)
        out["verified"] = {"ok": report.ok and not findings, "rows": report.rows,
                           "problems": len(report.problems) + len(findings)}
    return out


@router.get("/reports/evaluation.csv")
def evaluation_csv(request: Request, session: Session = Depends(signed_in),
                   year: int | None = Query(None, ge=2000, le=9998)) -> Response:
    out = routes_reports.evaluation(request, session.who, year, "csv")
    assert isinstance(out, Response)
    return out


#: how far back the operations page counts the gate's rejections
REJECTIONS_DAYS = 30


def rejections(dsn: str, agency: str | None, days: int = REJECTIONS_DAYS
               ) -> list[dict[str, Any]]:
    """Events the gate sent to the DLQ in the last ``days`` days, by agency and first violated
    rule, from its durable daily counts (``event_counts``); ``agency`` None: every agency's."""
    import psycopg2

    from govbus.core import db
    from govbus.core.errors import DatabaseError

    since = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days)
    try:
        with db.transaction(dsn) as conn, conn.cursor() as cur:
            cur.execute("""SELECT agency, rule, sum(events)::bigint, max(last_at)
                           FROM event_counts WHERE outcome = 'rejected' AND day >= %s
                             AND (%s::text IS NULL OR agency = %s)
                           GROUP BY agency, rule ORDER BY 3 DESC, 1, 2""",
                        (since, agency, agency))
            return [{"agency": a, "rule": r or "?", "events": n, "last_at": t}
                    for a, r, n, t in cur.fetchall()]
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot read the gate's counts: {exc}") from exc


@router.get("/operations")
def operations_page(request: Request, session: Session = Depends(signed_in)) -> Response:
    from govbus.api.deps import dsn

    who = session.who
    evaluation = routes_reports.evaluation(request, who, None, "json")
    assert isinstance(evaluation, dict)
    stale = [(a["agency"], r) for a in evaluation["agencies"] for r in a["timeliness"]["stale"]]
    dlq = rejections(dsn(request), who.reads_for(None))
    return render(request, "operations.html", session, stale=stale, dlq=dlq,
                  days=REJECTIONS_DAYS, lag=consumer_lag(request) if who.oversees else None)


def consumer_lag(request: Request) -> list[dict[str, Any]] | str:
    """Each consumer group's records not yet processed (the sum over its partitions of the
    high watermark less its committed offset), as the ops exporter measures it; the reason
    when the broker cannot be asked. For the information center and the municipal office."""
    from govbus.api.deps import settings
    from govbus.core.errors import GovbusError
    from govbus.stream_apps.ops_exporter import consumer_offsets

    try:
        found = consumer_offsets(settings(request), timeout=3.0)
    except (GovbusError, KafkaException) as exc:
        return str(exc)
    return [{"group": group, "lag": end - done, "committed": done}
            for group, (done, end) in sorted(found.items())]
