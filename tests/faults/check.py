"""The fault suite's verdict: what was published against what was delivered and logged.
Pure, so it is unit-tested on its own (tests/unit/test_fault_check.py).

- **lost**: a (valid event, entitled agency) pair with no delivery on the agency's topic or no
  row in the delivery log;
- **duplicated**: a (event, agency, channel) with more than one log row (topic re-sends after
  a crash are at-least-once by design and counted separately: subscribers de-duplicate by
  event id);
- **misdelivered**: a delivery or log row for an agency not entitled to the event's resource,
  or of an event that was never validly published (a DLQ'd event must reach nobody);
- **cases missing / unexpected** (reconciliation, Art. 19-20): an (entity, attribute) whose
  agencies' values really differ without an open case, or a case open where they agree
  (formatting alone included) or opened twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass
class Figures:
    events: int = 0              # valid events published (acknowledged / committed)
    invalid: int = 0             # invalid events published on purpose (must reach nobody)
    expected_deliveries: int = 0  # (event, entitled agency) pairs
    faults: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    duplicated: int = 0
    misdelivered: int = 0
    resent: int = 0              # extra copies on deliver topics (at-least-once re-sends)
    chain_ok: bool = True
    checkpoints: int = 0         # signed checkpoints the log was verified against
    cases_expected: int = 0      # (entity, attribute) pairs whose values differ
    cases_missing: int = 0
    cases_unexpected: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.misdelivered or self.cases_missing
                    or self.cases_unexpected) and self.chain_ok

    def line(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items()))
        return (f"events {self.events} (+{self.invalid} invalid), deliveries expected "
                f"{self.expected_deliveries}, faults injected {sum(self.faults.values())} "
                f"({kinds}); lost {self.lost}, duplicated {self.duplicated}, misdelivered "
                f"{self.misdelivered}; topic re-sends {self.resent}; log chain "
                f"{'intact' if self.chain_ok else 'BROKEN'} against {self.checkpoints} "
                f"checkpoint(s); cases expected "
                f"{self.cases_expected}, missing {self.cases_missing}, unexpected "
                f"{self.cases_unexpected}")


def compare(published: Mapping[str, str], invalid: Iterable[str],
            entitled: Mapping[str, set[str]], delivered: Iterable[tuple[str, str]],
            logged: Iterable[tuple[str, str, str]]) -> Figures:
    """``published``: event id → resource id (valid events); ``invalid``: event ids that must
    reach nobody; ``entitled``: resource id → agencies; ``delivered``: (recipient, event id)
    per message on a deliver topic; ``logged``: (recipient, event id, channel) per log row."""
    invalid = set(invalid)
    figures = Figures(events=len(published), invalid=len(invalid))
    expected = {(agency, eid) for eid, res in published.items()
                for agency in entitled.get(res, set())}
    figures.expected_deliveries = len(expected)
    topic = Counter(delivered)
    rows = Counter(logged)
    logged_pairs = {(a, e) for a, e, _ in rows}

    def wrong(agency: str, eid: str) -> bool:
        return eid not in published or agency not in entitled.get(published[eid], set())

    missing = [p for p in expected if p not in topic or p not in logged_pairs]
    figures.lost = len(missing)
    figures.duplicated = sum(n - 1 for n in rows.values() if n > 1)
    bad = {p for p in topic if wrong(*p)} | {p for p in logged_pairs if wrong(*p)}
    figures.misdelivered = len(bad)
    figures.resent = sum(n - 1 for p, n in topic.items() if n > 1)
    figures.examples = [f"lost {a} {e}" for a, e in missing[:3]] + \
        [f"misdelivered {a} {e}" for a, e in sorted(bad)[:3]] + \
        [f"duplicated {k}" for k, n in rows.items() if n > 1][:3]
    return figures


def compare_cases(figures: Figures, expected: set[tuple[str, str]],
                  cases: Iterable[tuple[str, str, str]]) -> list[tuple[str, str]]:
    """``expected``: (entity, attribute) whose values differ; ``cases``: (entity, attribute,
    status) per row of the ``cases`` table. Fills the figures' case counts; returns the
    missing pairs, sorted."""
    cases = list(cases)
    rows = Counter((e, a) for e, a, status in cases if status == "open")
    statuses: dict[tuple[str, str], list[str]] = {}
    for e, a, status in cases:
        statuses.setdefault((e, a), []).append(status)
    figures.cases_expected = len(expected)
    missing = sorted(expected - set(rows))
    unexpected = sorted(p for p in rows if p not in expected) + \
        sorted(p for p, n in rows.items() if n > 1)
    figures.cases_missing, figures.cases_unexpected = len(missing), len(unexpected)
    figures.examples += [f"no case for {e} {a} (rows: {statuses.get((e, a)) or 'none'})"
                         for e, a in missing[:3]] + \
        [f"unexpected case {e} {a}" for e, a in unexpected[:3]]
    return missing
