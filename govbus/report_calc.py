"""The arithmetic of the yearly evaluation (Art. 28), pure: no database, unit-tested.

Definitions (the README repeats them, so an agency can check its own figures):

- **timeliness**: each resource's year (up to the report date) is cut into consecutive windows
  of its catalogued update period, starting on 1 January; a window is *on time* when at least
  one accepted change fell in it. Timeliness = on-time windows / windows (Art. 14). Periods
  shorter than a day count as a day (the gate's counts are daily). Windows start at
  the resource's registration when that is later than 1 January; a window still running at
  the report date counts only once it has a change.
- **stale at year end**: the last accepted change (or, for a resource that never changed, its
  registration) is older than one update period at the end of the window (Art. 14, 31).
- **responsiveness**: for requests, objections and cases, how many were answered, the median
  and mean time to answer in hours, and how many were *late*: answered after their deadline,
  or still unanswered with the deadline passed (Art. 18, 20, 29, 31).
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

DAY = 86400.0


def period_days(period_seconds: float) -> int:
    """An update period in whole days, at least one."""
    return max(1, math.ceil(period_seconds / DAY - 1e-9))


def timeliness(update_days: Iterable[dt.date], period_s: float, start: dt.date,
               end: dt.datetime) -> tuple[int, int]:
    """(on-time windows, windows) from ``start`` (00:00 UTC) to ``end`` (exclusive).

    A window still running at ``end`` counts only once it has a change: it cannot be missed
    before it is over.
    """
    days = period_days(period_s)
    begin = dt.datetime.combine(start, dt.time(), tzinfo=dt.UTC)
    if end <= begin:
        return 0, 0
    complete = int((end - begin).total_seconds() // (days * DAY))
    hit = {(d - start).days // days for d in update_days
           if start <= d and dt.datetime.combine(d, dt.time(), tzinfo=dt.UTC) < end}
    return len(hit), complete + int(complete in hit)


def is_stale(last_change: dt.datetime | None, registered: dt.datetime | None,
             period_s: float, at: dt.datetime) -> bool:
    """Whether the resource had no change within one period before ``at``."""
    since = last_change or registered
    if since is None or since > at:
        return False  # not catalogued yet at that time: no duty yet
    return (at - since).total_seconds() > period_s


@dataclass
class Response:
    """How an agency answered one kind of duty (requests, objections, cases)."""

    count: int = 0
    answered: int = 0
    late: int = 0
    median_hours: float | None = None
    mean_hours: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Timed = tuple[dt.datetime, dt.datetime | None, dt.datetime | None]  # opened, answered, due


def responsiveness(items: Iterable[Timed], at: dt.datetime) -> Response:
    """Answered, late, and time to answer of the items opened in the window."""
    out = Response()
    hours: list[float] = []
    for opened, answered, due in items:
        out.count += 1
        if answered is not None and answered <= at:
            out.answered += 1
            hours.append((answered - opened).total_seconds() / 3600)
            out.late += int(due is not None and answered > due)
        else:
            out.late += int(due is not None and due < at)
    if hours:
        out.median_hours = round(statistics.median(hours), 2)
        out.mean_hours = round(statistics.fmean(hours), 2)
    return out


def ratio(part: float, whole: float) -> float | None:
    """``part / whole`` rounded to 4 places, None when there is no whole."""
    return round(part / whole, 4) if whole else None


def on_time_share(responses: Iterable[Response]) -> float | None:
    """Share of all items that are not late (answered in time, or not yet due)."""
    items = list(responses)
    total = sum(r.count for r in items)
    return ratio(total - sum(r.late for r in items), total)
