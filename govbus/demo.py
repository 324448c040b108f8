"""``govbus demo``: start everything, publish a realistic sample, summarise what happened.

The sample comes from five agencies; a few records are bad on purpose: some are refused by
the publisher before sending, some are sent by a "faulty adapter" that skips the checks, and
some are not events at all (garbage bytes, unknown schema ids, truncated Avro, a spoofed
sender). The summary is computed from what the gate wrote to the validated and DLQ topics,
and checked against what was published.
"""

from __future__ import annotations

import argparse
import json
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer

from govbus import demo_sharing, runtime, sample
from govbus.core import topics
from govbus.core.batching import produce
from govbus.core.config import Settings, read_runtime
from govbus.core.errors import GovbusError
from govbus.core.identifiers import resident_id_check_char
from govbus.core.kafka import consumer_config
from govbus.core.serde import frame
from govbus.producers.publisher import Change, Publisher


@dataclass
class Tally:
    published: Counter[str] = field(default_factory=Counter)       # per resource
    expected_bad: Counter[str] = field(default_factory=Counter)    # per resource
    refused: Counter[str] = field(default_factory=Counter)         # rule at the source
    accepted: Counter[str] = field(default_factory=Counter)        # per resource
    rejected: Counter[str] = field(default_factory=Counter)        # per resource
    rules: Counter[str] = field(default_factory=Counter)           # DLQ rule
    ids: set[str] = field(default_factory=set)                     # what we sent
    seen: set[str] = field(default_factory=set)


