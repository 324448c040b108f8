"""The gate rules for records that decode but say something untrue, through the hot path on a
real broker and a real PostgreSQL: a blank event id, an ``occurred_ms`` in year 9999, a
lowercase check character, an update whose ``before`` image is invalid, a topic that is not
``ingest.<agency>.<resource>``. Each lands on ``dlq.<agency>`` with its rule and article and is
neither validated nor delivered; the valid records beside them are delivered and logged, and a
correction of the entity the year-9999 record named is what ``entity_state`` holds.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from govbus import sample
from govbus.core.catalogue import Catalogue
from govbus.core.config import Settings
from govbus.core.kafka import ensure_topics
from govbus.core.registry import SchemaRegistry
from govbus.stream_apps.hotpath import HotPath
from tests.corpus.bad_inputs import (
    GATE_CORPUS,
    POP,
    POP_TOPIC,
    YEAR_9999_MS,
    GateCase,
    event,
    framed,
    valid_payload,
)
from tests.integration.helpers import SignedProducer, TopicReader, running, wait_until
from tests.integration.kills import logged
from tests.integration.stream_apps.test_routing import agency, grant, state_event_id

RULES = {"envelope.event_id_blank", "envelope.occurred_in_future",
         "identifier.resident_id_lowercase", "envelope.before_invalid", "topic.malformed"}
EMPTY_AGENCY = GateCase("topic_empty_agency",
                        lambda s: ("ingest..population_register", valid_payload(s)),
                        "topic.malformed", "Art. 7")
CASES = [c for c in GATE_CORPUS if c.rule in RULES] + [EMPTY_AGENCY]
ODD_TOPICS = ["ingest..population_register", "ingest.public_security.",
              f"{POP_TOPIC}.extra", "dlq.unknown"]


@pytest.fixture
def hotpath(settings: Settings) -> Iterator[HotPath]:
    ensure_topics(settings, ODD_TOPICS)  # before it subscribes: no wait for a metadata refresh
    with running(HotPath(settings, group=f"test-gate-rules-{uuid.uuid4().hex[:8]}",
                         batch=200)) as stage:
        yield stage


def held(dsn: str, key: str) -> str | None:
    """The event id ``entity_state`` holds for a population-register entity."""
    return state_event_id(dsn, key, POP)


def test_each_bad_record_lands_on_its_dlq_with_its_rule_and_is_never_delivered(
        settings: Settings, catalogue: Catalogue, hotpath: HotPath) -> None:
    assert {c.rule for c in CASES} == RULES  # every rule has a record here
    rng = random.Random(uuid.uuid4().int)
    recipient = agency("rules")
    grant(catalogue, settings.database_url, recipient, POP, ["resident_id", "name"])
    inbox_topic = f"deliver.{recipient}.population_register"
    ensure_topics(settings, [inbox_topic])
    dlq = TopicReader(settings, ["dlq.public_security", "dlq.unknown"])
    inbox = TopicReader(settings, [inbox_topic])
    validated = TopicReader(settings, [f"validated.{POP}"])
    schema_for = SchemaRegistry(settings.database_url).latest
    run = uuid.uuid4().hex[:8]
    raw = SignedProducer(settings)
    try:
        bad: dict[str, tuple[GateCase, str]] = {}  # record key -> its case, its DLQ topic
        for case in CASES:
            topic, payload = case.build(schema_for)
            assert payload is not None
            key = f"bad-{case.name}-{run}"
            raw.produce(topic, key=key.encode(), value=payload)
            agency_part = topic.split(".")[1] or "unknown"
            bad[key] = (case, f"dlq.{agency_part}")
        # a fresh entity: a year-9999 record, then the correction that must win
        person = sample.person(rng)
        future = event(schema_for, person, occurred_ms=YEAR_9999_MS)
        raw.produce(POP_TOPIC, key=f"bad-fresh-future-{run}".encode(),
                    value=framed(schema_for, future), headers={"event_id": future["event_id"]})
        bad[f"bad-fresh-future-{run}"] = (GateCase("fresh_future", lambda s: ("", b""),
                                                   "envelope.occurred_in_future", "Art. 19"),
                                          "dlq.public_security")
        assert raw.flush(30) == 0
        good: list[dict[str, Any]] = [
            event(schema_for, person | {"residence_address": "渝水区更正后地址1号"}, op="u"),
            event(schema_for, sample.person(rng)),
        ]
        moved = sample.person(rng)
        good.append(event(schema_for, moved | {"phone": None}, op="u", before=moved))
        for ev in good:
            raw.produce(POP_TOPIC, key=f"good-{ev['event_id']}".encode(),
                        value=framed(schema_for, ev), headers={"event_id": ev["event_id"]})
        assert raw.flush(30) == 0
        good_ids = {ev["event_id"] for ev in good}

        def rejected() -> dict[str, tuple[str, dict[str, Any]]]:
            return {m.key().decode(): (m.topic(), json.loads(m.value() or b"{}"))
                    for m in dlq.poll() if m.key() and m.key().decode() in bad}
        wait_until(lambda: set(rejected()) == set(bad), 60, "every bad record on its DLQ")
        for key, (topic, record) in rejected().items():
            case, dlq_topic = bad[key]
            assert topic == dlq_topic, (case.name, topic)
            assert record["rule"] == case.rule, (case.name, record["reasons"])
            assert record["reasons"][0]["article"] == case.article, case.name
            assert record["reasons"][0]["message"], case.name

        wait_until(lambda: {e for e, _ in logged(settings.database_url, recipient)} >= good_ids,
                   60, "every valid record delivered and logged")
        wait_until(lambda: len(inbox.poll()) >= len(good_ids), 30, "the deliveries read")
        delivered = [inbox.value(m)["event_id"] for m in inbox.poll()]
        assert sorted(delivered) == sorted(good_ids), "a bad record was delivered"
        assert sorted(e for e, _ in logged(settings.database_url, recipient)) == sorted(good_ids)
        wait_until(lambda: {m.key().decode() for m in validated.poll() if m.key()} >=
                   {f"good-{e}" for e in good_ids}, 30, "the valid records validated")
        assert not {m.key().decode() for m in validated.poll() if m.key()} & set(bad), \
            "a bad record reached validated.*"
        # the correction is the entity's state: the year-9999 record shadows nothing
        wait_until(lambda: held(settings.database_url, person["resident_id"]) == good[0][
            "event_id"], 30, "the correction in entity_state")
        assert hotpath.stats["retries"] == 0, "no batch was retried"
    finally:
        for reader in (dlq, inbox, validated):
            reader.close()


def test_the_publish_api_refuses_a_change_dated_ahead_of_its_clock(settings: Settings) -> None:
    """The gate's clock rule at the source too: the line is refused, with its rule, before it
    is sent (Art. 19)."""
    from govbus.core.envelope import now_ms
    from govbus.producers.publisher import Change, Publisher
    from tests.integration.stream_apps.test_routing import company

    rng = random.Random(7)
    ahead = now_ms() + 2 * settings.max_clock_skew_ms + 60_000
    report = Publisher(settings).publish("tax", "tax_registration", [
        Change("c", company(rng), occurred_ms=ahead), Change("c", company(rng))])
    assert report.published == 1
    [refusal] = report.refused
    assert refusal.index == 0
    assert [v.rule for v in refusal.violations] == ["envelope.occurred_in_future"]
