"""Share-class routing as pure functions: which agency receives what of a change event.

No I/O here; the router loop (:mod:`stream_apps.router`) and the online query
(:mod:`consumers.query`) call these and do the producing and storing.

- Art. 15: *unconditional* and *on application* resources go only to agencies holding a grant
  in force (an unconditional request is granted at once, Art. 18, so a grant doubles as the
  subscription); *not shared* resources go to nobody, whatever grant rows exist — the event is
  *withheld*.
- Art. 17: a resource whose catalogue entry offers only ``online_query`` is not pushed by
  data exchange.
- Art. 25: each delivery carries only the grant's fields; sensitive fields the grant lists as
  masked (no confidentiality agreement) are masked.
- The provider never receives its own events.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from govbus_core.catalogue import META, SHARE_CLASSES, Resource
from govbus_core.sharing import Grant

DELIVERY_TOPIC = "govbus.deliveries"


@dataclass(frozen=True)
class Delivery:
    """One event, projected for one recipient under one grant."""

    recipient: str
    grant_id: int
    topic: str
    value: dict[str, Any]
    fields: tuple[str, ...]
    masked: tuple[str, ...]


@dataclass(frozen=True)
class RouteResult:
    """What routing decided for one event: its deliveries, or that it is withheld."""

    deliveries: list[Delivery] = field(default_factory=list)
    withheld: bool = False   # not shared (Art. 15): never delivered
    reason: str = ""


def deliver_topic(recipient: str, resource: Resource) -> str:
    return f"deliver.{recipient}.{resource.name}"


def mask_value(value: Any) -> Any:
    """Art. 25 masking: a string keeps its first 3 and last 2 characters when longer than 6,
    else becomes ``***``; anything else (numbers, null) becomes null."""
    if isinstance(value, str):
        if len(value) > 6:
            return value[:3] + "*" * (len(value) - 5) + value[-2:]
        return "***"
    return None


def project(resource: Resource, record: dict[str, Any] | None, grant: Grant
            ) -> tuple[dict[str, Any] | None, list[str]]:
    """Keep only the grant's fields of ``record``, masking the grant's masked fields.

    Returns the projected record (None for None) and the masked fields it contains. Fields the
    grant names but the record lacks (an older schema version) are left out.
    """
    masked = [f for f in grant.fields if f in grant.masked_fields]
    if record is None:
        return None, masked
    out = {}
    for name in grant.fields:
        if name in record:
            out[name] = mask_value(record[name]) if name in grant.masked_fields \
                else record[name]
    return out, masked


def grants_in_force(grants: Iterable[Grant], resource: Resource, at: dt.datetime
                    ) -> list[Grant]:
    """One grant per recipient — the most recent one in force — excluding the provider."""
    chosen: dict[str, Grant] = {}
    for g in grants:
        if g.resource_id != resource.id or g.recipient == resource.provider or \
                not g.in_force(at):
            continue
        if g.recipient not in chosen or g.grant_id > chosen[g.recipient].grant_id:
            chosen[g.recipient] = g
    return [chosen[r] for r in sorted(chosen)]


def grant_for(grants: Iterable[Grant], resource: Resource, recipient: str, at: dt.datetime
              ) -> Grant | None:
    """The grant in force of ``recipient`` for ``resource`` (the most recent), or None."""
    return next((g for g in grants_in_force(grants, resource, at)
                 if g.recipient == recipient), None)


def withheld_reason(resource: Resource) -> str | None:
    """Why nothing of ``resource`` may be delivered (Art. 15), or None."""
    if resource.share_class == "not_shared":
        return f"{resource.id} is not shared: {resource.legal_basis} (Art. 15)"
    if resource.share_class not in SHARE_CLASSES:  # fail closed on a broken entry
        return f"{resource.id} has no valid share class ({resource.share_class!r}, Art. 15)"
    return None


def offers(resource: Resource, method: str) -> bool:
    """Whether the catalogue entry offers ``method`` (Art. 7, 17); absent list → both."""
    methods = resource.meta.get("provision_methods")
    return not isinstance(methods, list) or method in methods


def delivered_value(resource: Resource, event: dict[str, Any], grant: Grant
                    ) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The JSON value a recipient receives for ``event`` under ``grant``."""
    record, masked = project(resource, event.get("after"), grant)
    before, _ = project(resource, event.get("before"), grant)
    source = event.get("source") or {}
    value = {"event_id": event["event_id"], "resource": resource.id, "op": event["op"],
             "key": event["key"], "record": record, "before": before,
             "provider": source.get("agency", resource.provider),
             "locality": source.get("locality"), "occurred_ms": event["occurred_ms"],
             "published_ms": event["ts_ms"], "grant_id": grant.grant_id,
             "masked_fields": masked}
    return value, tuple(masked)


def make_delivery(resource: Resource, event: dict[str, Any], grant: Grant) -> Delivery:
    """``event`` projected for the recipient of ``grant``."""
    value, masked = delivered_value(resource, event, grant)
    image = event.get("after") or event.get("before") or {}
    fields = tuple(f for f in grant.fields if f in image)
    return Delivery(grant.recipient, grant.grant_id, deliver_topic(grant.recipient, resource),
                    value, fields, masked)


def route(resource: Resource, event: dict[str, Any], grants: list[Grant], at: dt.datetime
          ) -> RouteResult:
    """Decide the deliveries of one decoded change event at time ``at``."""
    reason = withheld_reason(resource)
    if reason:
        return RouteResult(withheld=True, reason=reason)
    if not offers(resource, "data_exchange"):
        return RouteResult(reason=f"{resource.id} is provided by online query only (Art. 17)")
    out = [make_delivery(resource, event, g) for g in grants_in_force(grants, resource, at)]
    return RouteResult(deliveries=out)


def by_resource(grants: Iterable[Grant]) -> dict[str, list[Grant]]:
    """Grants grouped by resource id: :func:`route` looks at its resource's only."""
    grouped: dict[str, list[Grant]] = {}
    for g in grants:
        grouped.setdefault(g.resource_id, []).append(g)
    return grouped


def with_meta(resource: Resource, meta: dict[str, Any] | None) -> Resource:
    """``resource`` with its current catalogue metadata.

    A registered schema version keeps the metadata of the day it was registered; metadata-only
    changes (a share class, provision methods) update ``catalogue_resources`` without a new
    version, so routing must read the current entry, not the one framed in the event.
    """
    if not meta:
        return resource
    return dataclasses.replace(resource, schema={**resource.schema, META: meta})


def delivery_record(delivery: Delivery, channel: str, partition: int | None,
                    offset: int | None, delivered_ms: int, topic: str | None = None
                    ) -> dict[str, Any]:
    """The record of one delivery for ``govbus.deliveries`` (the delivery log, Art. 24, 31).

    ``channel`` is exchange | query | backfill (Art. 17); a query has no topic, partition or
    offset. The log sink de-duplicates by (event_id, recipient, channel)."""
    value = delivery.value
    return {"event_id": value["event_id"], "channel": channel, "provider": value["provider"],
            "recipient": delivery.recipient, "resource": value["resource"],
            "grant_id": delivery.grant_id, "fields": list(delivery.fields),
            "masked_fields": list(delivery.masked), "topic": topic, "partition": partition,
            "offset": offset, "delivered_ms": delivered_ms}
