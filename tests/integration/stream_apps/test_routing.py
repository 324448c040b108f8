"""Routing against a real broker and PostgreSQL (Art. 15, 17, 25): a hot-path worker runs in
a thread, events are published with the Publisher, deliveries are read back from the broker and
their log rows from the delivery log.

The session database is shared: every test uses agencies of its own (``agency_<hex>``) and
entities of its own (fresh credit codes), and cleans nothing else.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg2.extras
import pytest
from confluent_kafka import Message

from govbus import sample
from govbus.core import db, sharing_store
from govbus.core.catalogue import Catalogue, Resource
from govbus.core.config import Settings
from govbus.core.kafka import admin, ensure_topics
from govbus.core.sharing import SharingError
from govbus.delivery_log import list_deliveries
from govbus.producers.publisher import Change, Publisher
from govbus.query import RecordNotFound, backfill, query
from govbus.stream_apps.hotpath import HotPath
from tests.integration.helpers import TopicReader, commitment, delivered, wait_until

TAX = "tax.tax_registration"
ADOPTION = "civil_affairs.adoption_register"


@dataclass
class Pipeline:
    hotpath: HotPath


@pytest.fixture
def pipeline(settings: Settings) -> Iterator[Pipeline]:
    """A hot-path worker in a thread, in a consumer group of its own."""
    worker = HotPath(settings, group=f"test-hotpath-{uuid.uuid4().hex[:8]}", batch=100)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    yield Pipeline(worker)
    worker.stop()
    thread.join(30)
    assert not thread.is_alive(), "the hot path did not stop"


def agency(tag: str = "") -> str:
    return f"agency_{tag}{uuid.uuid4().hex[:10]}"


def company(rng: random.Random, **over: Any) -> dict[str, Any]:
    code = sample.uscc(rng, "360502")
    return {"uscc": code, "taxpayer_name": f"新余市{code[-4:]}有限公司",
            "legal_representative": "李强", "registered_address": "渝水区劳动北路1号",
            "taxpayer_type": "GENERAL", "tax_authority": "国家税务总局新余市渝水区税务局",
            "credit_rating": "AAA-2025-07"} | over


def grant(catalogue: Catalogue, dsn: str, requester: str, resource_id: str,
          fields: list[str] | None, confidentiality: str | None = None) -> int:
    """Apply and have the provider approve (Art. 18); the grant id."""
    res = catalogue.resources[resource_id]
    if confidentiality:  # Art. 25: a registered agreement of the requester
        confidentiality = commitment(dsn, requester, resource_id, kind="confidentiality")
    out = sharing_store.file_request(dsn, res, requester, "statutory duties (test)", fields,
                                     commitment(dsn, requester, resource_id), confidentiality)
    if out["status"] == "pending":
        out = sharing_store.decide(dsn, out["request_id"], str(res.provider), True, "ok")
    assert out["grant_id"], out
    return int(out["grant_id"])


def forced_grant(dsn: str, recipient: str, res: Resource) -> int:
    """A grant row the rules would never create (for a not-shared resource)."""
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        fields = [f.name for f in res.fields]
        cur.execute("""INSERT INTO sharing_requests (requester, resource_id, purpose, fields,
                           commitment_ref, share_class, status, due_at)
                       VALUES (%s, %s, 'forced', %s, 'SC', %s, 'granted', now())
                       RETURNING request_id""", (recipient, res.id, fields, res.share_class))
        request_id = cur.fetchone()[0]
        cur.execute("INSERT INTO grants (request_id, recipient, resource_id, fields) "
                    "VALUES (%s, %s, %s, %s) RETURNING grant_id",
                    (request_id, recipient, res.id, fields))
        return int(cur.fetchone()[0])


def body(msg: Message, settings: Settings) -> Any:
    """A delivery as the subscriber decodes it (by the schema id it carries)."""
    return delivered(msg, settings.database_url)


def header(msg: Message, name: str) -> str:
    value = dict(msg.headers() or [])[name]
    return value.decode() if isinstance(value, bytes) else str(value)


def records_for(settings: Settings, recipient: str, event_ids: set[str],
                channel: str = "exchange") -> list[dict[str, Any]]:
    """The delivery log's rows of deliveries to ``recipient`` (other tests' grants on the
    resource are in force too: the session database is shared)."""
    return [r for r in list_deliveries(settings.database_url, recipient=recipient, limit=10**6)
            if r["event_id"] in event_ids and r["channel"] == channel]


def topic_exists(settings: Settings, topic: str) -> bool:
    return topic in admin(settings).list_topics(timeout=10).topics


def publish(settings: Settings, changes: list[Change], resource: str = TAX) -> list[str]:
    agency_name, name = resource.split(".")
    report = Publisher(settings).publish(agency_name, name, changes)
    assert report.published == len(changes), report.as_dict()
    return report.event_ids


def test_only_granted_agency_receives_its_fields_masked(
        settings: Settings, catalogue: Catalogue, pipeline: Pipeline) -> None:
    rng = random.Random(uuid.uuid4().int)
    granted, outsider = agency(), agency()
    gid = grant(catalogue, settings.database_url, granted, TAX,
                ["uscc", "taxpayer_name", "credit_rating"])  # no confidentiality ref: masked
    topic = f"deliver.{granted}.tax_registration"
    ensure_topics(settings, [topic])
    inbox = TopicReader(settings, [topic])
    a, b = company(rng), company(rng)
    ids = publish(settings, [Change("c", a), Change("c", b),
                             Change("u", a | {"taxpayer_name": "新名称", "tax_authority": "x"},
                                    before=a)])

    got = inbox.until(3, timeout=60)
    by_id = {body(m, settings)["event_id"]: m for m in got}
    assert set(by_id) == set(ids)
    for msg in got:
        value = body(msg, settings)
        assert set(value["after"]) == {"uscc", "taxpayer_name", "credit_rating"}  # Art. 25
        assert value["after"]["credit_rating"] == "AAA******07"
        assert value["masked_fields"] == ["credit_rating"] and value["grant_id"] == gid
        assert (value["resource"], value["source"]["agency"], value["source"]["locality"]) \
            == (TAX, "tax", "360502")
        assert bytes(msg.key() or b"").decode() == value["key"] == value["after"]["uscc"]
        assert header(msg, "event_id") == value["event_id"]
        assert header(msg, "grant_id") == str(gid)
    update = body(by_id[ids[2]], settings)
    assert update["op"] == "u" and update["after"]["taxpayer_name"] == "新名称"
    assert update["before"]["taxpayer_name"] == a["taxpayer_name"]

    # each delivery has its log row, naming where the delivered message sits
    recs = wait_until(lambda: len(records_for(settings, granted, set(ids))) >= 3 and
                      records_for(settings, granted, set(ids)), 30, "3 delivery records")
    placed = {(m.topic(), m.partition(), m.offset()) for m in got}
    assert {(r["topic"], r["partition"], r["offset"]) for r in recs} == placed
    for r in recs:
        assert (r["recipient"], r["provider"], r["resource"], r["grant_id"]) == (
            granted, "tax", TAX, gid)
        assert r["fields"] == ["uscc", "taxpayer_name", "credit_rating"]
        assert r["masked_fields"] == ["credit_rating"] and r["delivered_ms"] > 0
    # the outsider, without a grant, received nothing: no topic, no log row
    assert not topic_exists(settings, f"deliver.{outsider}.tax_registration")
    assert not list_deliveries(settings.database_url, recipient=outsider)
    assert pipeline.hotpath.stats[f"delivered {TAX}"] >= 3
    inbox.close()


def test_revoked_grant_stops_deliveries_within_seconds(
        settings: Settings, catalogue: Catalogue, pipeline: Pipeline) -> None:
    rng = random.Random(uuid.uuid4().int)
    # "a" sorts before "b": per event, the revoked agency's record would precede the other's
    revoked, kept = agency("a"), agency("b")
    gid_revoked = grant(catalogue, settings.database_url, revoked, TAX, ["uscc"])
    grant(catalogue, settings.database_url, kept, TAX, ["uscc", "tax_authority"])
    topics = [f"deliver.{revoked}.tax_registration", f"deliver.{kept}.tax_registration"]
    ensure_topics(settings, topics)
    to_revoked, to_kept = TopicReader(settings, topics[:1]), TopicReader(settings, topics[1:])
    first = publish(settings, [Change("c", company(rng))])
    to_revoked.until(1, timeout=60)
    to_kept.until(1, timeout=30)

    sharing_store.revoke(settings.database_url, gid_revoked, "tax", "duties ended")
    revoked_by = dt.datetime.now(dt.UTC)
    # bounded: the hot path reloads grants every GOVBUS_GRANT_REFRESH_S (1 s) even when idle
    wait_until(lambda: (pipeline.hotpath.control.loaded_at or revoked_by) > revoked_by, 5,
               "the hot path to reload its grants after the revocation")
    later = publish(settings, [Change("c", company(rng)), Change("c", company(rng))])

    got = to_kept.until(3, timeout=30)
    assert {body(m, settings)["event_id"] for m in got} == set(first + later)
    wait_until(lambda: len(records_for(settings, kept, set(later))) == 2, 30,
               "the kept agency's log rows")
    # a batch's deliveries are logged in one transaction: a delivery of a later event to
    # the revoked agency would be logged with the kept agency's
    assert records_for(settings, revoked, set(first))
    assert not records_for(settings, revoked, set(later))
    to_revoked.poll()
    assert [body(m, settings)["event_id"] for m in to_revoked.messages] == first
    for reader in (to_revoked, to_kept):
        reader.close()


def test_not_shared_reaches_nobody_and_is_counted_withheld(
        settings: Settings, catalogue: Catalogue, pipeline: Pipeline) -> None:
    # Art. 15, Civil Code Art. 1110: not even a grant row (which the rules never create) helps
    adoption = catalogue.resources[ADOPTION]
    nosy = agency()
    forced_grant(settings.database_url, nosy, adoption)
    rng = random.Random(uuid.uuid4().int)
    children = []
    for _ in range(3):
        child_id, _born = sample.resident_id(rng, "360502")
        adopter_id, _born = sample.resident_id(rng, "360502")
        children.append({"resident_id": child_id, "name": "张乐", "adopter_id": adopter_id,
                         "registered_on": "2025-06-01"})
    ids = publish(settings, [Change("c", c) for c in children], ADOPTION)

    # the counter moves only after the batch's outputs were acknowledged and committed
    wait_until(lambda: pipeline.hotpath.stats[f"withheld {ADOPTION}"] >= 3, 60,
               "3 withheld adoption events")
    assert pipeline.hotpath.stats[f"delivered {ADOPTION}"] == 0
    assert not topic_exists(settings, f"deliver.{nosy}.adoption_register")
    assert not [r for r in list_deliveries(settings.database_url, resource=ADOPTION)
                if r["event_id"] in ids or r["recipient"] == nosy]
    with pytest.raises(SharingError, match="Art. 15"):
        query(settings, nosy, ADOPTION, children[0]["resident_id"])


def state_event_id(dsn: str, key: str, resource: str = TAX) -> str | None:
    """The event id ``entity_state`` holds for an entity of ``resource``."""
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT event_id FROM entity_state WHERE resource_id = %s "
                    "AND entity_key = %s", (resource, key))
        row = cur.fetchone()
        return row[0] if row else None


def test_online_query_returns_projected_current_record(
        settings: Settings, catalogue: Catalogue, pipeline: Pipeline) -> None:
    # Art. 17 online query, under the grant's projection and masking (Art. 25)
    rng = random.Random(uuid.uuid4().int)
    asker, stranger = agency(), agency()
    gid = grant(catalogue, settings.database_url, asker, TAX,
                ["uscc", "registered_address", "credit_rating"])
    a, gone = company(rng), company(rng)
    ids = publish(settings, [Change("c", a), Change("c", gone),
                             Change("u", a | {"registered_address": "渝水区新址9号"}, before=a),
                             Change("d", None, before=gone)])
    dsn = settings.database_url
    # a batch's state is written with its log rows, before its offsets are committed
    wait_until(lambda: len(records_for(settings, asker, set(ids))) == 4, 60, "4 log rows")
    wait_until(lambda: state_event_id(dsn, a["uscc"]) == ids[2] and
               state_event_id(dsn, gone["uscc"]) is None, 10, "the update and the delete")

    out = query(settings, asker, TAX, a["uscc"])
    assert out["record"] == {"uscc": a["uscc"], "registered_address": "渝水区新址9号",
                             "credit_rating": "AAA******07"}
    assert (out["event_id"], out["op"], out["grant_id"], out["masked_fields"]) == (
        ids[2], "r", gid, ["credit_rating"])
    with pytest.raises(RecordNotFound, match=gone["uscc"]):
        query(settings, asker, TAX, gone["uscc"])
    with pytest.raises(SharingError, match=r"no grant in force.*Art. 15, 18"):
        query(settings, stranger, TAX, a["uscc"])
    # each query is its own log row, written before the answer: the logged id carries the
    # query's id
    logged_id = f"{ids[2]}#query-{out['query_id']}"
    [rec] = records_for(settings, asker, {logged_id}, "query")
    assert (rec["recipient"], rec["grant_id"], rec["topic"], rec["partition"],
            rec["offset"]) == (asker, gid, None, None, None)
    assert rec["fields"] == ["uscc", "registered_address", "credit_rating"]


def tax_state(dsn: str) -> dict[str, dict[str, Any]]:
    with db.transaction(dsn) as conn, conn.cursor(
            cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("SELECT * FROM entity_state WHERE resource_id = %s", (TAX,))
        return {r["entity_key"]: dict(r) for r in cur.fetchall()}


def test_backfill_sends_current_state_to_a_late_grantee(
        settings: Settings, catalogue: Catalogue, pipeline: Pipeline) -> None:
    rng = random.Random(uuid.uuid4().int)
    firms = [company(rng) for _ in range(4)]
    newest = firms[0] | {"tax_authority": "新税务所"}
    ids = publish(settings, [Change("c", f) for f in firms] +
                  [Change("u", newest, before=firms[0])])
    dsn = settings.database_url
    wait_until(lambda: state_event_id(dsn, firms[0]["uscc"]) == ids[-1] and all(
        state_event_id(dsn, f["uscc"]) for f in firms), 60, "the firms in state")
    # a record kept from an earlier contract version, without a field the grant lists
    older = company(rng)
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO entity_state VALUES (%s, %s, %s, %s, '360502', 1000)",
                    (TAX, older["uscc"], psycopg2.extras.Json(
                        {k: v for k, v in older.items() if k != "tax_authority"}),
                     f"older-{uuid.uuid4()}"))
    late = agency()
    gid = grant(catalogue, dsn, late, TAX, ["uscc", "tax_authority"], "CA-1")
    topic = f"deliver.{late}.tax_registration"
    ensure_topics(settings, [topic])
    inbox = TopicReader(settings, [topic])
    state = tax_state(dsn)  # the session database holds other tests' firms too

    sent = backfill(settings, late, TAX)
    assert sent == len(state)
    got = inbox.until(sent, timeout=60)
    mine = {v["key"]: v for v in (body(m, settings) for m in got)}
    assert set(mine) == set(state)
    assert mine[firms[0]["uscc"]]["after"] == {"uscc": firms[0]["uscc"],
                                                "tax_authority": "新税务所"}
    assert mine[older["uscc"]]["after"] == {"uscc": older["uscc"]}  # sent with what it has
    assert {v["op"] for v in mine.values()} == {"r"}
    assert mine[firms[0]["uscc"]]["event_id"] == ids[-1]
    sent_ids = {v["event_id"] for v in mine.values()}
    # logged before backfill() returned, each with where its message sits
    recs = records_for(settings, late, sent_ids, "backfill")
    assert {(r["topic"], r["partition"], r["offset"]) for r in recs} == {
        (m.topic(), m.partition(), m.offset()) for m in got}
    assert {(r["recipient"], r["grant_id"]) for r in recs} == {(late, gid)}
    inbox.close()
