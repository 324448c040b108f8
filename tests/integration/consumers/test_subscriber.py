"""The subscriber against a real broker and PostgreSQL: an agency reads exactly the deliveries
of its grants in force and nobody else's (Art. 24), applies them to its own table in order and
idempotently, and confirms each receipt; a delivery the bus did not sign is refused."""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import OFFSET_INVALID, Consumer, Producer, TopicPartition

from govbus.consumers.subscriber import Subscriber, SubscriberError, TableSink, main
from govbus.core import access, db
from govbus.core.catalogue import Catalogue, default_schemas_dir
from govbus.core.config import Settings
from govbus.core.kafka import consumer_config, ensure_topics
from govbus.core.keyring import agency_signer, bus_signer
from govbus.core.sharing_store import decide, file_request, revoke
from govbus.core.signatures import DELIVERIES, Signer
from tests.integration.helpers import commitment, wait_until

POP = "public_security.population_register"
LEGAL = "market_regulation.legal_entity_register"
TAX = "tax.tax_registration"


def new_agency(prefix: str = "agency") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def grant(settings: Settings, catalogue: Catalogue, agency: str, resource_id: str) -> int:
    """A grant through the control plane: unconditional at once, else approved (Art. 18)."""
    res = catalogue.resources[resource_id]
    out = file_request(settings.database_url, res, agency, "tests", None,
                       commitment(settings.database_url, agency, resource_id))
    if out["status"] == "pending":
        out = decide(settings.database_url, out["request_id"], str(res.provider), True, None)
    assert out["status"] == "granted", out
    return int(out["grant_id"])


def delivery(agency: str, resource_id: str, key: str, op: str, occurred_ms: int,
             record: dict[str, Any] | None, event_id: str | None = None) -> dict[str, Any]:
    """A delivery in its JSON form (a grant's ``delivery_format`` json): the envelope."""
    return {"before": None, "after": record,
            "source": {"agency": resource_id.split(".")[0], "locality": "360502",
                       "connector": "api", "ts_ms": occurred_ms},
            "op": op, "transaction": None, "event_id": event_id or uuid.uuid4().hex,
            "resource": resource_id, "schema_version": 1, "key": key,
            "occurred_ms": occurred_ms, "ts_ms": occurred_ms + 1, "grant_id": 1,
            "masked_fields": [], "channel": "exchange"}


def topic_of(agency: str, resource_id: str) -> str:
    return f"deliver.{agency}.{resource_id.split('.', 1)[1]}"


def produce(settings: Settings, topic: str, values: list[dict[str, Any]],
            signer: Signer | None | bool = True) -> None:
    """Deliveries as the hot path sends them, signed by the bus (``signer`` True), by another
    key, or not at all (None)."""
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    sign = bus_signer(settings) if signer is True else signer or None
    bodies = [json.dumps(v, ensure_ascii=False).encode() for v in values]
    signed = sign.sign([(topic, v["key"].encode(), b, v["event_id"].encode())
                        for v, b in zip(values, bodies, strict=True)]) if sign else None
    for n, v in enumerate(values):
        headers = [("event_id", v["event_id"].encode()), ("grant_id", str(v["grant_id"]).encode())]
        producer.produce(topic, key=v["key"], value=bodies[n],
                         headers=headers + (signed[n] if signed else []))
    assert producer.flush(15) == 0


def receipts(settings: Settings, agency: str) -> set[str]:
    with db.transaction(settings.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT event_id FROM receipts WHERE recipient = %s AND channel = "
                    "'exchange'", (agency,))
        return {r[0] for r in cur.fetchall()}


class Running:
    """A subscriber on a thread of its own; stops it on exit and checks it stopped."""

    def __init__(self, sub: Subscriber) -> None:
        self.sub = sub
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.sub.run()
        except BaseException as exc:  # surfaced in the test thread
            self.error = exc

    def join(self, timeout: float = 60.0) -> None:
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.sub.stop()
            self.thread.join(30)
            raise AssertionError(f"subscriber still running after {timeout} s: "
                                 f"{dict(self.sub.stats)}")
        if self.error:
            raise self.error

    def stop(self) -> None:
        self.sub.stop()
        self.join(30)


