"""Deliveries as the hot path writes them, read by the subscriber, against a real broker and
PostgreSQL: framed Avro under each grant's projection schema, registered under the delivery
topic's subject; the agency's own table gets the granted fields as columns; a grant may ask
for the same envelope as JSON (Art. 24, 25)."""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from govbus.consumers.subscriber import Subscriber, SubscriberError, TableSink
from govbus.core import db, sharing_store
from govbus.core.catalogue import Catalogue
from govbus.core.config import Settings
from govbus.core.kafka import ensure_topics
from govbus.core.serde import unframe
from govbus.producers.publisher import Change, Publisher
from govbus.stream_apps.hotpath import HotPath
from tests.integration.helpers import TopicReader, commitment, running, wait_until
from tests.integration.stream_apps.test_routing import agency, company

TAX = "tax.tax_registration"
FIELDS = ["uscc", "taxpayer_name", "taxpayer_type", "credit_rating"]


@pytest.fixture
def hotpath(settings: Settings) -> Iterator[HotPath]:
    worker = HotPath(settings, group=f"test-hotpath-{uuid.uuid4().hex[:8]}", batch=100)
    with running(worker):
        yield worker


def grant(settings: Settings, catalogue: Catalogue, requester: str,
          delivery_format: str = "avro") -> int:
    """Applied for and approved by tax, with no confidentiality agreement: credit_rating is
    masked (Art. 25)."""
    dsn = settings.database_url
    out = sharing_store.file_request(dsn, catalogue.resources[TAX], requester, "duties",
                                     FIELDS, commitment(dsn, requester, TAX),
                                     delivery_format=delivery_format)
    out = sharing_store.decide(dsn, out["request_id"], "tax", True, "ok")
    return int(out["grant_id"])


def publish(settings: Settings, changes: list[Change]) -> list[str]:
    report = Publisher(settings).publish("tax", "tax_registration", changes)
    assert report.published == len(changes), report.as_dict()
    return report.event_ids


