"""Share-class routing as pure functions: which agency receives what of a change event.

No I/O here; the hot path (:mod:`govbus.stream_apps.hotpath`) and the online query and
backfill (:mod:`govbus.query`) call these and do the producing and logging.

- Art. 15: *unconditional* and *on application* resources go only to agencies holding a grant
  in force (an unconditional request is granted at once, Art. 18, so a grant doubles as the
  subscription); *not shared* resources go to nobody, whatever grant rows exist — the event is
  *withheld*.
- Art. 17: a resource whose catalogue entry offers only ``online_query`` is not pushed by
  data exchange.
- Art. 25: each delivery carries only the grant's fields; sensitive fields the grant lists as
  masked (no confidentiality agreement) are masked.
- Art. 24: each delivery carries its grant's use restrictions and commitment (the
  ``govbus-use`` header, :func:`govbus.core.commitments.use_header`), built once per grant.
- The provider never receives its own events.

A delivery's value is the event's envelope (Debezium's shape, :mod:`govbus.core.envelope`)
around the projected images, with the grant's id and masked fields; how it is written (framed
Avro under the projection's own schema, or JSON) is its grant's, :mod:`govbus.core.deliveries`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from govbus.core import topics
from govbus.core.catalogue import META, SHARE_CLASSES, Resource
from govbus.core.serde import json_bytes
from govbus.core.sharing import Grant

Encoder = Callable[[dict[str, Any]], bytes]
#: a projection's encoder, given its grant: the hot path's registers an Avro schema per
#: projection (govbus.core.deliveries.DeliverySchemas); without one, deliveries are JSON
Encoders = Callable[[Grant], Encoder]


class Delivery(NamedTuple):
    """One event, projected for one recipient under one grant (a named tuple: one is built
    per delivery; its log row is a :class:`govbus.delivery_log.chain.LogEntry`)."""

    recipient: str
    grant_id: int
    topic: str
    value: dict[str, Any]
    fields: tuple[str, ...]
    masked: tuple[str, ...]
    use: bytes = b""  # the grant's govbus-use header (Art. 24), built once per grant
    encode: Encoder = json_bytes  # how its value is written (govbus.core.deliveries)

    @property
    def provider(self) -> str:
        return str(self.value["source"]["agency"])


@dataclass(frozen=True)
class RouteResult:
    """What routing decided for one event: its deliveries, or that it is withheld."""

    deliveries: list[Delivery] = field(default_factory=list)
    withheld: bool = False   # not shared (Art. 15): never delivered
    reason: str = ""


def deliver_topic(recipient: str, resource: Resource) -> str:
    return topics.deliver(recipient, resource.id)


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
    projection = _Projection(resource, grant)
    return projection.record(record), list(projection.masked_listed)


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
    """The value a recipient receives for ``event`` under ``grant``."""
    value = _Projection(resource, grant).value(event)
    return value, tuple(value["masked_fields"])


def make_delivery(resource: Resource, event: dict[str, Any], grant: Grant,
                  encode: Encoder = json_bytes) -> Delivery:
    """``event`` projected for the recipient of ``grant``, to be written by ``encode``."""
    return _Projection(resource, grant, encode).delivery(event)


class _Projection:
    """One grant's projection of one resource, with what it needs looked up once."""

    __slots__ = ("grant", "resource_id", "topic", "masked", "masked_listed", "masked_tuple",
                 "provider", "fields", "field_set", "use", "encode")

    def __init__(self, resource: Resource, grant: Grant, encode: Encoder = json_bytes
                 ) -> None:
        # interned: every projection of the resource holds the same string, so all the fields
        # an event's deliveries share are the same objects (govbus.core.deliveries relies on it)
        self.grant, self.resource_id = grant, sys.intern(resource.id)
        self.topic = deliver_topic(grant.recipient, resource)
        self.masked = frozenset(grant.masked_fields)
        self.masked_listed = [f for f in grant.fields if f in self.masked]  # as project()
        self.masked_tuple = tuple(self.masked_listed)
        self.provider = resource.provider
        self.fields = tuple(grant.fields)
        self.field_set = frozenset(grant.fields)
        self.use = grant.use
        self.encode = encode

    def record(self, row: dict[str, Any] | None) -> dict[str, Any] | None:
        """:func:`project`'s record."""
        if row is None:
            return None
        if not self.masked_listed:
            return {name: row[name] for name in self.grant.fields if name in row}
        masked = self.masked
        return {name: mask_value(row[name]) if name in masked else row[name]
                for name in self.grant.fields if name in row}

    def value(self, event: dict[str, Any]) -> dict[str, Any]:
        """The envelope with the images projected; ``ts_ms`` stays the event's publish
        time, from which delivery latency is measured."""
        return {"before": self.record(event.get("before")),
                "after": self.record(event.get("after")),
                "source": event["source"], "op": event["op"],
                "transaction": event.get("transaction"),
                "event_id": event["event_id"], "resource": self.resource_id,
                "schema_version": event.get("schema_version", 0), "key": event["key"],
                "occurred_ms": event["occurred_ms"], "ts_ms": event["ts_ms"],
                "grant_id": self.grant.grant_id, "masked_fields": list(self.masked_listed),
                "channel": "exchange"}

    def delivery(self, event: dict[str, Any]) -> Delivery:
        image = event.get("after") or event.get("before") or {}
        # the fields the record has: all of the grant's, but for an older schema version
        fields = self.fields if self.field_set <= image.keys() else \
            tuple(f for f in self.fields if f in image)
        return Delivery(self.grant.recipient, self.grant.grant_id, self.topic,
                        self.value(event), fields, self.masked_tuple, self.use, self.encode)


class RoutePlan:
    """Routing of one resource against a set of grants at one moment, decided once.

    The hot path builds one per resource and batch: the share class, the provision methods,
    the grants in force and each grant's projection are the same for every event of the
    batch, so only the projections run per event. :func:`route` is this for
    a single event."""

    def __init__(self, resource: Resource, grants: list[Grant], at: dt.datetime,
                 encoders: Encoders | None = None) -> None:
        self.withheld = withheld_reason(resource)
        self.query_only = None if self.withheld or offers(resource, "data_exchange") else \
            f"{resource.id} is provided by online query only (Art. 17)"
        self.projections = [] if self.withheld or self.query_only else [
            _Projection(resource, g, encoders(g) if encoders else json_bytes)
            for g in grants_in_force(grants, resource, at)]

    def route(self, event: dict[str, Any]) -> RouteResult:
        """Decide the deliveries of one decoded change event."""
        if self.withheld:
            return RouteResult(withheld=True, reason=self.withheld)
        if self.query_only:
            return RouteResult(reason=self.query_only)
        return RouteResult(deliveries=[p.delivery(event) for p in self.projections])


def route(resource: Resource, event: dict[str, Any], grants: list[Grant], at: dt.datetime
          ) -> RouteResult:
    """Decide the deliveries of one decoded change event at time ``at``."""
    return RoutePlan(resource, grants, at).route(event)


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
