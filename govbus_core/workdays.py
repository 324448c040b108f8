"""Working days on the official holiday calendar of the PRC (Art. 31 deadlines).

Uses ``chinese-calendar``, which follows the State Council's yearly holiday notices including
the adjusted working weekends. For a year it does not know yet, Monday to Friday count as
working days and ``calendar_known`` says so.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import chinese_calendar


def calendar_known(day: dt.date) -> bool:
    try:
        chinese_calendar.is_workday(day)
        return True
    except NotImplementedError:
        return False


@lru_cache(maxsize=4096)
def is_workday(day: dt.date) -> bool:
    """Cached: chinese-calendar 1.11 checks every date against the range of its whole table
    (24–40 µs per call here), and the reconciler counts the days of every case's deadline."""
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        return day.weekday() < 5


def add_working_days(start: dt.datetime, days: int) -> dt.datetime:
    """The deadline ``days`` working days after ``start``: the end of that working day."""
    day = start.date()
    left = days
    while left > 0:
        day += dt.timedelta(days=1)
        if is_workday(day):
            left -= 1
    end = dt.datetime.combine(day, dt.time(23, 59, 59))
    return end.replace(tzinfo=start.tzinfo)


def working_days_between(start: dt.date, end: dt.date) -> int:
    """Working days after ``start`` up to and including ``end`` (0 if end <= start)."""
    count, day = 0, start
    while day < end:
        day += dt.timedelta(days=1)
        count += is_workday(day)
    return count
