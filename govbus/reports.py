"""The yearly evaluation of each agency (Art. 28) and the city's sharing report (Art. 26).

Both read PostgreSQL only: the catalogue, the gate's daily counts (``event_counts``, migration
0005), the delivery log, requests and filings, and, once the reconciler is deployed, ``cases``
and ``objections`` (absent tables count as zero, and the report says so). The arithmetic is in
:mod:`govbus.report_calc`. Times are UTC; a year is 1 January 00:00 to 1 January 00:00, cut at
the moment of the report while the year runs.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extensions

from govbus import report_calc as calc
from govbus.core import db, sharing_store
from govbus.core.errors import DatabaseError, GovbusError


class ReportError(GovbusError):
    """A report cannot be made for what was asked (a year not begun, no database)."""


@dataclass(frozen=True)
class Window:
    year: int
    start: dt.datetime
    end: dt.datetime  # exclusive: 1 January of the next year, or now

    @property
    def days(self) -> tuple[dt.date, dt.date]:
        return self.start.date(), self.last.date() \
            + dt.timedelta(days=1)

    @property
    def last(self) -> dt.datetime:
        """The window's last instant (PostgreSQL keeps microseconds)."""
        return self.end - dt.timedelta(microseconds=1)

    def as_dict(self) -> dict[str, Any]:
        return {"year": self.year, "from": self.start.isoformat(), "to": self.end.isoformat()}


def window(year: int, now: dt.datetime | None = None) -> Window:
    now = now or dt.datetime.now(dt.UTC)
    start = dt.datetime(year, 1, 1, tzinfo=dt.UTC)
    if not 2000 <= year <= 9998 or start > now:
        raise ReportError(f"--year {year}: the year has not begun (or is out of range); "
                          f"reports cover {2000}..{now.year}")
    return Window(year, start, min(dt.datetime(year + 1, 1, 1, tzinfo=dt.UTC), now))


class Source:
    """Queries over one connection; knows which optional tables exist."""

    def __init__(self, conn: psycopg2.extensions.connection, win: Window) -> None:
        self.conn, self.win = conn, win
        if not self.one("SELECT to_regclass('catalogue_resources') IS NOT NULL")[0]:
            raise ReportError("this database holds no govbus catalogue: run `govbus up` or "
                              "`govbus catalogue sync` against it first")
        self.present = {t: bool(self.one("SELECT to_regclass(%s) IS NOT NULL", (t,))[0])
                        for t in ("cases", "objections", "event_counts")}
        self.notes = [f"no `{t}` table yet ({why}): counted as zero"
                      for t, why in (("cases", "reconciliation not deployed"),
                                     ("objections", "objections not deployed"),
                                     ("event_counts", "migration 0005 not applied"))
                      if not self.present[t]]

    def rows(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())

    def one(self, sql: str, params: Any = ()) -> tuple[Any, ...]:
        return self.rows(sql, params)[0]

    def span(self) -> tuple[dt.datetime, dt.datetime]:
        return self.win.start, self.win.end

    def resources(self) -> list[tuple[str, str, float, dt.datetime | None, str, str]]:
        """(resource, provider, period seconds, registered, database class, share class)."""
        return [tuple(r) for r in self.rows(  # type: ignore[misc]
            "SELECT c.resource_id, c.provider, extract(epoch FROM c.update_period)::float8, "
            "(SELECT min(s.registered_at) FROM schema_versions s "
            " WHERE s.resource_id = c.resource_id), c.database_class, c.share_class "
            "FROM catalogue_resources c ORDER BY c.resource_id")]

    def counts(self) -> list[tuple[str, str, str, str, dt.date, int]]:
        """(agency, resource, outcome, rule, day, events) within the window."""
        if not self.present["event_counts"]:
            return []
        first, last = self.win.days
        return [tuple(r) for r in self.rows(  # type: ignore[misc]
            "SELECT agency, resource_id, outcome, rule, day, events FROM event_counts "
            "WHERE day >= %s AND day < %s", (first, last))]

    def last_changes(self) -> dict[str, dt.datetime]:
        """Each resource's last accepted change before the window's end."""
        if not self.present["event_counts"]:
            return {}
        return dict(self.rows("SELECT resource_id, max(last_at) FROM event_counts "  # type: ignore[arg-type]
                              "WHERE outcome = 'accepted' AND last_at < %s GROUP BY 1",
                              (self.win.end,)))

    def deliveries(self) -> list[tuple[str, str, str, int, int]]:
        """(provider, recipient, channel, month, count) within the window."""
        return [tuple(r) for r in self.rows(  # type: ignore[misc]
            "SELECT provider, recipient, channel, extract(month FROM delivered_at "
            "AT TIME ZONE 'UTC')::int, count(*) FROM deliveries "
            "WHERE delivered_at >= %s AND delivered_at < %s GROUP BY 1, 2, 3, 4", self.span())]

    def requests(self, provider_decides: bool = False
                 ) -> list[tuple[str, str, dt.datetime, dt.datetime | None, dt.datetime]]:
        """(provider, status, requested, decided, due) of requests filed in the window;
        ``provider_decides``: only on-application ones (the others the platform decides at
        once, Art. 15, 18, so they say nothing of the provider's responsiveness)."""
        only = " AND r.share_class = 'on_application'" if provider_decides else ""
        return [tuple(r) for r in self.rows(  # type: ignore[misc]
            "SELECT c.provider, r.status, r.requested_at, r.decided_at, r.due_at "
            "FROM sharing_requests r JOIN catalogue_resources c USING (resource_id) "
            "WHERE r.requested_at >= %s AND r.requested_at < %s" + only, self.span())]

    def objections(self) -> list[tuple[str, str, dt.datetime, dt.datetime | None, dt.datetime]]:
        """(against agency, kind, filed, answered, deadline); withdrawn ones left out."""
        if not self.present["objections"]:
            return []
        return [tuple(r) for r in self.rows(  # type: ignore[misc]
            "SELECT against_agency, kind, filed_at, answered_at, deadline FROM objections "
            "WHERE status <> 'withdrawn' AND filed_at >= %s AND filed_at < %s", self.span())]

    def cases(self) -> list[tuple[str, str | None, dt.datetime, dt.datetime | None,
                                  dt.datetime]]:
        """(owner agency, other agency, opened, closed, deadline)."""
        if not self.present["cases"]:
            return []
        return [tuple(r) for r in self.rows(  # type: ignore[misc]
            "SELECT owner_agency, other_agency, opened_at, closed_at, deadline FROM cases "
            "WHERE opened_at >= %s AND opened_at < %s", self.span())]