@pytest.fixture
def running() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for r in started:
        if r.thread.is_alive():
            r.stop()


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_print_mode_reads_exactly_its_granted_deliveries(
        settings: Settings, catalogue: Catalogue, running: list[Running]) -> None:
    agency, other = new_agency(), new_agency("other")
    grant(settings, catalogue, agency, POP)
    grant(settings, catalogue, agency, LEGAL)
    grant(settings, catalogue, other, POP)
    own: dict[str, list[dict[str, Any]]] = {POP: [], LEGAL: []}
    foreign = {topic_of(agency, TAX): TAX,          # exists, but not granted
               topic_of(other, POP): POP,           # another agency's grant
               "deliver.other.x": POP}              # another agency, any name
    ensure_topics(settings, [topic_of(agency, r) for r in own] + list(foreign))
    for topic, res in foreign.items():
        produce(settings, topic, [delivery(agency, res, f"k{i}", "c", 1000 + i, {"i": i})
                                  for i in range(3)])
    for res in own:
        own[res] = [delivery(agency, res, f"k{i}", "c", 1000 + i, {"i": i}) for i in range(5)]
        produce(settings, topic_of(agency, res), own[res])
    expected = {d["event_id"] for batch in own.values() for d in batch}

    out = io.StringIO()
    sub = Subscriber(settings, agency, out=out, refresh_s=0.5, batch=3)
    running.append(Running(sub))
    wait_until(lambda: receipts(settings, agency) >= expected, 60, "receipts of 10 deliveries")
    granted = sorted(topic_of(agency, r) for r in own)
    assert sub.topics == granted
    assert sub.assigned <= set(granted)
    running[0].stop()

    printed = lines(out)
    assert sorted(d["event_id"] for d in printed) == sorted(expected)  # once each
    assert receipts(settings, agency) == expected
    assert printed[0] == next(d for b in own.values() for d in b
                              if d["event_id"] == printed[0]["event_id"])
    # the group never so much as committed an offset on a foreign topic
    probe = Consumer(consumer_config(settings, f"govbus-subscriber-{agency}"))
    try:
        committed = probe.committed([TopicPartition(t, p) for t in foreign for p in range(3)],
                                    timeout=15)
    finally:
        probe.close()
    assert {tp.offset for tp in committed} == {OFFSET_INVALID}
    assert sub.stats["not_granted"] == 0 and sub.stats["delivered"] == 10


def test_new_grant_is_picked_up_and_revoked_one_dropped(
        settings: Settings, catalogue: Catalogue, running: list[Running]) -> None:
    agency = new_agency()
    pop, legal = topic_of(agency, POP), topic_of(agency, LEGAL)
    ensure_topics(settings, [pop, legal])
    grant(settings, catalogue, agency, POP)
    out = io.StringIO()
    sub = Subscriber(settings, agency, out=out, refresh_s=0.3)
    running.append(Running(sub))
    first = [delivery(agency, POP, "p1", "c", 1, {"n": 1})]
    early_legal = [delivery(agency, LEGAL, "l0", "c", 1, {"n": 0})]
    produce(settings, pop, first)
    produce(settings, legal, early_legal)  # before its grant: read once granted
    wait_until(lambda: receipts(settings, agency) == {first[0]["event_id"]}, 60,
               "the first delivery")
    assert sub.topics == [pop]

    legal_grant = grant(settings, catalogue, agency, LEGAL)
    later = [delivery(agency, LEGAL, "l1", "c", 2, {"n": 2})]
    produce(settings, legal, later)
    wait_until(lambda: receipts(settings, agency) >= {early_legal[0]["event_id"],
                                                      later[0]["event_id"]},
               60, "deliveries of the new grant")

    revoke(settings.database_url, legal_grant, "market_regulation", "duty ended")
    wait_until(lambda: sub.topics == [pop] and legal not in sub.assigned and sub.assigned,
               60, "the revoked topic dropped")
    after_revoke = delivery(agency, LEGAL, "l2", "u", 3, {"n": 3})
    still = delivery(agency, POP, "p2", "u", 3, {"n": 3})
    produce(settings, legal, [after_revoke])
    produce(settings, pop, [still])
    wait_until(lambda: still["event_id"] in receipts(settings, agency), 60,
               "a delivery of the grant still in force")
    running[0].stop()
    printed = {d["event_id"] for d in lines(out)}
    assert after_revoke["event_id"] not in printed
    assert after_revoke["event_id"] not in receipts(settings, agency)
    assert printed == {d["event_id"] for d in first + early_legal + later + [still]}


