"""The sharing part of ``govbus demo``: requests, grants, routing and the delivery log."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer

from govbus import runtime
from govbus.core import commitments_store, db, sharing_store, topics
from govbus.core.catalogue import Catalogue
from govbus.core.config import Settings
from govbus.core.deliveries import Decoder, database_lookup
from govbus.core.kafka import consumer_config

# (requester, resource, fields or None, confidentiality agreement, provider's answer)
REQUESTS: list[tuple[str, str, list[str] | None, str | None, str | None]] = [
    ("tax", "public_security.population_register", ["name", "residence_address", "phone"],
     None, None),
    ("hrss", "market_regulation.legal_entity_register", None, "CA-2026-031", None),
    ("market_regulation", "tax.tax_registration", None, None, "approve"),
    ("civil_affairs", "hrss.social_insurance_enrolment", None, None, "reject"),
    ("tax", "civil_affairs.adoption_register", None, None, None),
]


@dataclass
class Routing:
    grants: dict[int, tuple[str, str]] = field(default_factory=dict)  # grant -> (who, what)
    delivered: Counter[str] = field(default_factory=Counter)           # "recipient <- res"
    masked: Counter[str] = field(default_factory=Counter)
    expected: int = 0


def file_requests(settings: Settings, catalogue: Catalogue, say: runtime.Say) -> Routing:
    """Apply for resources as five agencies would, and answer as the providers would."""
    routing = Routing()
    signed = commitments_store.sample_commitments(settings.database_url, REQUESTS,
                                                  "statutory duties (demo)")
    say(f"  security commitments registered (Art. 24): {', '.join(signed.values())}")
    for requester, resource_id, fields, agreement, answer in REQUESTS:
        agency, name = resource_id.split(".")
        resource = catalogue.get(agency, name)
        out = sharing_store.file_request(settings.database_url, resource, requester,
                                         "statutory duties (demo)", fields,
                                         signed[requester], agreement)
        if answer:
            out = sharing_store.decide(
                settings.database_url, out["request_id"], str(resource.provider),
                answer == "approve",
                "needed for licensing checks" if answer == "approve"
                else "purpose outside the requester's duties (Art. 24)")
        say(f"  {requester:<18} asks {resource_id:<40} → {out['status']}"
            + (f" (masked: {', '.join(out['masked_fields'])})" if out.get("masked_fields")
               and out["status"] == "granted" else ""))
        if out.get("grant_id"):
            routing.grants[out["grant_id"]] = (requester, resource_id)
    return routing


def expect(routing: Routing, accepted: Counter[str]) -> None:
    """Deliveries the router must make: one per accepted event per grant on its resource."""
    routing.expected = sum(accepted[res] for _, res in routing.grants.values())


def collect(settings: Settings, routing: Routing, ids: set[str], timeout: float,
            say: runtime.Say) -> None:
    consumer = Consumer(consumer_config(settings, f"govbus-demo-{uuid.uuid4().hex[:8]}"))
    consumer.subscribe([topics.DELIVER_PATTERN])
    seen: set[tuple[str, str]] = set()
    decode = Decoder(database_lookup(settings.database_url))  # as a subscriber decodes them
    deadline, last = time.monotonic() + timeout, 0.0
    try:
        while len(seen) < routing.expected and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if msg.error():
                    continue
                value = decode(msg.value())
                recipient = str(msg.topic()).split(".")[1]
                if value.get("event_id") in ids and (value["event_id"], recipient) not in seen:
                    seen.add((value["event_id"], recipient))
                    routing.delivered[f"{recipient} ← {value['resource']}"] += 1
                    for name in value.get("masked_fields") or []:
                        routing.masked[f"{name} for {recipient}"] += 1
            if time.monotonic() - last > 2:
                last = time.monotonic()
                say(f"  routed: {len(seen)}/{routing.expected} deliveries")
    finally:
        consumer.close()


def log_rows(settings: Settings, ids: set[str]) -> int:
    with db.transaction(settings.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM deliveries WHERE channel = 'exchange' "
                    "AND event_id = ANY(%s)", (list(ids),))
        return int(cur.fetchone()[0])


def wait_log(settings: Settings, routing: Routing, ids: set[str], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    rows = log_rows(settings, ids)
    while rows < routing.expected and time.monotonic() < deadline:
        time.sleep(0.3)
        rows = log_rows(settings, ids)
    return rows


def summary(routing: Routing, withheld: int, rows: int, verify: Any,
            say: runtime.Say) -> bool:
    delivered = sum(routing.delivered.values())
    say(f"\ndeliveries by recipient ← resource: {delivered} (expected {routing.expected})")
    for key, n in sorted(routing.delivered.items()):
        say(f"  {key:<52} {n:>6}")
    for key, n in sorted(routing.masked.items()):
        say(f"  masked {key:<45} {n:>6}")
    say(f"withheld (not shared, Art. 15): {withheld} events reached nobody")
    say(f"delivery log: {rows} rows for {delivered} deliveries; "
        + ("hash chain verified" if verify.ok else "VERIFY FAILED"))
    return delivered == routing.expected == rows and verify.ok
