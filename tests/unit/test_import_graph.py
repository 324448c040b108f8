"""The product's packages form layers: ``govbus.core`` is the ground floor and imports none of
the others, no two packages import each other, and no chain of imports leads back to where it
started. Read from the source (every ``import`` and ``from … import``, also inside functions),
so that a lazy import cannot hide a cycle."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# each package of the govbus namespace and the folder it lives in; "govbus" is the application
# layer (command line, runtime, reports, query), the modules directly in govbus/
PACKAGES = {"core": "govbus_core", "delivery_log": "delivery_log", "producers": "producers",
            "consumers": "consumers", "stream_apps": "stream_apps", "infra": "infra",
            "govbus": "govbus"}
# what each package may build on: the layers, from the ground floor up
ALLOWED = {
    "core": set(),
    "delivery_log": {"core"},
    "producers": {"core"},
    "infra": {"core"},
    "stream_apps": {"core", "delivery_log"},
    "consumers": {"core", "delivery_log"},
    "govbus": {"core", "delivery_log", "producers", "consumers", "stream_apps", "infra"},
}


def package_of(module: str) -> str | None:
    """The package a dotted ``govbus…`` module name belongs to; None if not the product's."""
    parts = module.split(".")
    if parts[0] != "govbus":
        return None
    if len(parts) > 1 and parts[1] in PACKAGES and parts[1] != "govbus":
        return parts[1]
    return "govbus"


def sources(package: str) -> Iterator[Path]:
    folder = ROOT / PACKAGES[package]
    # govbus/: its modules and the service's package, not the packages it links to
    patterns = ("*.py", "api/**/*.py") if package == "govbus" else ("**/*.py",)
    for pattern in patterns:
        yield from (p for p in folder.glob(pattern) if p.is_file() and not p.is_symlink())


def imported(path: Path) -> set[str]:
    """Every module name ``path`` imports (``from govbus import x`` counts as ``govbus.x``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def edges() -> dict[str, dict[str, set[str]]]:
    """package -> imported package -> the files that import it."""
    found: dict[str, dict[str, set[str]]] = {p: {} for p in PACKAGES}
    for package in PACKAGES:
        for path in sources(package):
            for name in imported(path):
                # "from govbus import cli_access" names a module of the application layer,
                # "from govbus import delivery_log" a package
                target = package_of(name)
                if target is None or target == package or name == "govbus":
                    continue
                found[package].setdefault(target, set()).add(str(path.relative_to(ROOT)))
    return found


GRAPH = edges()


def test_the_graph_was_read() -> None:
    assert "core" in GRAPH["stream_apps"] and "delivery_log" in GRAPH["stream_apps"]
    assert sum(len(targets) for targets in GRAPH.values()) >= 10


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_a_package_builds_only_on_the_layers_below_it(package: str) -> None:
    wrong = {target: sorted(files) for target, files in GRAPH[package].items()
             if target not in ALLOWED[package]}
    assert wrong == {}, f"govbus.{package} imports packages above or beside it: {wrong}"


def test_no_two_packages_import_each_other_and_there_is_no_cycle() -> None:
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in GRAPH[node]:
            if state.get(target) == "open":
                raise AssertionError("import cycle: " + " -> ".join([*path, node, target]))
            if target not in state:
                visit(target, [*path, node])
        state[node] = "done"

    for package in PACKAGES:
        if package not in state:
            visit(package, [])


def test_the_layers_have_no_cycle_themselves() -> None:
    # ALLOWED is the rule the other tests hold the code to; it must itself be acyclic
    order: list[str] = []
    pending = dict(ALLOWED)
    while pending:
        ready = [p for p, below in pending.items() if below <= set(order)]
        assert ready, f"ALLOWED has a cycle among {sorted(pending)}"
        order += sorted(ready)
        for p in ready:
            del pending[p]
    assert order[0] == "core"
