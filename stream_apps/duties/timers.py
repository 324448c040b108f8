"""The facts of time: what the duties app's timers find at a moment ``now``, as control events.

Each sweep reads PostgreSQL as of ``now`` (the injected clock's, so that a test sets the day)
and returns the control events of what is due, with the deadline in the event's id:

- requests, cases and objections or complaints whose deadline falls within one working day
  (``*.due_soon``) or has passed (``*.overdue``; escalated, Art. 18, 20, 19, 29, 31). The
  deadlines are those stored with each row (working days on the official calendar, from
  ``GOVBUS_REQUEST_DEADLINE_DAYS``, ``GOVBUS_CASE_DEADLINE_DAYS``,
  ``GOVBUS_OBJECTION_DEADLINE_DAYS``, ``GOVBUS_COMPLAINT_DEADLINE_DAYS``); "overdue" is the
  ops exporter's rule: the deadline is before now;
- grants that expired (Art. 24) and commitments that expire within :data:`COMMITMENT_NOTICE`
  (Art. 24, 25);
- catalogue entries not reviewed within a year (Art. 13, ``proposals.reviews_due``) and
  resources stale against their update period (Art. 14, the ops exporter's staleness rule);
- on the first working day of a year (Asia/Shanghai), the year before's annual report and
  evaluation drafted (Art. 26, 28): :func:`yearly_reports`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from govbus.core import proposals, workdays
from govbus.stream_apps import ops_queries
from govbus.stream_apps.duties import store
from govbus.stream_apps.duties.events import ControlEvent
from govbus.stream_apps.duties.store import Conn

SHANGHAI = ZoneInfo("Asia/Shanghai")  # the measures' days are Beijing days
COMMITMENT_NOTICE = dt.timedelta(days=30)  # a month to renew before grants resting on it lapse
EXPIRED_WITHIN = dt.timedelta(days=7)  # an expiry older than this was told, or is history
#: (annual report, evaluation) of a year, at a moment: the report code the app is given
Drafter = Callable[[int, dt.datetime], dict[str, dict[str, Any]]]


def stamp(value: dt.datetime) -> str:
    """A deadline as it enters an event id: UTC, to the second."""
    return value.astimezone(dt.UTC).replace(microsecond=0).isoformat()


def horizon(now: dt.datetime) -> dt.datetime:
    """The end of the next working day after ``now`` (Beijing time): a deadline up to then is
    approaching."""
    return workdays.add_working_days(now.astimezone(SHANGHAI), 1)


def state(due: dt.datetime, now: dt.datetime) -> str:
    """``overdue`` once the deadline is before now, else ``due_soon``."""
    return "overdue" if due < now else "due_soon"


def _timed(kind: str, subject: str, due: dt.datetime, now: dt.datetime,
           data: dict[str, Any]) -> ControlEvent:
    return ControlEvent(f"{kind}.{state(due, now)}", subject, now, data, stamp(due))


def deadlines(conn: Conn, now: dt.datetime) -> list[ControlEvent]:
    """Requests, cases, objections and complaints due within a working day or overdue."""
    until = horizon(now)
    out = [_timed("request", f"request:{r['request_id']}", r["due_at"], now, r)
           for r in store.rows(conn, "SELECT request_id, requester, resource_id, purpose, "
                              "due_at FROM sharing_requests WHERE status = 'pending' "
                              "AND due_at <= %s ORDER BY request_id", (until,))]
    out += [_timed("case", f"case:{r['id']}", r["deadline"], now, r)
            for r in store.rows(conn, "SELECT id, owner_agency, other_agency, attribute, "
                                "entity_key, deadline FROM cases WHERE status = 'open' "
                                "AND deadline <= %s ORDER BY id", (until,))]
    out += [_timed(r["kind"], f"{r['kind']}:{r['id']}", r["deadline"], now, r)
            for r in store.rows(conn, "SELECT id, kind, filed_by, against_agency, handler, "
                                "resource, deadline FROM objections WHERE status = 'open' "
                                "AND deadline <= %s ORDER BY id", (until,))]
    return out


def expiries(conn: Conn, now: dt.datetime) -> list[ControlEvent]:
    """Grants that expired lately; commitments that expire soon."""
    out = [ControlEvent("grant.expired", f"grant:{r['grant_id']}", now, r,
                        stamp(r["valid_until"]))
           for r in store.rows(conn, "SELECT grant_id, recipient, resource_id, valid_until "
                               "FROM grants WHERE revoked_at IS NULL AND valid_until <= %s "
                               "AND valid_until > %s ORDER BY grant_id",
                               (now, now - EXPIRED_WITHIN))]
    if store.exists(conn, "commitments"):
        out += [ControlEvent("commitment.expiring", f"commitment:{r['number']}", now, r,
                             stamp(r["valid_until"]))
                for r in store.rows(conn, "SELECT number, kind, agency, valid_until "
                                    "FROM commitments WHERE withdrawn_at IS NULL "
                                    "AND valid_until > %s AND valid_until <= %s "
                                    "ORDER BY number", (now, now + COMMITMENT_NOTICE))]
    return out


def catalogue_upkeep(conn: Conn, dsn: str, now: dt.datetime) -> list[ControlEvent]:
    """Entries due for their yearly review (Art. 13), resources stale (Art. 14)."""
    out = []
    if store.exists(conn, "catalogue_reviews"):
        for r in proposals.reviews_due(dsn, as_of=now):
            last = (r["last_review"] or {}).get("reviewed_at") or r["registered_at"]
            out.append(ControlEvent("review.due", f"resource:{r['resource']}", now,
                                    {"resource_id": r["resource"], "last_reviewed": last},
                                    stamp(dt.datetime.fromisoformat(r["due_at"]))))
    with conn, conn.cursor() as cur:
        cur.execute(ops_queries.QUERIES["staleness"])
        found = cur.fetchall()
    verdicts = {(p, res): v for name, _, _, series in ops_queries.staleness(found, now)
                if name == "govbus_resource_stale" for p, res, v in series}
    for _provider, resource, period_s, last, registered in found:
        if verdicts.get((_provider, resource)) and (last or registered):
            since = (last or registered) + dt.timedelta(seconds=float(period_s))
            out.append(ControlEvent("resource.stale", f"resource:{resource}", now,
                                    {"resource_id": resource}, stamp(since)))
    return out


def first_working_day(year: int) -> dt.date:
    day = dt.date(year, 1, 1)
    while not workdays.is_workday(day):
        day += dt.timedelta(days=1)
    return day


def yearly_reports(conn: Conn, now: dt.datetime, drafter: Drafter) -> list[ControlEvent]:
    """On the first working day of a year (Beijing), the year before's annual report and
    evaluation drafted once (Art. 26, 28) and its control event; none on any other day."""
    today = now.astimezone(SHANGHAI).date()
    if today != first_working_day(today.year):
        return []
    year = today.year - 1
    if store.drafted(conn, year) != {"annual", "evaluation"}:
        for kind, body in drafter(year, now).items():
            store.draft(conn, year, kind, body)
    return [ControlEvent("reports.drafted", f"reports:{year}", now,
                         {"year": year, "kinds": ["annual", "evaluation"]})]


def sweep(conn: Conn, dsn: str, now: dt.datetime, drafter: Drafter | None, *,
          upkeep: bool = True) -> list[ControlEvent]:
    """The deadlines at ``now``; with ``upkeep`` the expiries, reviews and staleness too; with
    a ``drafter`` the yearly reports."""
    out = deadlines(conn, now)
    if upkeep:
        out += expiries(conn, now) + catalogue_upkeep(conn, dsn, now)
    if drafter is not None:
        out += yearly_reports(conn, now, drafter)
    return out
