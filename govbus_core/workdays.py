"""Working days on the official holiday calendar of the PRC (Art. 20, 31 deadlines).

Working days follow the State Council's yearly notice (国务院办公厅关于某年部分节假日安排的通知):
its holidays are days off even on a weekday, its make-up working days (调休上班) are working
days even on a weekend. Two sources know the notices, per year:

* ``GOVBUS_HOLIDAYS_FILE``: a JSON file the information center keeps (docs/calendar.md). For a
  year it lists, the file alone decides, overriding the library for that year.
* ``chinese-calendar``, for every other year it knows (1.11: 2004 to 2026).

A year neither covers counts Monday to Friday. That is a wrong deadline whenever the year has a
holiday, so each such computation increments ``govbus_workday_calendar_fallback_total{year}``
(alert ``GovbusWorkdayCalendarMissing``) and the process logs it once per year. ``govbus
calendar check --year Y`` says which source covers a year.

The file is read once per process, on first use or by ``Settings.from_env`` at start-up; a bad
file is a :class:`HolidayFileError` naming the date, its line and the broken rule, never a
silently ignored one. After installing a new file, restart the processes.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import chinese_calendar
from chinese_calendar import constants as _library

from govbus.core.errors import ConfigError
from govbus.core.metrics import WORKDAY_FALLBACK
from govbus.core.settings_spec import env_value

log = logging.getLogger("govbus.workdays")

HOLIDAYS_FILE_ENV = "GOVBUS_HOLIDAYS_FILE"
FILE_FORMAT = "govbus-holidays/1"
LIBRARY_VERSION = str(getattr(chinese_calendar, "__version__", "unknown"))
LIBRARY_YEARS = range(min(_library.holidays).year, max(_library.holidays).year + 1)
#: the longest holiday of a notice is 8 or 9 days (National Day 2020, Spring Festival 2026)
MAX_HOLIDAY_DAYS = 15
_YEAR_RE = re.compile(r"^(19|20|21)\d\d$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

SOURCE_FILE, SOURCE_LIBRARY, SOURCE_NONE = "file", "library", "none"

#: the official calendar's days are Beijing's (China Standard Time, no daylight saving)
BEIJING = ZoneInfo("Asia/Shanghai")


class HolidayFileError(ConfigError):
    """The holiday file breaks its format; carries every problem found (date, line, rule)."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        head = f"holiday file {path} is refused"
        super().__init__(f"{head}: {problems[0]}" if len(problems) == 1 else
                         f"{head}, {len(problems)} problems:\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class YearCalendar:
    """One year of a notice: its holidays and make-up working days, each with its name."""

    year: int
    holidays: dict[dt.date, str]
    makeup_workdays: dict[dt.date, str]
    notice: str | None = None


@dataclass(frozen=True)
class HolidayFile:
    path: str
    years: dict[int, YearCalendar] = field(default_factory=dict)


# --- the file --------------------------------------------------------------------------------

class _Reader:
    """Checks the parsed JSON and says where each problem is: its JSON path, date and line."""

    def __init__(self, path: str, text: str) -> None:
        self.path, self.text = path, text
        self.problems: list[str] = []
        self._seen: dict[str, int] = {}

    def line_of(self, value: str) -> int | None:
        """The line of the next occurrence of the string ``value`` (values are read in the
        order of the document, so the n-th read is the n-th occurrence)."""
        token = json.dumps(value, ensure_ascii=False)
        start, n = -1, self._seen.get(token, 0)
        for _ in range(n + 1):
            start = self.text.find(token, start + 1)
            if start < 0:
                return None
        self._seen[token] = n + 1
        return self.text.count("\n", 0, start) + 1

    def fail(self, where: str, rule: str, line: int | None = None) -> None:
        self.problems.append(f"{'line ' + str(line) + ', ' if line else ''}{where}: {rule}")

    def date(self, raw: Any, where: str, year: int) -> tuple[dt.date | None, int | None]:
        if not isinstance(raw, str):
            self.fail(where, f"a date is a string YYYY-MM-DD, not {json.dumps(raw)}")
            return None, None
        line = self.line_of(raw)
        if not _DATE_RE.match(raw):
            self.fail(f"{where} {raw!r}", "a date is written YYYY-MM-DD", line)
            return None, line
        try:
            day = dt.date.fromisoformat(raw)
        except ValueError as exc:
            self.fail(f"{where} {raw}", f"no such date ({exc})", line)
            return None, line
        if day.year != year:
            self.fail(f"{where} {raw}", f"a date outside its year {year}: list it under "
                      f"\"{day.year}\" (that year's entry then decides all of {day.year})", line)
            return None, line
        return day, line

    def name(self, entry: dict[str, Any], where: str) -> str:
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            self.fail(where, "needs a \"name\" (the holiday, e.g. 春节), a non-empty string")
            return ""
        self.line_of(name)
        return name.strip()

    def keys(self, obj: dict[str, Any], where: str, allowed: Iterable[str]) -> None:
        unknown = sorted(set(obj) - set(allowed))
        if unknown:
            self.fail(where, f"unknown key(s) {', '.join(unknown)} (allowed: "
                      f"{', '.join(sorted(allowed))})")

    def year(self, year: int, entry: Any, where: str) -> YearCalendar | None:
        if not isinstance(entry, dict):
            self.fail(where, "a year is an object with \"holidays\" and \"makeup_workdays\"")
            return None
        self.keys(entry, where, ("notice", "holidays", "makeup_workdays"))
        notice = entry.get("notice")
        if notice is not None and not isinstance(notice, str):
            self.fail(f"{where}.notice", "the notice's title and number, a string")
        elif notice:
            self.line_of(notice)
        holidays: dict[dt.date, str] = {}
        raw_holidays = entry.get("holidays")
        if not isinstance(raw_holidays, list) or not raw_holidays:
            self.fail(f"{where}.holidays", "a non-empty list of holidays (every notice has "
                      "New Year's Day): a year without them would be covered by nothing")
            raw_holidays = []
        for i, item in enumerate(raw_holidays):
            at = f"{where}.holidays[{i}]"
            if not isinstance(item, dict):
                self.fail(at, "a holiday is {\"name\", \"from\", \"to\"} or {\"name\", \"date\"}")
                continue
            self.keys(item, at, ("name", "date", "from", "to"))
            name = self.name(item, at)
            if "date" in item and ("from" in item or "to" in item):
                self.fail(at, "either \"date\" (one day) or \"from\" and \"to\", not both")
                continue
            if "date" not in item and not ("from" in item and "to" in item):
                self.fail(at, "needs \"date\", or \"from\" and \"to\" (first and last day off)")
                continue
            first, line = self.date(item.get("date", item.get("from")),
                                    f"{at}.{'date' if 'date' in item else 'from'}", year)
            last, _ = (first, line) if "date" in item else self.date(item["to"], f"{at}.to",
                                                                     year)
            if first is None or last is None:
                continue
            if last < first:
                self.fail(f"{at} {first}..{last}", "\"to\" is before \"from\"", line)
                continue
            if (last - first).days + 1 > MAX_HOLIDAY_DAYS:
                self.fail(f"{at} {first}..{last}", f"{(last - first).days + 1} days off: a "
                          f"holiday of a notice is at most {MAX_HOLIDAY_DAYS} days", line)
                continue
            day = first
            while day <= last:
                if day in holidays:
                    self.fail(f"{at} {day}", f"listed twice as a holiday (also "
                              f"{holidays[day]})", line)
                holidays[day] = name
                day += dt.timedelta(days=1)
        makeup: dict[dt.date, str] = {}
        raw_makeup = entry.get("makeup_workdays")
        if not isinstance(raw_makeup, list):
            self.fail(f"{where}.makeup_workdays", "a list of make-up working days (调休上班), "
                      "[] when the notice has none")
            raw_makeup = []
        for i, item in enumerate(raw_makeup):
            at = f"{where}.makeup_workdays[{i}]"
            if not isinstance(item, dict):
                self.fail(at, "a make-up working day is {\"date\", \"name\"}")
                continue
            self.keys(item, at, ("name", "date"))
            worked, line = self.date(item.get("date"), f"{at}.date", year)
            name = self.name(item, at)
            if worked is None:
                continue
            if worked.weekday() < 5:
                self.fail(f"{at} {worked}", f"a make-up working day is a Saturday or Sunday, "
                          f"{worked} is a {worked.strftime('%A')} (a working day anyway)", line)
            elif worked in holidays:
                self.fail(f"{at} {worked}", f"both a holiday ({holidays[worked]}) and a make-up "
                          "working day", line)
            elif worked in makeup:
                self.fail(f"{at} {worked}", "listed twice as a make-up working day", line)
            makeup[worked] = name
        return YearCalendar(year, holidays, makeup, notice or None)


def parse_holidays(text: str, path: str = "<text>") -> HolidayFile:
    """Parse and check a holiday file's text; :class:`HolidayFileError` lists every problem."""
    reader = _Reader(path, text)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HolidayFileError(path, [f"line {exc.lineno}, column {exc.colno}: not valid "
                                      f"JSON ({exc.msg})"]) from exc
    if not isinstance(data, dict) or not isinstance(data.get("years"), dict):
        raise HolidayFileError(path, ["the file is an object {\"format\": \"" + FILE_FORMAT +
                                      "\", \"years\": {\"YYYY\": {...}}}"])
    reader.keys(data, "top level", ("format", "comment", "years"))
    if data.get("format", FILE_FORMAT) != FILE_FORMAT:
        reader.fail("format", f"{data['format']!r} is not {FILE_FORMAT!r}")
    years: dict[int, YearCalendar] = {}
    for key, entry in data["years"].items():
        where = f"years.{key}"
        if not _YEAR_RE.match(key):
            reader.fail(where, f"{key!r} is not a year (four digits, e.g. \"2027\")")
            continue
        reader.line_of(key)
        cal = reader.year(int(key), entry, where)
        if cal is not None:
            years[cal.year] = cal
    if reader.problems:
        raise HolidayFileError(path, reader.problems)
    return HolidayFile(path, years)


def load_holidays_file(path: str | Path) -> HolidayFile:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise HolidayFileError(str(path), ["no such file"]) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise HolidayFileError(str(path), [f"unreadable: {exc}"]) from exc
    return parse_holidays(text, str(path))


# --- the calendar of this process ------------------------------------------------------------

_loaded: dict[str, HolidayFile | None] = {}  # the file in use, by the path it was read from
_warned: set[int] = set()


def holidays_file() -> HolidayFile | None:
    """The file ``GOVBUS_HOLIDAYS_FILE`` names, read and checked once; None when unset."""
    return _holidays_at(env_value(HOLIDAYS_FILE_ENV))


def _holidays_at(path: Path | None) -> HolidayFile | None:
    key = str(path) if path else ""
    if key not in _loaded:
        if _loaded:  # another file than the one the cached answers came from
            reset_calendar()
        _loaded[key] = load_holidays_file(key) if key else None
    return _loaded[key]


def use_holidays_file(path: Path | None) -> Path | None:
    """For ``Settings.from_env``: the holiday file ``path`` (the setting's value) read and
    checked at start-up (fail closed), and this process's calendar from then on."""
    found = _holidays_at(path)
    return Path(found.path) if found else None


def reset_calendar() -> None:
    """Forget the file read and the cached answers (tests; a process reads its file once)."""
    _loaded.clear()
    _warned.clear()
    _decide.cache_clear()


def year_source(year: int, found: HolidayFile | None = None) -> str:
    """Which source decides the working days of ``year``: file, library or none (with the
    holiday file ``found``, default: this process's)."""
    found = found or holidays_file()
    if found and year in found.years:
        return SOURCE_FILE
    return SOURCE_LIBRARY if year in LIBRARY_YEARS else SOURCE_NONE


def _decide_in(found: HolidayFile | None, day: dt.date) -> tuple[bool, str]:
    """(working day?, source) of ``day`` with the holiday file ``found``."""
    if found and day.year in found.years:
        year = found.years[day.year]
        if day in year.holidays:
            return False, SOURCE_FILE
        return day in year.makeup_workdays or day.weekday() < 5, SOURCE_FILE
    if day.year in LIBRARY_YEARS:
        return bool(chinese_calendar.is_workday(day)), SOURCE_LIBRARY
    return day.weekday() < 5, SOURCE_NONE


@lru_cache(maxsize=4096)
def _decide(day: dt.date) -> tuple[bool, str]:
    """:func:`_decide_in` with this process's file. Cached: chinese-calendar 1.11 checks every
    date against the range of its whole table (24–40 µs per call here), and the reconciler
    counts the days of every case's deadline."""
    return _decide_in(holidays_file(), day)


def _fell_back(years: Iterable[int]) -> None:
    for year in years:
        WORKDAY_FALLBACK.labels(year=str(year)).inc()
        if year not in _warned:
            _warned.add(year)
            log.warning("工作日历未覆盖%d年：期限按周一至周五计算，节假日和调休上班未计入。请信息中心"
                        "按国务院办公厅%d年部分节假日安排的通知提供%s。/ No working-day calendar "
                        "covers %d (chinese-calendar %s knows %d-%d): deadlines count Monday to "
                        "Friday, holidays and make-up working days ignored; supply %s from the "
                        "State Council's notice for %d (docs/calendar.md).", year, year,
                        HOLIDAYS_FILE_ENV, year, LIBRARY_VERSION, LIBRARY_YEARS.start,
                        LIBRARY_YEARS.stop - 1, HOLIDAYS_FILE_ENV, year)


def calendar_known(day: dt.date) -> bool:
    """Whether the file or the library covers the year of ``day``."""
    return _decide(day)[1] != SOURCE_NONE


def is_workday(day: dt.date) -> bool:
    workday, source = _decide(day)
    if source == SOURCE_NONE:
        _fell_back([day.year])
    return workday


def add_working_days(start: dt.datetime, days: int) -> dt.datetime:
    """The deadline ``days`` working days after ``start``: the end of that working day in
    Beijing time, where the calendar's days are (an aware ``start`` is read in Beijing time
    and the deadline returned in ``start``'s zone; a naive one is taken as Beijing time)."""
    if start.tzinfo is not None:
        local = start.astimezone(BEIJING)
        return add_working_days(local.replace(tzinfo=None), days).replace(
            tzinfo=BEIJING).astimezone(start.tzinfo)
    day = start.date()
    left = days
    uncovered: set[int] = set()
    while left > 0:
        day += dt.timedelta(days=1)
        workday, source = _decide(day)
        if source == SOURCE_NONE:
            uncovered.add(day.year)
        if workday:
            left -= 1
    _fell_back(sorted(uncovered))
    end = dt.datetime.combine(day, dt.time(23, 59, 59))
    return end.replace(tzinfo=start.tzinfo)


def working_days_between(start: dt.date, end: dt.date) -> int:
    """Working days after ``start`` up to and including ``end`` (0 if end <= start)."""
    count, day = 0, start
    uncovered: set[int] = set()
    while day < end:
        day += dt.timedelta(days=1)
        workday, source = _decide(day)
        if source == SOURCE_NONE:
            uncovered.add(day.year)
        count += workday
    _fell_back(sorted(uncovered))
    return count


# --- one year, for `govbus calendar check` ---------------------------------------------------

def year_report(year: int, found: HolidayFile | None = None) -> dict[str, Any]:
    """Which source covers ``year``, its holidays and make-up working days, its working days
    (with the holiday file ``found``, default: this process's)."""
    found = found or holidays_file()
    source = year_source(year, found)
    holidays: dict[dt.date, str] = {}
    makeup: dict[dt.date, str] = {}
    notice = None
    if source == SOURCE_FILE and found:
        cal = found.years[year]
        holidays, makeup, notice = cal.holidays, cal.makeup_workdays, cal.notice
    elif source == SOURCE_LIBRARY:
        holidays = {d: str(n) for d, n in _library.holidays.items() if d.year == year}
        makeup = {d: str(n) for d, n in _library.workdays.items() if d.year == year}
    first, last = dt.date(year, 1, 1), dt.date(year, 12, 31)
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    working = sum(_decide_in(found, d)[0] for d in days)

    def rows(table: dict[dt.date, str]) -> list[dict[str, str]]:
        return [{"date": d.isoformat(), "weekday": _WEEKDAYS[d.weekday()], "name": table[d]}
                for d in sorted(table)]

    return {"year": year, "source": source, "covered": source != SOURCE_NONE,
            "file": found.path if found else None, "notice": notice,
            "library": {"package": "chinese-calendar", "version": LIBRARY_VERSION,
                        "first_year": LIBRARY_YEARS.start, "last_year": LIBRARY_YEARS.stop - 1},
            "days": len(days), "working_days": working,
            "weekdays_off": sum(1 for d in holidays if d.weekday() < 5),
            "holidays": rows(holidays), "makeup_workdays": rows(makeup),
            "file_entry": file_entry(holidays, makeup, notice) if holidays else None}


def file_entry(holidays: dict[dt.date, str], makeup: dict[dt.date, str],
               notice: str | None) -> dict[str, Any]:
    """A year in the holiday file's format: consecutive days of one name become one range."""
    ranges: list[dict[str, str]] = []
    for day in sorted(holidays):
        last = ranges[-1] if ranges else None
        if (last and last["name"] == holidays[day]
                and dt.date.fromisoformat(last["to"]) + dt.timedelta(days=1) == day):
            last["to"] = day.isoformat()
        else:
            ranges.append({"name": holidays[day], "from": day.isoformat(),
                           "to": day.isoformat()})
    entry: dict[str, Any] = {"notice": notice} if notice else {}
    entry["holidays"] = ranges
    entry["makeup_workdays"] = [{"date": d.isoformat(), "name": makeup[d]} for d in sorted(makeup)]
    return entry
