"""The fault suite in CI: a fixed seed, every component its own process, at least 20
kill -9s plus PostgreSQL restarts plus a broker outage while the outbox has work; nothing may be
lost, duplicated or misdelivered, the delivery log's hash chain must verify, and the reconciler
(killed like the rest) must open a case for exactly the values that differ.

A failure replays with ``python -m tests.faults --seed 20261125`` (figures and logs printed).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.suite import Plan, run

SEED = 20261125


@pytest.mark.timeout(600)  # ~90 s here; the settle deadline alone may take 150 s
def test_fault_suite_loses_duplicates_and_misdelivers_nothing(tmp_path: Path) -> None:
    lines: list[str] = []
    figures = run(Plan(seed=SEED, kills=20, pg_restarts=2), tmp_path, lines.append)
    print("\n" + "\n".join(lines) + f"\nseed {SEED}: {figures.line()}")
    kills = sum(n for kind, n in figures.faults.items() if kind.startswith("kill -9"))
    assert kills >= 20 and figures.faults["PostgreSQL stop/start"] == 2
    assert figures.faults["broker stop with outbox work"] == 1
    assert sum(figures.faults.values()) >= 23
    assert figures.events > 500 and figures.invalid > 0 and figures.expected_deliveries > 0
    assert (figures.lost, figures.duplicated, figures.misdelivered) == (0, 0, 0), \
        figures.examples
    assert figures.chain_ok and figures.checkpoints >= 5  # bound to checkpoints signed meanwhile
    assert figures.cases_expected > 100
    assert (figures.cases_missing, figures.cases_unexpected) == (0, 0), figures.examples
