"""``govbus report evaluation`` (Art. 28) and ``govbus report annual`` (Art. 26).

Registered under the ``report`` command that :mod:`govbus.cli_sharing` creates (next to
``report filings``). Output: a table (default), ``--json``, ``--csv FILE`` (``-``: stdout),
``--chart FILE.html`` (a self-contained page with SVG charts).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from govbus import report_render as render
from govbus import reports
from govbus.cli import dumps
from govbus.core.config import require_database_url
from govbus.core.errors import ConfigError


def _dsn() -> str:
    """Reports need only PostgreSQL: ``DATABASE_URL``, else the embedded runtime's."""
    return require_database_url()


def _write(target: str, text: str, what: str) -> None:
    if target == "-":
        sys.stdout.write(text)
        return
    path = Path(target)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the {what} to {path}: {exc.strerror}") from exc
    print(f"{what} written to {path}", file=sys.stderr)


def _emit(args: argparse.Namespace, report: dict[str, Any], lines: list[str]) -> None:
    if args.json:
        print(dumps(report))
    elif args.csv != "-":  # with --csv - the CSV is the output
        print("\n".join(lines))


def _report(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """The report ``name`` for ``--year``: from the service when the command line acts
    through it (the office and the center read it whole; an agency its own part), else
    computed from the database."""
    from govbus.cli_access import service

    http = service(args)
    if http:
        return dict(http.get(f"/v1/reports/{name}", year=args.year))
    make = reports.evaluation if name == "evaluation" else reports.annual
    return make(_dsn(), args.year)


def cmd_evaluation(args: argparse.Namespace) -> int:
    report = _report(args, "evaluation")
    if args.csv:
        _write(args.csv, render.evaluation_csv(report), "CSV")
    if args.chart:
        _write(args.chart, render.evaluation_html(report), "chart")
    _emit(args, report, render.evaluation_lines(report))
    return 0


def cmd_annual(args: argparse.Namespace) -> int:
    report = _report(args, "annual")
    if args.chart:
        _write(args.chart, render.annual_html(report), "chart")
    _emit(args, report, render.annual_lines(report))
    return 0


def register(rsub: Any, add: Any) -> None:
    """Add ``evaluation`` and ``annual`` to the ``report`` sub-commands."""
    this_year = dt.datetime.now(dt.UTC).year
    p = add("evaluation", cmd_evaluation, "each agency's quantity, quality, timeliness and "
            "responsiveness in a year (Art. 28)", parent=rsub)
    p.add_argument("--year", type=int, default=this_year, help=f"default {this_year}")
    p.add_argument("--csv", metavar="FILE", help="also write CSV to FILE (- for stdout)")
    p.add_argument("--chart", metavar="FILE.html", help="also write a self-contained HTML page "
                   "with charts")
    p = add("annual", cmd_annual, "the city's sharing in a year (Art. 26)", parent=rsub)
    p.add_argument("--year", type=int, default=this_year, help=f"default {this_year}")
    p.add_argument("--chart", metavar="FILE.html", help="also write a self-contained HTML page "
                   "with charts")
    p.set_defaults(csv=None)
