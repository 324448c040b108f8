"""Topic names are built in one module, ``govbus.core.topics``: no other module of the product
spells one out, so that what the hot path writes, the ACL plan grants and the subscriber reads
cannot drift apart."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from govbus.core import topics
from govbus.core.kafka import topic_kind

ROOT = Path(__file__).resolve().parents[3]
FOLDERS = ("govbus_core", "delivery_log", "producers", "consumers", "stream_apps", "infra",
           "govbus")
NAME = re.compile(r"^\^?(ingest|validated|dlq|deliver|notices)\\?\.|"
                  r"^(reconcile\.(values|cases)|govbus\.(control|log\.checkpoints))$")


def literals(path: Path) -> list[tuple[int, str]]:
    """The string literals of ``path`` that are not docstrings, with their line numbers."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                       ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings]


def product_sources() -> list[Path]:
    found = []
    for folder in FOLDERS:
        pattern = "*.py" if folder == "govbus" else "**/*.py"
        found += [p for p in (ROOT / folder).glob(pattern) if not p.is_symlink()]
    return found


def test_no_module_but_topics_spells_out_a_topic_name() -> None:
    sources = product_sources()
    assert len(sources) > 50
    spelled = [f"{p.relative_to(ROOT)}:{line}: {text!r}" for p in sources
               if p.name != "topics.py" or p.parent.name != "govbus_core"
               for line, text in literals(p) if NAME.search(text)]
    assert spelled == []


def test_the_probe_finds_a_spelled_out_name(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text('"""doc: ``deliver.x.y``."""\nTOPIC = "reconcile.cases"\nP = f"dlq.{1}"\n')
    assert [text for _, text in literals(probe) if NAME.search(text)] == [
        "reconcile.cases", "dlq."]


@pytest.mark.parametrize(("name", "kind"), [
    (topics.ingest("tax", "tax_registration"), "ingest"),
    (topics.validated("tax.tax_registration"), "validated"),
    (topics.dlq("tax"), "dlq"),
    (topics.deliver("hrss", "tax.tax_registration"), "deliver"),
    (topics.notices("hrss"), "notices"),
    (topics.RECONCILE_VALUES, "reconcile_values"),
    (topics.RECONCILE_CASES, "reconcile_cases"),
    (topics.CONTROL, "control"),
    (topics.CHECKPOINTS, "checkpoints"),
    ("a.tap", "other"),
])
def test_every_name_built_has_its_kind(name: str, kind: str) -> None:
    assert topics.kind(name) == topic_kind(name) == kind


def test_names_built_match_the_patterns_consumers_subscribe_with() -> None:
    assert re.match(topics.INGEST_PATTERN, topics.ingest("tax", "tax_registration"))
    assert re.match(topics.DELIVER_PATTERN, topics.deliver("hrss", "tax_registration"))
    assert topics.deliver("hrss", "tax.tax_registration") == "deliver.hrss.tax_registration"
    assert topics.deliver("hrss", "x").startswith(topics.deliver_prefix("hrss"))
    assert not re.match(topics.INGEST_PATTERN, topics.validated("tax.tax_registration"))