def table_rows(dsn: str, table: str) -> dict[str, tuple[Any, ...]]:
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT entity_key, record, event_id, op, occurred_ms FROM {table}")
        return {r[0]: r[1:] for r in cur.fetchall()}


def test_table_mode_applies_in_order_idempotently_with_deletes(
        settings: Settings, catalogue: Catalogue, empty_database: str,
        running: list[Running]) -> None:
    agency = new_agency()
    grant(settings, catalogue, agency, TAX)  # on application: approved by tax
    topic = topic_of(agency, TAX)
    ensure_topics(settings, [topic])
    d = [delivery(agency, TAX, "k1", "c", 1000, {"v": 1}),
         delivery(agency, TAX, "k1", "u", 2000, {"v": 2}),
         delivery(agency, TAX, "k2", "c", 1000, {"v": 1}),
         delivery(agency, TAX, "k2", "d", 3000, None),
         delivery(agency, TAX, "k3", "c", 1000, {"v": 1}),
         delivery(agency, TAX, "k3", "u", 3000, {"v": 3}),
         delivery(agency, TAX, "k3", "u", 2000, {"v": 2}),    # older than the row: skipped
         delivery(agency, TAX, "k4", "r", 1500, {"v": "snapshot"}),
         delivery(agency, TAX, "k5", "d", 500, None)]         # delete of nothing
    produce(settings, topic, d[:4])
    raw = Producer({"bootstrap.servers": settings.bootstrap_servers})
    signed = bus_signer(settings).sign([(topic, b"k2", b"{not json", None)])[0]
    raw.produce(topic, key="k2", value=b"{not json", headers=signed)  # logged, counted, skipped
    assert raw.flush(15) == 0
    produce(settings, topic, d[4:])
    sub = Subscriber(settings, agency, TableSink(empty_database, "tax_copy"),
                     max_messages=len(d) + 1, refresh_s=0.5)
    running.append(Running(sub))
    running[-1].join(60)
    want = {"k1": ({"v": 2}, d[1]["event_id"], "u", 2000),
            "k3": ({"v": 3}, d[5]["event_id"], "u", 3000),
            "k4": ({"v": "snapshot"}, d[7]["event_id"], "r", 1500)}
    assert table_rows(empty_database, "tax_copy") == want
    assert (sub.stats["applied"], sub.stats["deleted"], sub.stats["stale"]) == (6, 1, 2)
    assert sub.stats["malformed"] == 1 and sub.stats["delivered"] == len(d)
    assert receipts(settings, agency) == {x["event_id"] for x in d}

    produce(settings, topic, d)  # the same deliveries again: a replay
    again = Subscriber(settings, agency, TableSink(empty_database, "tax_copy"),
                       max_messages=len(d), refresh_s=0.5)
    running.append(Running(again))
    running[-1].join(60)
    assert again.stats["delivered"] == len(d)
    assert table_rows(empty_database, "tax_copy") == want
    with db.transaction(settings.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM receipts WHERE recipient = %s", (agency,))
        assert cur.fetchone()[0] == len(d)


def test_a_truncate_removes_the_rows_older_than_it_and_keeps_its_reload(
        settings: Settings, catalogue: Catalogue, empty_database: str,
        running: list[Running]) -> None:
    agency = new_agency()
    grant(settings, catalogue, agency, POP)
    topic = topic_of(agency, POP)
    ensure_topics(settings, [topic], partitions=1)
    d = [delivery(agency, POP, "k1", "c", 1000, {"v": 1}),
         delivery(agency, POP, "k2", "c", 3000, {"v": 2}),
         delivery(agency, POP, "", "t", 2000, None),
         delivery(agency, POP, "k3", "c", 2000, {"v": 3})]  # the reload, of its instant
    produce(settings, topic, d)
    sub = Subscriber(settings, agency, TableSink(empty_database, "pop_t"),
                     max_messages=len(d), refresh_s=0.5)
    running.append(Running(sub))
    running[-1].join(60)
    assert set(table_rows(empty_database, "pop_t")) == {"k2", "k3"}
    assert sub.stats["truncated"] == 1 and sub.stats["malformed"] == 0
    assert receipts(settings, agency) == {x["event_id"] for x in d}


def test_database_failure_rewinds_and_retries_the_batch(
        settings: Settings, catalogue: Catalogue, empty_database: str,
        running: list[Running], caplog: pytest.LogCaptureFixture) -> None:
    agency = new_agency()
    grant(settings, catalogue, agency, POP)
    topic = topic_of(agency, POP)
    ensure_topics(settings, [topic], partitions=1)
    with db.transaction(empty_database) as conn, conn.cursor() as cur:  # refuses k2, for now
        cur.execute("""CREATE TABLE pop (entity_key text PRIMARY KEY, record jsonb,
                       event_id text NOT NULL, op text NOT NULL, occurred_ms bigint NOT NULL,
                       updated_at timestamptz NOT NULL DEFAULT now(),
                       CONSTRAINT not_yet CHECK (entity_key <> 'k2'))""")
    d = [delivery(agency, POP, f"k{i}", "c", i, {"i": i}) for i in range(4)]
    produce(settings, topic, d)
    sub = Subscriber(settings, agency, TableSink(empty_database, "pop"), batch=100,
                     max_messages=len(d), refresh_s=0.5)
    running.append(Running(sub))
    wait_until(lambda: "batch not done" in caplog.text, 60, "a failed batch")
    # nothing from the failed batch is confirmed: k2 and what follows it in the partition
    assert receipts(settings, agency).isdisjoint({d[2]["event_id"], d[3]["event_id"]})
    with db.transaction(empty_database) as conn, conn.cursor() as cur:
        cur.execute("ALTER TABLE pop DROP CONSTRAINT not_yet")
    running[-1].join(60)
    assert set(table_rows(empty_database, "pop")) == {"k0", "k1", "k2", "k3"}
    assert receipts(settings, agency) == {x["event_id"] for x in d}
    assert sub.stats["messages"] == len(d)


def test_table_mode_needs_one_resource_and_cli_prints(
        settings: Settings, catalogue: Catalogue, empty_database: str,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    agency = new_agency()
    grant(settings, catalogue, agency, POP)
    grant(settings, catalogue, agency, LEGAL)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.bootstrap_servers)
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv(access.TOKEN_ENV, access.issue(settings.database_url, agency, "test"))
    assert main(["--agency", agency, "--sink-dsn", empty_database, "--table", "t"]) == 1
    assert "name one with --resource" in capsys.readouterr().err
    ensure_topics(settings, [topic_of(agency, POP)])
    sent = [delivery(agency, POP, f"k{i}", "c", i, {"i": i}) for i in range(3)]
    produce(settings, topic_of(agency, POP), sent)
    assert main(["--agency", agency, "--max", "3", "--idle-exit", "60"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(p["event_id"] for p in printed) == sorted(s["event_id"] for s in sent)
    more = [delivery(agency, POP, "k9", "u", 9, {"i": 9})]
    produce(settings, topic_of(agency, POP), more)
    assert main(["--agency", agency, "--resource", POP, "--sink-dsn", empty_database,
                 "--table", "pop", "--max", "1"]) == 0  # same group: only what is new
    assert table_rows(empty_database, "pop") == {"k9": ({"i": 9}, more[0]["event_id"], "u", 9)}


def test_agency_without_grants_subscribes_to_nothing_and_idles_out(
        settings: Settings) -> None:
    agency = new_agency("nobody")
    ensure_topics(settings, [topic_of(agency, POP)])
    produce(settings, topic_of(agency, POP), [delivery(agency, POP, "k", "c", 1, {"i": 1})])
    sub = Subscriber(settings, agency, out=io.StringIO(), idle_exit=1.0, refresh_s=0.2)
    started = time.monotonic()
    stats = sub.run()
    assert time.monotonic() - started < 10
    assert sub.topics == [] and stats["messages"] == 0


@pytest.mark.parametrize("name", ["b.c", "B", "*", "a-b", "", "deliver.x"])
def test_agency_names_outside_a_z0_9_are_refused(name: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--agency", name]) == 1
    assert "not a plain name" in capsys.readouterr().err
    settings = Settings("127.0.0.1:1", "postgresql://nowhere/x", default_schemas_dir())
    with pytest.raises(SubscriberError, match="not a plain name"):
        Subscriber(settings, name)


def test_bad_table_name_refused() -> None:
    with pytest.raises(SubscriberError, match="plain"):
        TableSink("postgresql://nowhere/x", "t; DROP TABLE receipts")



def test_a_delivery_the_bus_did_not_sign_is_refused_never_applied_nor_confirmed(
        settings: Settings, catalogue: Catalogue, running: list[Running], tmp_path: Any) -> None:
    agency = new_agency()
    grant(settings, catalogue, agency, POP)
    topic = topic_of(agency, POP)
    ensure_topics(settings, [topic])
    genuine = [delivery(agency, POP, f"k{i}", "c", 1000 + i, {"i": i}) for i in range(3)]
    unsigned = delivery(agency, POP, "forged", "c", 5000, {"i": "unsigned"})
    by_agency = delivery(agency, POP, "forged", "c", 5001, {"i": "public security's key"})
    changed = delivery(agency, POP, "k0", "u", 5002, {"i": "changed after signing"})
    produce(settings, topic, [unsigned], signer=None)
    # an agency's key is no bus key, even over the right purpose
    agency_key = agency_signer(settings, "public_security")
    produce(settings, topic, [by_agency], signer=Signer(agency_key.private, DELIVERIES))
    produce(settings, topic, genuine[:2])
    # a genuine signature over one value, carried by another
    real = bus_signer(settings).sign([(topic, b"k0", json.dumps(changed).encode() + b" ",
                                       changed["event_id"].encode())])[0]
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    producer.produce(topic, key="k0", value=json.dumps(changed).encode(),
                     headers=[("event_id", changed["event_id"].encode()), *real])
    assert producer.flush(15) == 0
    produce(settings, topic, genuine[2:])

    out = io.StringIO()
    sub = Subscriber(settings, agency, out=out, refresh_s=0.5, batch=2)
    running.append(Running(sub))
    wait_until(lambda: sub.stats["messages"] >= 6, 60, "6 deliveries read")
    running[0].stop()
    assert sorted(d["event_id"] for d in lines(out)) == sorted(d["event_id"] for d in genuine)
    assert receipts(settings, agency) == {d["event_id"] for d in genuine}
    assert sub.stats["refused"] == 3
    assert sub.stats["refused auth.unsigned"] == 1
    assert sub.stats["refused auth.unknown_key"] == 1
    assert sub.stats["refused auth.bad_signature"] == 1


def test_a_subscriber_without_the_bus_public_key_does_not_start(
        settings: Settings, tmp_path: Any) -> None:
    from dataclasses import replace

    from govbus.core.errors import ConfigError

    bare = replace(settings, state_dir=tmp_path, bus_public_key_file=None)
    with pytest.raises(ConfigError, match="GOVBUS_BUS_PUBLIC_KEY_FILE"):
        Subscriber(bare, new_agency())
