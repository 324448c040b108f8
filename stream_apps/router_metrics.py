"""The router's Prometheus metrics for one batch, kept out of the loop (Art. 15, 17, 25)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from govbus_core import metrics
from govbus_core.envelope import now_ms
from stream_apps.routing import Delivery, RouteResult

Routed = tuple[Any, dict[str, Any], RouteResult]  # (Resource, event, what routing decided)
Acked = tuple[Delivery, int | None, int | None, int]  # as router.send_deliveries returns


def observe(routed: Sequence[Routed], acked: Sequence[Acked]) -> None:
    """Count events in, deliveries out and withheld events; time each delivery.

    Latency runs from the envelope's publish time (``ts_ms``) to the broker's acknowledgement
    of the delivery: what a subscribing agency waits, gate and router included.
    """
    share_class: dict[str, str] = {}
    for resource, _event, result in routed:
        share = resource.share_class or "unknown"
        share_class[resource.id] = share
        metrics.ROUTER_EVENTS.labels(resource.provider, resource.id).inc()
        if result.withheld:
            metrics.ROUTER_WITHHELD.labels(resource.provider, resource.id, share).inc()
    for delivery, _partition, _offset, delivered_ms in acked:
        value = delivery.value
        resource_id = str(value.get("resource"))
        metrics.ROUTER_DELIVERIES.labels(str(value.get("provider")), delivery.recipient,
                                         resource_id,
                                         share_class.get(resource_id, "unknown")).inc()
        published = value.get("published_ms")
        if isinstance(published, int):
            metrics.DELIVERY_LATENCY.labels(resource_id).observe(
                max(0, (delivered_ms or now_ms()) - published) / 1000)
