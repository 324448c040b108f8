"""docs/integrating.md lists every route of the service, and only routes it has."""

from __future__ import annotations

import re
from pathlib import Path

from govbus.api import create_app
from govbus.core.config import Settings

DOC = Path(__file__).resolve().parents[3] / "docs" / "integrating.md"


def routes() -> set[str]:
    app = create_app(Settings("127.0.0.1:1", "postgresql://127.0.0.1:1/x", Path("schemas")))
    return {f"{method.upper()} {path}" for path, ops in app.openapi()["paths"].items()
            for method in ops}


def test_every_route_is_in_the_table_and_the_table_names_only_routes() -> None:
    documented = set(re.findall(r"^\| `((?:GET|POST|PUT|DELETE|PATCH) /[^`]+)` \|",
                                DOC.read_text(), re.M))
    served = routes()
    assert served - documented == set(), "routes missing from docs/integrating.md"
    assert documented - served == set(), "docs/integrating.md lists routes the service lacks"


def test_every_route_states_what_it_does() -> None:
    app = create_app(Settings("127.0.0.1:1", "postgresql://127.0.0.1:1/x", Path("schemas")))
    for path, ops in app.openapi()["paths"].items():
        for method, op in ops.items():
            assert op.get("summary"), f"{method.upper()} {path} has no summary"