def corrupt(row: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A plausible adapter bug: a mistyped identifier digit (wrong check character)."""
    bad = dict(row)
    key = "resident_id" if "resident_id" in bad else "uscc"
    value = bad[key]
    if key == "resident_id":
        wrong = next(c for c in "0123456789X" if c != resident_id_check_char(value[:17]))
        bad[key] = value[:17] + wrong
    else:
        bad[key] = value[:17] + ("0" if value[17] != "0" else "1")
    return bad


def publish_sample(pub: Publisher, data: sample.Sample, rng: random.Random, tally: Tally,
                   say: runtime.Say) -> None:
    for resource_id, rows in data.rows.items():
        agency, name = resource_id.split(".")
        good, bad, refused_here = [], [], []
        for row in rows:
            roll = rng.random()
            if roll < 0.02:
                bad.append(Change("c", corrupt(row, rng)))
            elif roll < 0.03:
                refused_here.append(Change("c", corrupt(row, rng)))
            else:
                good.append(Change("c", row))
        good += [Change("u", dict(c.record or {}, **_moved(c.record, rng)))
                 for c in good[: len(good) // 20] if "residence_address" in (c.record or {})]
        for changes, validate in ((good, True), (refused_here, True), (bad, False)):
            report = pub.publish(agency, name, changes, validate=validate)
            tally.published[resource_id] += report.published
            tally.ids.update(report.event_ids)
            for refusal in report.refused:
                tally.refused[refusal.violations[0].rule] += 1
            if report.failed:
                raise GovbusError(f"broker did not acknowledge: {report.failed[:3]}")
        tally.expected_bad[resource_id] += len(bad)
        say(f"  {resource_id:<42} {tally.published[resource_id]:>6} published")


def _moved(record: dict[str, Any] | None, rng: random.Random) -> dict[str, Any]:
    return {"residence_address": sample.address(rng)}


def publish_garbage(pub: Publisher, tally: Tally, run: str) -> None:
    """Payloads that are not valid events, and one spoofed sender, onto ingest topics."""
    reg = pub.registry.latest("public_security.population_register")
    other = pub.registry.latest("tax.tax_registration")
    pop_topic = topics.ingest("public_security", "population_register")
    cases = [(pop_topic, b"\xff\xfenot avro at all"),
             (pop_topic, b"{\"resident_id\": \"1\"}"),
             (topics.ingest("market_regulation", "legal_entity_register"),
              frame(999999, b"\x02abc")),
             (pop_topic, frame(reg.schema_id, b"\x48")),
             (topics.ingest("hrss", "social_insurance_enrolment"),
              frame(other.schema_id, b"\x02x")),
             (topics.ingest("unknown_bureau", "secrets"), b"\x00\x00\x00\x00\x01")]
    # signed by market regulation: an agency signing for one that does not exist is refused
    # (auth.wrong_agency), as is its spoofed sender below
    spoof = Publisher(pub.settings, pub.catalogue, pub.registry, pub.producer,
                      signer=pub.signer_for("market_regulation"))
    for i, (topic, payload) in enumerate(cases):
        event_id = f"{run}-garbage-{i}"
        (spoof if "unknown_bureau" in topic else pub).produce_raw(topic, event_id, payload,
                                                                  event_id)
        tally.ids.add(event_id)
        tally.published["(not events)"] += 1
        tally.expected_bad["(not events)"] += 1
    # A spoofed sender: market regulation's adapter claims to be public security's (Art. 8),
    # signing with its own key: the gate refuses it (auth.wrong_agency).
    population = pub.catalogue.get("public_security", "population_register")
    person = sample.person(random.Random(run))
    event, _ = pub.prepare("market_regulation", population, Change("c", person))
    if event is not None:
        event["event_id"] = f"{run}-garbage-spoofed"
        spoof.send(population, event)
        tally.ids.add(event["event_id"])
        tally.published["(not events)"] += 1
        tally.expected_bad["(not events)"] += 1
    # A client with no key publishing a well-formed record as public security: refused
    # (auth.unsigned) before its contents are read.
    event, _ = pub.prepare("public_security", population, Change("u", person))
    if event is not None:
        event["event_id"] = f"{run}-garbage-unsigned"
        produce(pub.producer, pop_topic, event["key"], pub.encode(population, event), None,
                {"event_id": event["event_id"]})
        tally.ids.add(event["event_id"])
        tally.published["(not events)"] += 1
        tally.expected_bad["(not events)"] += 1
    if spoof.flush(30) + pub.flush(30):
        raise GovbusError("broker did not acknowledge the garbage payloads")


def collect(settings: Settings, tally: Tally, timeout: float, say: runtime.Say) -> None:
    """Read the gate's outputs until every event we sent is accounted for."""
    consumer = Consumer(consumer_config(settings, f"govbus-demo-{uuid.uuid4().hex[:8]}"))
    consumer.subscribe([topics.VALIDATED_PATTERN, topics.DLQ_PATTERN])
    deadline, last = time.monotonic() + timeout, 0.0
    try:
        while len(tally.seen) < len(tally.ids) and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if not msg.error():
                    _count(msg, tally)
            if time.monotonic() - last > 2:
                last = time.monotonic()
                say(f"  gate: {len(tally.seen)}/{len(tally.ids)} events decided")
    finally:
        consumer.close()


def _count(msg: Any, tally: Tally) -> None:
    topic = msg.topic()
    if topic.startswith(topics.VALIDATED_PREFIX):
        event_id = (dict(msg.headers() or []).get("event_id") or b"").decode()
        if event_id in tally.ids and event_id not in tally.seen:
            tally.seen.add(event_id)
            tally.accepted[topic.split(".", 1)[1]] += 1
        return
    record = json.loads(msg.value())
    event_id = record.get("event_id") or record.get("key")
    if event_id in tally.ids and event_id not in tally.seen:
        tally.seen.add(event_id)
        resource = record["resource"] if "garbage" not in event_id else "(not events)"
        tally.rejected[resource] += 1
        tally.rules[f"{record['rule']} [{record['reasons'][0]['article']}]"] += 1


def summary(tally: Tally, say: runtime.Say) -> bool:
    """Print the summary; True when it agrees with what was published."""
    total = sum(tally.published.values())
    accepted, rejected = sum(tally.accepted.values()), sum(tally.rejected.values())
    say("")
    say(f"{'resource':<42} {'published':>9} {'accepted':>9} {'rejected':>9}")
    for res in sorted(tally.published):
        say(f"{res:<42} {tally.published[res]:>9} {tally.accepted[res]:>9} "
            f"{tally.rejected[res]:>9}")
    say(f"{'total':<42} {total:>9} {accepted:>9} {rejected:>9}")
    say(f"\nrefused by the publisher before sending: {sum(tally.refused.values())}")
    for rule, n in tally.refused.most_common():
        say(f"  {rule:<40} {n:>6}")
    say(f"rejected by the gate into dlq.<agency>: {rejected}")
    for rule, n in tally.rules.most_common():
        say(f"  {rule:<40} {n:>6}")
    ok = (accepted + rejected == total and
          all(tally.rejected[r] == tally.expected_bad[r] for r in tally.published))
    say(f"\n{'consistent' if ok else 'INCONSISTENT'}: {accepted} accepted + {rejected} "
        f"rejected = {accepted + rejected} of {total} published; rejected matches the "
        f"{sum(tally.expected_bad.values())} bad events sent on purpose"
        if ok else f"\nINCONSISTENT: accepted {accepted} + rejected {rejected} "
        f"vs published {total}; expected rejects {dict(tally.expected_bad)}")
    return ok


def share_summary(settings: Settings, routing: demo_sharing.Routing, tally: Tally,
                  timeout: float, say: runtime.Say) -> bool:
    """Deliveries, masking, withheld events and the verified log."""
    from govbus import delivery_log

    demo_sharing.expect(routing, tally.accepted)
    demo_sharing.collect(settings, routing, tally.ids, timeout, say)
    rows = demo_sharing.wait_log(settings, routing, tally.ids, timeout)
    verify = delivery_log.verify(settings.database_url)
    withheld = sum(n for res, n in tally.accepted.items() if res.endswith("adoption_register"))
    return demo_sharing.summary(routing, withheld, rows, verify, say)


def grants_loaded_since(filed: float, timeout: float) -> None:
    """Wait until the hot path has loaded the grants after ``filed`` (its
    ``govbus_router_grants_loaded_timestamp_seconds``): a grant takes effect at the hot path's
    next load (``GOVBUS_GRANT_REFRESH_S``), and events published before it would reach no one."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    port = read_runtime().get("metrics", {}).get("hotpath")
    if not port:
        return

    def loaded() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return False
        return any(sample.value > filed for family in text_string_to_metric_families(text)
                   if family.name == "govbus_router_grants_loaded_timestamp_seconds"
                   for sample in family.samples)

    runtime.wait_for(loaded, timeout, "the hot path to load the new grants", step=0.1)


def run(args: argparse.Namespace, say: runtime.Say = print) -> int:
    started = time.monotonic()
    was_up = runtime.status().get("up", False)
    say("== govbus demo: starting the runtime")
    runtime.up(say=lambda m: say(f"  {m}"))
    try:
        settings = Settings.from_env()
        rng = random.Random(args.seed)
        data = sample.generate(args.events, args.seed)
        say(f"== publishing {sum(len(r) for r in data.rows.values())} records from "
            f"{len({k.split('.')[0] for k in data.rows})} agencies")
        tally, pub = Tally(), Publisher(settings)
        say("== sharing requests (Art. 18): every response is filed")
        routing = demo_sharing.file_requests(settings, pub.catalogue, say)
        grants_loaded_since(time.time(), settings.demo_timeout_s)
        publish_sample(pub, data, rng, tally, say)
        publish_garbage(pub, tally, uuid.uuid4().hex[:8])
        pub.close()
        timeout = settings.demo_timeout_s
        say("== waiting for the gate")
        collect(settings, tally, timeout, say)
        ok = summary(tally, say)
        say("== waiting for the deliveries and the delivery log")
        ok = share_summary(settings, routing, tally, timeout, say) and ok
        from govbus import demo_reconcile  # cases (Art. 19, 20)

        say("== waiting for the reconciler (Art. 8, 20)")
        ok = demo_reconcile.run(settings, data, timeout, say) and ok
    finally:
        if not (was_up or args.keep):
            say("== stopping what the demo started")
            runtime.down(say=lambda m: say(f"  {m}"))
    say(f"demo finished in {time.monotonic() - started:.1f} s")
    return 0 if ok else 1
