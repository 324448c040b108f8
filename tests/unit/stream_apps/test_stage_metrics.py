"""The judge and route steps' per-batch counters add up to what happened in the batch."""

from __future__ import annotations

import math
from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY, CollectorRegistry, Histogram

from govbus.core.event_counts import Judged
from govbus.core.metrics import observe_many
from govbus.core.routing import RouteResult
from govbus.stream_apps.judge import observe as gate_observe
from govbus.stream_apps.route import observe as router_observe


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_gate_counts_each_outcome_and_first_rule_once_per_event() -> None:
    agency, resource = "unit_gate", "unit_gate.register"
    before = (sample("govbus_gate_events_total", agency=agency, resource=resource,
                     outcome="accepted"),
              sample("govbus_gate_rejections_total", agency=agency, rule="id.check_digit"))
    judged = [Judged("t", 0, i, agency, resource, "accepted") for i in range(5)]
    judged += [Judged("t", 0, 5 + i, agency, resource, "rejected", "id.check_digit")
               for i in range(3)]
    gate_observe(judged)
    assert sample("govbus_gate_events_total", agency=agency, resource=resource,
                  outcome="accepted") - before[0] == 5
    assert sample("govbus_gate_events_total", agency=agency, resource=resource,
                  outcome="rejected") == 3
    assert sample("govbus_gate_rejections_total", agency=agency,
                  rule="id.check_digit") - before[1] == 3


def test_router_counts_events_withheld_deliveries_and_times_each_delivery() -> None:
    shared = SimpleNamespace(provider="unit_a", id="unit_a.shared", share_class="unconditional")
    secret = SimpleNamespace(provider="unit_a", id="unit_a.secret", share_class="not_shared")
    routed = [(shared, {}, RouteResult()) for _ in range(4)]
    routed += [(secret, {}, RouteResult(withheld=True)) for _ in range(2)]
    acked = [(SimpleNamespace(recipient=r, provider="unit_a",
                              value={"resource": "unit_a.shared", "ts_ms": 1000}),
              0, i, 1250, None) for i, r in enumerate(["unit_b", "unit_b", "unit_c"])]
    router_observe(routed, acked)  # type: ignore[arg-type]
    assert sample("govbus_router_events_total", agency="unit_a", resource="unit_a.shared") == 4
    assert sample("govbus_router_withheld_total", agency="unit_a", resource="unit_a.secret",
                  share_class="not_shared") == 2
    assert sample("govbus_router_deliveries_total", provider="unit_a", recipient="unit_b",
                  resource="unit_a.shared", share_class="unconditional") == 2
    assert sample("govbus_router_deliveries_total", provider="unit_a", recipient="unit_c",
                  resource="unit_a.shared", share_class="unconditional") == 1
    assert sample("govbus_delivery_latency_seconds_count", resource="unit_a.shared") == 3
    assert sample("govbus_delivery_latency_seconds_sum", resource="unit_a.shared") == 0.75


@given(st.lists(st.one_of(st.sampled_from([0.0, 0.005, 0.1, 0.25, 1.0, 2.5, 10.0, 1e9]),
                          st.floats(min_value=0, max_value=1e6)), max_size=60))
def test_many_observations_at_once_expose_what_one_by_one_does(amounts: list[float]) -> None:
    registry = CollectorRegistry()
    one = Histogram("unit_one_seconds", "h", ["r"], registry=registry,
                    buckets=(0.005, 0.1, 0.25, 1.0, 2.5, 10.0))
    many = Histogram("unit_many_seconds", "h", ["r"], registry=registry,
                     buckets=(0.005, 0.1, 0.25, 1.0, 2.5, 10.0))
    child = one.labels("x")
    for a in amounts:
        child.observe(a)
    observe_many(many.labels("x"), amounts)
    observe_many(many.labels("x"), [])

    def exposed(name: str) -> list[tuple[str, dict[str, str], float]]:
        return [(s.name.replace(name, ""), s.labels, s.value)
                for m in registry.collect() if m.name == name for s in m.samples
                if not s.name.endswith("_created")]
    assert _same(exposed("unit_many_seconds"), exposed("unit_one_seconds"))


def _same(a: list[tuple[str, dict[str, str], float]],
          b: list[tuple[str, dict[str, str], float]]) -> bool:
    return len(a) == len(b) and all(
        x[:2] == y[:2] and math.isclose(x[2], y[2], rel_tol=1e-9, abs_tol=1e-9)
        for x, y in zip(a, b, strict=True))


def test_a_histogram_without_the_expected_insides_is_observed_one_by_one() -> None:
    seen: list[float] = []
    observe_many(SimpleNamespace(observe=seen.append), [0.5, 2.0])
    assert seen == [0.5, 2.0]