def rows(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def test_deliveries_are_framed_avro_of_a_registered_projection_applied_as_columns(
        settings: Settings, catalogue: Catalogue, empty_database: str,
        hotpath: HotPath) -> None:
    rng = random.Random(uuid.uuid4().int)
    me = agency()
    gid = grant(settings, catalogue, me)
    topic = f"deliver.{me}.tax_registration"
    ensure_topics(settings, [topic])
    inbox = TopicReader(settings, [topic])
    a, b = company(rng), company(rng, taxpayer_type="SMALL_SCALE", credit_rating=None)
    ids = publish(settings, [Change("c", a), Change("c", b),
                             Change("u", a | {"taxpayer_name": "新名称"}, before=a)])
    got = inbox.until(3, timeout=60)

    # framed Avro, under one schema id registered under the delivery topic's subject
    schema_ids = {unframe(m.value())[0] for m in got}
    assert len(schema_ids) == 1
    [(subject, recipient, schema)] = rows(
        settings.database_url, "SELECT subject, recipient, schema FROM delivery_schemas "
        f"WHERE schema_id = {schema_ids.pop()}")
    assert (subject, recipient) == (f"{topic}-value", me)
    assert schema["name"] == "Envelope" and schema["namespace"].endswith(
        f"deliver.{me}.tax.tax_registration")
    value = next(f for f in schema["fields"] if f["name"] == "before")["type"][1]
    assert [f["name"] for f in value["fields"]] == FIELDS  # only the granted fields
    masked = next(f for f in value["fields"] if f["name"] == "credit_rating")
    assert masked["type"] == ["null", "string"]  # a masked value fits

    decoded = {inbox.value(m)["event_id"]: inbox.value(m) for m in got}
    assert set(decoded) == set(ids)
    first = decoded[ids[0]]
    assert first["after"] == {"uscc": a["uscc"], "taxpayer_name": a["taxpayer_name"],
                              "taxpayer_type": "GENERAL", "credit_rating": "AAA******07"}
    assert (first["op"], first["grant_id"], first["masked_fields"]) == (
        "c", gid, ["credit_rating"])
    assert first["source"]["agency"] == "tax" and first["source"]["connector"] == "api"
    assert decoded[ids[2]]["before"]["taxpayer_name"] == a["taxpayer_name"]

    # the agency's own table with a column per granted field gets real columns
    with db.transaction(empty_database) as conn, conn.cursor() as cur:
        cur.execute("""CREATE TABLE firms (entity_key text PRIMARY KEY, event_id text NOT NULL,
                       op text NOT NULL, occurred_ms bigint NOT NULL, uscc text,
                       taxpayer_name text, taxpayer_type text, credit_rating text)""")
    sub = Subscriber(settings, me, TableSink(empty_database, "firms"), max_messages=3,
                     refresh_s=0.5)
    with running(sub):
        wait_until(lambda: sub.stats["delivered"] >= 3, 60, "three deliveries applied")
    table = {r[0]: r[1:] for r in rows(empty_database, "SELECT entity_key, op, uscc, "
                                       "taxpayer_name, taxpayer_type, credit_rating "
                                       "FROM firms")}
    assert table == {a["uscc"]: ("u", a["uscc"], "新名称", "GENERAL", "AAA******07"),
                     b["uscc"]: ("c", b["uscc"], b["taxpayer_name"], "SMALL_SCALE", None)}
    assert sub.stats["malformed"] == 0
    inbox.close()


def test_a_column_table_without_a_granted_field_is_refused_at_start(
        settings: Settings, catalogue: Catalogue, empty_database: str) -> None:
    me = agency()
    grant(settings, catalogue, me)
    with db.transaction(empty_database) as conn, conn.cursor() as cur:
        cur.execute("""CREATE TABLE thin (entity_key text PRIMARY KEY, event_id text NOT NULL,
                       op text NOT NULL, occurred_ms bigint NOT NULL, uscc text)""")
    sub = Subscriber(settings, me, TableSink(empty_database, "thin"), max_messages=1)
    with pytest.raises(SubscriberError, match="taxpayer_name, taxpayer_type, credit_rating"):
        sub.run()


def test_a_grant_may_take_its_deliveries_as_json(
        settings: Settings, catalogue: Catalogue, empty_database: str,
        hotpath: HotPath) -> None:
    rng = random.Random(uuid.uuid4().int)
    me = agency()
    gid = grant(settings, catalogue, me, delivery_format="json")
    [held] = [g for g in sharing_store.load_grants(settings.database_url, recipient=me)]
    assert held.delivery_format == "json"
    topic = f"deliver.{me}.tax_registration"
    ensure_topics(settings, [topic])
    inbox = TopicReader(settings, [topic])
    firm = company(rng)
    [event_id] = publish(settings, [Change("c", firm)])
    [msg] = inbox.until(1, timeout=60)
    value = json.loads(msg.value())  # no schema registry needed
    assert value["event_id"] == event_id and value["grant_id"] == gid
    assert value["after"]["credit_rating"] == "AAA******07" and set(value["after"]) == set(FIELDS)
    assert value["source"]["agency"] == "tax" and value["op"] == "c"
    sub = Subscriber(settings, me, TableSink(empty_database, "firms_json"), max_messages=1,
                     refresh_s=0.5)
    with running(sub):
        wait_until(lambda: sub.stats["delivered"] >= 1, 60, "the delivery applied")
    [(key, record)] = rows(empty_database, "SELECT entity_key, record FROM firms_json")
    assert key == firm["uscc"] and record == value["after"]
    inbox.close()


def test_an_unknown_delivery_format_is_refused_naming_the_rule(
        settings: Settings, catalogue: Catalogue) -> None:
    with pytest.raises(sharing_store.SharingError, match="delivery format 'xml'") as caught:
        sharing_store.file_request(settings.database_url, catalogue.resources[TAX], agency(),
                                   "duties", FIELDS, "SC-1", delivery_format="xml")
    assert caught.value.rule == "request.delivery_format"


def test_concurrent_registrations_of_one_projection_agree_on_one_schema_id(
        settings: Settings, catalogue: Catalogue) -> None:
    """Workers registering the same projection at once agree on one schema id."""
    from govbus.core.deliveries import DeliverySchemas
    res = catalogue.resources[TAX]
    me = agency()
    framed: list[Any] = []

    def one() -> None:
        framed.append(DeliverySchemas(settings.database_url).encoder(
            me, res, 1, tuple(FIELDS), ("credit_rating",)))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len({f.schema_id for f in framed}) == 1
    assert rows(settings.database_url, "SELECT count(*) FROM delivery_schemas WHERE "
                f"recipient = '{me}'") == [(1,)]
