"""The web console of ``govbus serve`` at ``/``: pages for agency clerks, the information
center and the municipal office, in Simplified Chinese first and English by a switch,
rendered on the server (docs/console.md). Every page reads and acts through the API's route
functions with the signed-in agency as the caller."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from govbus.api.console import pages, pages_cases, pages_commitments, pages_reports
from govbus.api.console.web import HERE, Ended, new_key

ROUTERS = [pages.router, pages_commitments.router, pages_cases.router, pages_reports.router]


def mount(app: FastAPI) -> None:
    """The console's pages at ``/`` and its stylesheet at ``/static``."""
    app.state.console_fernet = new_key()
    app.state.console_ended = Ended()
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="console-static")
