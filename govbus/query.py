"""Online query and backfill (Art. 17), under the same grants as data exchange (Art. 15, 25):
request and response, not a stream.

- :func:`query` looks up the current record of one entity, projected and masked for the
  asking agency's grant, and appends the access to the delivery log (channel ``query``)
  before returning it, in the log's ``query`` shard: no access goes unlogged (Art. 24, 31).
- :func:`backfill` sends the current state of every entity of a resource (op ``r``) to
  ``deliver.<agency>.<resource>``, chunk by chunk, and logs each chunk (channel
  ``backfill``, in the log's ``backfill`` shard) once the broker acknowledged it — for an
  agency that was granted a resource after its events went by.

The current state is the ``entity_state`` table the hot path keeps.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg2
from confluent_kafka import Producer

from govbus.core import db, sharing_store
from govbus.core.catalogue import Resource
from govbus.core.config import Settings
from govbus.core.control_plane import load_catalogue_meta
from govbus.core.deliveries import DeliverySchemas
from govbus.core.envelope import govbus_version, now_ms
from govbus.core.errors import DatabaseError, NotFoundError
from govbus.core.kafka import ensure_topics, producer_config
from govbus.core.keyring import bus_signer
from govbus.core.registry import SchemaRegistry
from govbus.core.routing import (
    Delivery,
    Encoder,
    deliver_topic,
    grant_for,
    make_delivery,
    offers,
    with_meta,
    withheld_reason,
)
from govbus.core.sharing import Grant, SharingError, SharingForbidden
from govbus.delivery_log import BACKFILL_SHARD, QUERY_SHARD, LogWriter, entry
from govbus.stream_apps.route import log_entry, send_deliveries

BACKFILL_CHUNK = 500


class RecordNotFound(NotFoundError):
    """No current record with the key asked for."""

    rule = "query.no_record"
    article = "Art. 17"


def current_resource(dsn: str, resource: str | Resource) -> Resource:
    """The registered resource (``agency.resource``) with its current catalogue metadata."""
    resource_id = resource.id if isinstance(resource, Resource) else resource
    if resource_id.count(".") != 1:
        raise SharingError(f"{resource_id!r}: name a resource as agency.resource, "
                           "e.g. tax.tax_registration")
    registered = SchemaRegistry(dsn).latest(resource_id).resource
    return with_meta(registered, load_catalogue_meta(dsn).get(resource_id))


def grant_in_force(dsn: str, agency: str, resource: Resource, method: str) -> Grant:
    """The asking agency's grant in force, or SharingError saying which rule refuses."""
    reason = withheld_reason(resource)
    if reason:
        raise SharingError(f"{agency} cannot receive {resource.id}: {reason}")
    if not offers(resource, method):
        offered = ", ".join(resource.meta.get("provision_methods") or []) or "nothing"
        raise SharingError(f"{resource.id} is not provided by {method} (its catalogue entry "
                           f"offers {offered}; Art. 7, 17)")
    if agency == resource.provider:
        raise SharingError(f"{agency} is the provider of {resource.id}: it reads its own "
                           "source of record, not the bus")
    grants = sharing_store.load_grants(dsn, resource_id=resource.id, recipient=agency)
    grant = grant_for(grants, resource, agency, dt.datetime.now(dt.UTC))
    if grant is None:
        raise SharingForbidden(f"{agency} holds no grant in force for {resource.id} "
                               f"({resource.share_class}): apply with `govbus request` and "
                               "wait for approval (Art. 15, 18)", rule="grant.none_in_force")
    return grant


def _state_event(resource: Resource, row: tuple[Any, ...], version: int = 0
                 ) -> dict[str, Any]:
    """An ``r`` (snapshot) event from an ``entity_state`` row."""
    key, record, event_id, locality, updated_ms = row
    return {"event_id": event_id, "op": "r", "key": key, "after": record, "before": None,
            "source": {"version": govbus_version(), "connector": "api",
                       "name": f"govbus.{resource.provider}", "ts_ms": updated_ms,
                       "snapshot": "true", "db": "", "agency": resource.provider,
                       "locality": locality},
            "schema_version": version, "occurred_ms": updated_ms, "ts_ms": now_ms()}


