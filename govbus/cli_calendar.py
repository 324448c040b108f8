"""``govbus calendar check``: which source covers a year's working days (Art. 20, 31 deadlines).

Exit 0 when the holiday file or ``chinese-calendar`` covers the year, 3 when neither does
(deadlines would count Monday to Friday), 1 when the holiday file is refused. A cron job of the
information center runs it in December for the coming year (docs/calendar.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from govbus.core import workdays

NOT_COVERED = 3
CHINA = dt.timezone(dt.timedelta(hours=8))


def _next_year() -> int:
    return dt.datetime.now(CHINA).year + 1


def cmd_check(args: argparse.Namespace) -> int:
    from govbus.core.config import Deadlines

    path = args.file or Deadlines.from_env().holidays_file  # neither broker nor database
    found = workdays.load_holidays_file(path) if path else None
    report = workdays.year_report(args.year, found)
    if args.json:
        from govbus.cli import dumps

        print(dumps(report))
        return 0 if report["covered"] else NOT_COVERED
    lib = report["library"]
    library = f"chinese-calendar {lib['version']} ({lib['first_year']}–{lib['last_year']})"
    file = report["file"] or f"none: {workdays.HOLIDAYS_FILE_ENV} not set"
    year = report["year"]
    if not report["covered"]:
        print(f"{year}: 未覆盖 NOT COVERED by the holiday file ({file}) nor {library}: "
              f"deadlines in {year} count Monday to Friday. Add {year} from the State "
              f"Council's notice (国务院办公厅关于{year}年部分节假日安排的通知) to the holiday "
              "file (docs/calendar.md).")
        return NOT_COVERED
    source = f"the holiday file {file}" if report["source"] == "file" else library
    print(f"{year}: covered by {source}"
          + (f" — {report['notice']}" if report["notice"] else ""))
    print(f"holidays 放假 ({len(report['holidays'])} days, {report['weekdays_off']} of them "
          "weekdays):")
    for name, dates in _by_name(report["holidays"]):
        print(f"  {name}: {dates}")
    print(f"make-up working days 调休上班 ({len(report['makeup_workdays'])}):")
    for row in report["makeup_workdays"]:
        print(f"  {row['date']} {row['weekday']}  {row['name']}")
    print(f"working days 工作日: {report['working_days']} of {report['days']}")
    return 0


def _by_name(rows: list[dict[str, str]]) -> list[tuple[str, str]]:
    """Consecutive holidays of one name on one line: ``2026-10-01 Thu – 2026-10-07 Wed``."""
    out: list[tuple[str, list[dict[str, str]]]] = []
    for row in rows:
        if out and out[-1][0] == row["name"] and (
                dt.date.fromisoformat(out[-1][1][-1]["date"]) + dt.timedelta(days=1)
                == dt.date.fromisoformat(row["date"])):
            out[-1][1].append(row)
        else:
            out.append((row["name"], [row]))

    def span(days: list[dict[str, str]]) -> str:
        first, last = days[0], days[-1]
        text = f"{first['date']} {first['weekday']}"
        return text if len(days) == 1 else \
            f"{text} – {last['date']} {last['weekday']} ({len(days)} days)"

    return [(name, span(days)) for name, days in out]


def register(sub: Any, add: Any) -> None:
    """Add ``calendar check`` to the ``govbus`` parser."""
    cal = sub.add_parser("calendar", help="the working-day calendar of deadlines (Art. 20, 31)",
                         description="Working days follow the State Council's yearly holiday "
                         "notice: GOVBUS_HOLIDAYS_FILE for the years it lists, chinese-calendar "
                         "for the others.")
    csub = cal.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = add("check", cmd_check, "which source covers a year, its holidays, make-up working days "
            "and working days; exit 3 when no source covers it", parent=csub)
    p.add_argument("--year", type=int, default=_next_year(),
                   help="the year (default: next year in China, what a December cron checks)")
    p.add_argument("--file", help="check this holiday file instead of GOVBUS_HOLIDAYS_FILE "
                   "(before installing it)")
