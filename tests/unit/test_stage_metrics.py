"""The gate's and router's per-batch counters add up to what happened in the batch."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import REGISTRY

from govbus_core.event_counts import Judged
from stream_apps.gate import observe as gate_observe
from stream_apps.router_metrics import observe as router_observe
from stream_apps.routing import RouteResult


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
    acked = [(SimpleNamespace(recipient=r, value={"resource": "unit_a.shared",
                                                   "provider": "unit_a", "published_ms": 1000}),
              0, i, 1250) for i, r in enumerate(["unit_b", "unit_b", "unit_c"])]
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