def answer(value: dict[str, Any]) -> dict[str, Any]:
    """The online query's answer from a delivery's value: the projected record and what
    it is, as the HTTP service and the command line show it."""
    source = value["source"]
    return {"event_id": value["event_id"], "resource": value["resource"], "op": value["op"],
            "key": value["key"], "record": value["after"], "provider": source["agency"],
            "locality": source["locality"], "occurred_ms": value["occurred_ms"],
            "grant_id": value["grant_id"], "masked_fields": value["masked_fields"]}


_STATE_COLS = "entity_key, record, event_id, locality, updated_ms"


def query(settings: Settings, agency: str, resource: str | Resource, key: str
          ) -> dict[str, Any]:
    """The current record of ``key`` as ``agency`` may see it (Art. 17 online query).

    Returns the delivered value (``record`` is the projected record); the access is logged
    first. SharingError without a grant in force, RecordNotFound
    when no record has that key."""
    dsn = settings.database_url
    res = current_resource(dsn, resource)
    grant = grant_in_force(dsn, agency, res, "online_query")
    try:
        with db.transaction(dsn) as conn, conn.cursor() as cur:
            cur.execute(f"SELECT {_STATE_COLS} FROM entity_state "
                        "WHERE resource_id = %s AND entity_key = %s", (res.id, key))
            row = cur.fetchone()
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot read entity_state: {exc}") from exc
    if row is None:
        raise RecordNotFound(f"{res.id} has no record with key {key!r}")
    delivery = make_delivery(res, _state_event(res, row), grant)
    # Every query is its own log row (Art. 17, 24): the logged id carries a query id, so a
    # second query of an unchanged record is not taken for a replay of the first.
    query_id = uuid.uuid4().hex[:16]
    logged = delivery._replace(value=delivery.value | {
        "event_id": f"{delivery.value['event_id']}#query-{query_id}"})
    _log(dsn, [entry(logged, "query", None, None, now_ms(), shard=QUERY_SHARD)])
    return answer(delivery.value) | {"query_id": query_id}


def _log(dsn: str, entries: list[Any]) -> None:
    writer = LogWriter(dsn)
    try:
        writer.append(entries)
    finally:
        writer.close()


def _state_rows(dsn: str, resource_id: str) -> Iterator[list[tuple[Any, ...]]]:
    """Every current record of a resource, in chunks, from a server-side cursor."""
    try:
        with db.transaction(dsn) as conn, conn.cursor(name="govbus_backfill") as cur:
            cur.itersize = BACKFILL_CHUNK
            cur.execute(f"SELECT {_STATE_COLS} FROM entity_state WHERE resource_id = %s "
                        "ORDER BY entity_key", (resource_id,))
            while rows := cur.fetchmany(BACKFILL_CHUNK):
                yield rows
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot read entity_state: {exc}") from exc


def backfill(settings: Settings, agency: str, resource: str | Resource) -> int:
    """Send the current state of every entity to ``agency`` (op ``r``); return the count.

    Each record goes to ``deliver.<agency>.<resource>`` projected for the agency's grant;
    each chunk is logged (channel ``backfill``) once the broker acknowledged it, and before
    the next is sent, so an interrupted backfill leaves no acknowledged delivery unlogged."""
    dsn = settings.database_url
    res = current_resource(dsn, resource)
    grant = grant_in_force(dsn, agency, res, "data_exchange")
    version = SchemaRegistry(dsn).latest(res.id).version
    schemas = DeliverySchemas(dsn)

    def encoder(record: dict[str, Any] | None) -> Encoder:
        """The projection of the granted fields ``record`` holds: a record kept from an
        older contract version may lack one, and is sent with what it has."""
        held = tuple(f for f in grant.fields if f in (record or {}))
        return schemas.encoder(agency, res, version, held, grant.masked_fields,
                               grant.delivery_format)

    signer = bus_signer(settings)  # signed as the hot path's deliveries are
    ensure_topics(settings, [deliver_topic(agency, res)])
    producer = Producer(producer_config(settings, **{"linger.ms": 20}))
    writer = LogWriter(dsn)
    sent = 0
    try:
        for rows in _state_rows(dsn, res.id):
            # "channel" tells the subscriber to confirm receipt as a backfill, as it is logged
            deliveries: list[Delivery] = [
                d._replace(value=d.value | {"channel": "backfill"})
                for d in (make_delivery(res, _state_event(res, r, version), grant,
                                        encoder(r[1])) for r in rows)]
            writer.append([log_entry(a, "backfill")
                           for a in send_deliveries(producer, deliveries, signer,
                                                    BACKFILL_SHARD)])
            sent += len(deliveries)
    finally:
        writer.close()
    return sent