def _connect(dsn: str) -> psycopg2.extensions.connection:
    try:
        return db.connect(dsn)
    except DatabaseError as exc:
        raise ReportError(str(exc)) from exc


def evaluation(dsn: str, year: int, now: dt.datetime | None = None) -> dict[str, Any]:
    """Per agency: quantity, quality, timeliness, responsiveness (Art. 28)."""
    win = window(year, now)
    conn = _connect(dsn)
    try:
        src = Source(conn, win)
        agencies = _evaluate(src)
    except psycopg2.Error as exc:
        raise ReportError(f"cannot read the evaluation data: {exc}") from exc
    finally:
        conn.close()
    return win.as_dict() | {"notes": src.notes, "agencies": agencies}


def _evaluate(src: Source) -> list[dict[str, Any]]:
    win = src.win
    first = win.start.date()
    resources = src.resources()
    counts, changes = src.counts(), src.last_changes()
    update_days: dict[str, set[dt.date]] = defaultdict(set)
    events: dict[str, dict[str, int]] = defaultdict(lambda: {"accepted": 0, "rejected": 0})
    for agency, resource, outcome, _rule, day, n in counts:
        events[agency][outcome] += n
        if outcome == "accepted":
            update_days[resource].add(day)
    out_by: dict[str, int] = defaultdict(int)
    in_by: dict[str, int] = defaultdict(int)
    for provider, recipient, _channel, _month, n in src.deliveries():
        out_by[provider] += n
        in_by[recipient] += n
    requests: dict[str, list[calc.Timed]] = defaultdict(list)
    for provider, _status, asked, decided, due in src.requests(provider_decides=True):
        requests[provider].append((asked, decided, due))
    objections: dict[str, list[calc.Timed]] = defaultdict(list)
    for against, _kind, filed, answered, deadline in src.objections():
        objections[against].append((filed, answered, deadline))
    cases: dict[str, list[calc.Timed]] = defaultdict(list)
    conflicts: dict[str, int] = defaultdict(int)
    for owner, other, opened, closed, deadline in src.cases():
        cases[owner].append((opened, closed, deadline))
        if other:
            conflicts[other] += 1
    owned = defaultdict(list)
    for r in resources:
        owned[r[1]].append(r)
    names = sorted(set(owned) | set(events) | set(out_by) | set(in_by) | set(requests)
                   | set(objections) | set(cases) | set(conflicts))
    result = []
    for agency in names:
        on_time = windows = 0
        stale = []
        for resource, _provider, period_s, registered, _db_class, _share in owned[agency]:
            begin = max(first, registered.date()) if registered else first
            hit, total = calc.timeliness(update_days[resource], period_s, begin, win.end)
            on_time, windows = on_time + hit, windows + total
            if calc.is_stale(changes.get(resource), registered, period_s, win.end):
                stale.append(resource)
        accepted, rejected = events[agency]["accepted"], events[agency]["rejected"]
        resp = {"requests": calc.responsiveness(requests[agency], win.end),
                "objections": calc.responsiveness(objections[agency], win.end),
                "cases": calc.responsiveness(cases[agency], win.end)}
        result.append({
            "agency": agency,
            "quantity": {"resources": len(owned[agency]), "events": accepted + rejected,
                         "accepted": accepted, "deliveries_out": out_by[agency],
                         "deliveries_in": in_by[agency]},
            "quality": {"rejected": rejected,
                        "rejection_rate": calc.ratio(rejected, accepted + rejected),
                        "conflicts": conflicts[agency]},
            "timeliness": {"windows": windows, "on_time": on_time,
                           "rate": calc.ratio(on_time, windows),
                           "stale_resources": len(stale), "stale": stale},
            "responsiveness": {k: v.as_dict() for k, v in resp.items()}
            | {"on_time_rate": calc.on_time_share(resp.values())},
        })
    return result


