"""Working days of deadlines (Art. 20, 31): the library, the holiday file, the fallback."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chinese_calendar
import pytest
from prometheus_client import REGISTRY

from govbus.core import workdays
from govbus.core.config import Settings
from govbus.core.workdays import (
    BEIJING,
    HolidayFileError,
    add_working_days,
    is_workday,
    load_holidays_file,
    parse_holidays,
    working_days_between,
    year_source,
)

EXAMPLE = Path(__file__).resolve().parents[3] / "infra" / "holidays.example.json"
#: a made-up year far ahead, so no test date is mistaken for a real notice: 2099-01-01 is a
#: Thursday; 1-3 January off, Sunday 4 January worked; 2099-05-01 (Friday) off
SYNTHETIC = {"format": "govbus-holidays/1", "years": {"2099": {
    "notice": "test data, not a notice",
    "holidays": [{"name": "元旦", "from": "2099-01-01", "to": "2099-01-03"},
                 {"name": "劳动节", "date": "2099-05-01"}],
    "makeup_workdays": [{"date": "2099-01-04", "name": "元旦"}]}}}


@pytest.fixture(autouse=True)
def _calendar(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(workdays.HOLIDAYS_FILE_ENV, raising=False)
    workdays.reset_calendar()
    yield
    workdays.reset_calendar()


def write(tmp_path: Path, data: Any, name: str = "holidays.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else
                    json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def use(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    monkeypatch.setenv(workdays.HOLIDAYS_FILE_ENV, str(path))
    workdays.reset_calendar()


def fallbacks(year: int) -> float:
    return REGISTRY.get_sample_value("govbus_workday_calendar_fallback_total",
                                     {"year": str(year)}) or 0.0


# --- the library -------------------------------------------------------------------------

def test_library_make_up_saturday_is_a_working_day_and_a_holiday_weekday_is_not() -> None:
    assert dt.date(2026, 2, 14).weekday() == 5 and is_workday(dt.date(2026, 2, 14))
    assert dt.date(2026, 10, 1).weekday() == 3 and not is_workday(dt.date(2026, 10, 1))
    assert year_source(2026) == "library"
    # Friday 2026-02-13 + 1: the make-up Saturday 14 February
    assert add_working_days(dt.datetime(2026, 2, 13, 9), 1).date() == dt.date(2026, 2, 14)


def test_the_example_file_is_the_librarys_2026() -> None:
    example = load_holidays_file(EXAMPLE)
    assert set(example.years) == {2026}
    cal = example.years[2026]
    library_holidays = {d for d in chinese_calendar.constants.holidays if d.year == 2026}
    library_makeup = {d for d in chinese_calendar.constants.workdays if d.year == 2026}
    assert set(cal.holidays) == library_holidays
    assert set(cal.makeup_workdays) == library_makeup
    day = dt.date(2026, 1, 1)
    while day.year == 2026:
        assert workdays._decide_in(example, day) == (chinese_calendar.is_workday(day), "file")
        day += dt.timedelta(days=1)


# --- the file ------------------------------------------------------------------------------

def test_file_make_up_saturday_is_a_working_day_and_a_holiday_weekday_is_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, write(tmp_path, SYNTHETIC))
    before = fallbacks(2099)
    assert year_source(2099) == "file"
    assert dt.date(2099, 1, 4).weekday() == 6 and is_workday(dt.date(2099, 1, 4))
    assert dt.date(2099, 5, 1).weekday() == 4 and not is_workday(dt.date(2099, 5, 1))
    assert dt.date(2099, 1, 2).weekday() == 4 and not is_workday(dt.date(2099, 1, 2))
    assert year_source(2098) == "none"  # not in the file, unknown to the library
    # 2099-01-01..03 off, Sunday 4th worked, then Monday 5th
    assert add_working_days(dt.datetime(2099, 1, 1, 8), 2).date() == dt.date(2099, 1, 5)
    assert working_days_between(dt.date(2099, 4, 29), dt.date(2099, 5, 4)) == 2  # Thu, Mon
    assert fallbacks(2099) == before


def test_the_file_overrides_the_library_for_the_years_it_lists(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a 2026 entry that lists only New Year's Day: the file alone decides 2026
    use(monkeypatch, write(tmp_path, {"years": {"2026": {
        "holidays": [{"name": "元旦", "date": "2026-01-01"}], "makeup_workdays": []}}}))
    assert year_source(2026) == "file"
    assert not is_workday(dt.date(2026, 1, 1))
    assert is_workday(dt.date(2026, 10, 1))  # a holiday in the library, not in this file
    assert not is_workday(dt.date(2026, 2, 14))  # a make-up Saturday in the library only
    assert year_source(2025) == "library"


def test_settings_refuse_a_bad_file_at_start_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    monkeypatch.setenv("DATABASE_URL", "postgresql://x@127.0.0.1/x")
    good = write(tmp_path, SYNTHETIC)
    use(monkeypatch, good)
    assert Settings.from_env().holidays_file == good
    use(monkeypatch, tmp_path / "missing.json")
    with pytest.raises(HolidayFileError, match="missing.json is refused: no such file"):
        Settings.from_env()


def entry(holidays: list[Any], makeup: list[Any], year: str = "2099") -> dict[str, Any]:
    return {"years": {year: {"holidays": holidays, "makeup_workdays": makeup}}}


NEW_YEAR = {"name": "元旦", "from": "2099-01-01", "to": "2099-01-03"}


@pytest.mark.parametrize("data,fragment", [
    (entry([{"name": "元旦", "from": "2099-01-01", "to": "2100-01-02"}], []),
     "line 8, years.2099.holidays[0].to 2100-01-02: a date outside its year 2099"),
    (entry([NEW_YEAR], [{"date": "2098-12-27", "name": "元旦"}]),
     "years.2099.makeup_workdays[0].date 2098-12-27: a date outside its year 2099"),
    (entry([NEW_YEAR], [{"date": "2099-01-03", "name": "元旦"}]),
     "line 13, years.2099.makeup_workdays[0] 2099-01-03: both a holiday (元旦) and a make-up "
     "working day"),
    (entry([NEW_YEAR], [{"date": "2099-01-05", "name": "元旦"}]),
     "makeup_workdays[0] 2099-01-05: a make-up working day is a Saturday or Sunday, "
     "2099-01-05 is a Monday"),
    (entry([NEW_YEAR], [{"date": "2099-01-04", "name": "元旦"},
                        {"date": "2099-01-04", "name": "元旦"}]),
     "line 17, years.2099.makeup_workdays[1] 2099-01-04: listed twice as a make-up"),
    (entry([NEW_YEAR, {"name": "元旦", "date": "2099-01-03"}], []),
     "holidays[1] 2099-01-03: listed twice as a holiday"),
    (entry([{"name": "春节", "from": "2099-02-10", "to": "2099-02-01"}], []),
     "holidays[0] 2099-02-10..2099-02-01: \"to\" is before \"from\""),
    (entry([{"name": "春节", "from": "2099-01-01", "to": "2099-02-01"}], []),
     "32 days off: a holiday of a notice is at most 15 days"),
    (entry([{"name": "元旦", "date": "2099-1-1"}], []), "'2099-1-1': a date is written YYYY-MM-DD"),
    (entry([{"name": "元旦", "date": "2099-02-30"}], []), "2099-02-30: no such date"),
    (entry([{"name": "", "date": "2099-01-01"}], []), "holidays[0]: needs a \"name\""),
    (entry([{"name": "元旦", "day": "2099-01-01"}], []), "unknown key(s) day"),
    (entry([], []), "years.2099.holidays: a non-empty list of holidays"),
    (entry([NEW_YEAR], [], year="99"), "years.99: '99' is not a year"),
    ({"years": {"2099": {"holidays": [NEW_YEAR]}}}, "years.2099.makeup_workdays: a list"),
    ({"format": "govbus-holidays/2", "years": {}}, "format: 'govbus-holidays/2' is not"),
    ("{\"years\": {\n  \"2099\": [\n}", "line 3, column 1: not valid JSON"),
    ([], "the file is an object"),
])
def test_a_bad_file_names_the_date_and_the_rule(tmp_path: Path, data: Any,
                                                fragment: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(HolidayFileError) as err:
        load_holidays_file(path)
    assert fragment in str(err.value)
    assert str(path) in str(err.value)


def test_every_problem_of_a_file_is_reported_at_once() -> None:
    with pytest.raises(HolidayFileError) as err:
        parse_holidays(json.dumps(entry([NEW_YEAR], [{"date": "2099-01-05", "name": "a"},
                                                     {"date": "2099-01-02", "name": "b"}])))
    assert len(err.value.problems) == 2 and "2 problems" in str(err.value)


# --- the fallback --------------------------------------------------------------------------

def test_a_year_nobody_covers_counts_monday_to_friday_and_is_counted(
        caplog: pytest.LogCaptureFixture) -> None:
    assert year_source(2098) == "none"
    before = fallbacks(2098)
    caplog.set_level(logging.WARNING, logger="govbus.workdays")
    # 2098-01-01 is a Wednesday; New Year's Day would be off on any real calendar
    assert add_working_days(dt.datetime(2097, 12, 31, 9), 1).date() == dt.date(2098, 1, 1)
    assert fallbacks(2098) == before + 1
    # Friday 3 January + 1: Monday 6 January
    assert add_working_days(dt.datetime(2098, 1, 3, 9), 1).date() == dt.date(2098, 1, 6)
    assert working_days_between(dt.date(2098, 1, 3), dt.date(2098, 1, 10)) == 5
    assert fallbacks(2098) == before + 3  # once per computation, not per day
    warnings = [r.getMessage() for r in caplog.records if "2098" in r.getMessage()]
    assert len(warnings) == 1  # once per year per process
    assert "工作日历未覆盖2098年" in warnings[0] and "Monday to Friday" in warnings[0]


def test_a_deadline_within_a_covered_year_is_not_counted() -> None:
    before = fallbacks(2026)
    add_working_days(dt.datetime(2026, 9, 30, 10), 5)
    assert fallbacks(2026) == before == 0.0


def test_a_deadline_ends_with_the_working_day_in_beijing() -> None:
    """Filed at 04:00 on Tuesday in Beijing (20:00 UTC on Monday): one working day later is
    the end of Wednesday in Beijing, 15:59:59 UTC, not the end of Tuesday in UTC."""
    filed = dt.datetime(2026, 11, 16, 20, 0, tzinfo=dt.UTC)
    due = add_working_days(filed, 1)
    assert due == dt.datetime(2026, 11, 18, 15, 59, 59, tzinfo=dt.UTC)
    assert due.tzinfo == dt.UTC  # in the zone it was given
    assert due.astimezone(BEIJING).time() == dt.time(23, 59, 59)
