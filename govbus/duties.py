"""``python -m govbus.duties``: the duties app (``govbus.stream_apps.duties``) as ``govbus up``
runs it, given the report code it drafts the yearly reports with (Art. 26, 28).

The app itself is a stream app and builds on the core alone; the reports are the application
layer's (they are what ``govbus report`` and the HTTP service serve), so they are handed to it
here rather than imported by it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from govbus import reports
from govbus.core.config import Settings
from govbus.stream_apps.duties.app import Duties, serve
from govbus.stream_apps.duties.timers import Drafter


def drafter(dsn: str) -> Drafter:
    """The annual report (Art. 26) and the evaluation (Art. 28) of a year, at a moment."""
    def draft(year: int, now: dt.datetime) -> dict[str, dict[str, Any]]:
        return {"annual": reports.annual(dsn, year, now),
                "evaluation": reports.evaluation(dsn, year, now)}
    return draft


def make(settings: Settings) -> Duties:
    return Duties(settings, drafter(settings.database_url))


def main() -> None:
    serve(make)


if __name__ == "__main__":
    main()