def annual(dsn: str, year: int, now: dt.datetime | None = None) -> dict[str, Any]:
    """The city's sharing in the year (Art. 26), with the delivery log's head to anchor."""
    win = window(year, now)
    conn = _connect(dsn)
    try:
        src = Source(conn, win)
        body = _annual(src)
    except psycopg2.Error as exc:
        raise ReportError(f"cannot read the annual report data: {exc}") from exc
    finally:
        conn.close()
    return win.as_dict() | {"notes": src.notes} | body


def _annual(src: Source) -> dict[str, Any]:
    win = src.win
    resources = src.resources()
    by_class: dict[str, int] = defaultdict(int)
    by_share: dict[str, int] = defaultdict(int)
    for r in resources:
        by_class[r[4]] += 1
        by_share[r[5]] += 1
    accepted = rejected = 0
    events_by_month: dict[int, int] = defaultdict(int)
    for _agency, _resource, outcome, _rule, day, n in src.counts():
        if outcome == "accepted":
            accepted += n
            events_by_month[day.month] += n
        else:
            rejected += n
    deliveries = src.deliveries()
    by_channel: dict[str, int] = defaultdict(int)
    deliveries_by_month: dict[int, int] = defaultdict(int)
    for _p, _r, channel, month, n in deliveries:
        by_channel[channel] += n
        deliveries_by_month[month] += n
    status: dict[str, int] = defaultdict(int)
    for _provider, st, *_ in src.requests():
        status[st] += 1
    revoked = src.one("SELECT count(*) FROM filings WHERE decision = 'revoked' "
                      "AND decided_at >= %s AND decided_at < %s", src.span())[0]
    with src.conn.cursor() as cur:  # in force at the window's last instant (Grant.in_force)
        in_force = sum(g.in_force(win.last) for g in sharing_store.read_grants(cur))
    cases = src.cases()
    objections = src.objections()
    changes = src.last_changes()
    stale = [r[0] for r in resources if calc.is_stale(changes.get(r[0]), r[3], r[2], win.end)]
    heads = src.rows("SELECT shard, seq, row_hash FROM delivery_log_head ORDER BY shard")
    head = [(seq, h) for s, seq, h in heads if s == ""]  # the legacy shard's
    months = range(1, 13)
    return {
        "catalogue": {"resources": len(resources),
                      "providers": len({r[1] for r in resources}),
                      "by_database_class": dict(sorted(by_class.items())),
                      "by_share_class": dict(sorted(by_share.items()))},
        "events": {"accepted": accepted, "rejected": rejected,
                   "rejection_rate": calc.ratio(rejected, accepted + rejected),
                   "accepted_by_month": [events_by_month[m] for m in months]},
        "deliveries": {"total": sum(by_channel.values()), "by_channel": dict(by_channel),
                       "pairs": len({(p, r) for p, r, *_ in deliveries}),
                       "by_month": [deliveries_by_month[m] for m in months]},
        "requests": {"filed": sum(status.values()), **{s: status[s] for s in
                     ("granted", "rejected", "refused", "pending")}, "revoked": revoked,
                     "grants_in_force_at_end": in_force},
        "cases": {"opened": len(cases), "closed": sum(c[3] is not None for c in cases),
                  "open_at_end": sum(c[3] is None or c[3] >= win.end for c in cases)},
        "objections": {"objections": sum(o[1] == "objection" for o in objections),
                       "complaints": sum(o[1] == "complaint" for o in objections),
                       "answered": sum(o[3] is not None and o[3] < win.end
                                       for o in objections)},
        "stale_at_end": stale,
        "delivery_log_head": {"seq": head[0][0], "row_hash": head[0][1]} if head else None,
        # every shard's head (the ingest partitions', query's, backfill's), to anchor outside
        "delivery_log_heads": {s: {"seq": seq, "row_hash": h} for s, seq, h in heads},
    }
