"""The fault suite's runner: a real broker (Tansu) and an embedded PostgreSQL of its own, the
bus's processes (the hot path, as ``govbus up`` runs it) and an outbox relay each as its own
process, a steady load from two agencies, and seeded faults:

- **broker stopped while the outbox has work**: right after start-up the broker is killed, the
  agency writes rows (the outbox fills, the relay fails and retries), then the broker starts
  again on the same port and the relay republishes. Tansu is memory-only: a restart loses
  every topic, so this fault is injected before the broker has accepted any event; what it
  tests is that the outbox keeps its events through the outage and that every component
  reconnects. (Real Kafka keeps acknowledged events through a restart by replication.)
- **kill -9** of any of those processes or the relay at random moments, restarted after
  a random pause;
- **PostgreSQL stopped and started** (the bus's own embedded server, never a shared one): the
  registry, grants, delivery log and the agency's outbox all live there.

The reconciliation processes run too (the reconciler and the cases sink), through the broker
outage too, and are killed like the others: the market-regulation register (the source of
record) publishes every taxpayer the tax agency writes, with a different legal representative
for a third of them and a formatting-only difference in the address for another third.

Components that exit by themselves (a relay started while the database is down) are
restarted by a supervisor, as a service manager would. Afterwards the published set is
compared with every deliver topic and the delivery log, and the open cases with the values
that really differ (``tests.faults.check``).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
from confluent_kafka import Consumer

from govbus import runtime, sample
from govbus.core import commitments_store, db, keyring, registry, sharing_store
from govbus.core.catalogue import Catalogue, load_catalogue
from govbus.core.config import Settings
from govbus.core.deliveries import Decoder, database_lookup
from govbus.core.errors import GovbusError
from govbus.core.kafka import consumer_config, ensure_topics
from govbus.core.keyring import checkpoint_publics
from govbus.delivery_log import verify
from govbus.delivery_log.checkpoint_store import list_checkpoints
from govbus.delivery_log.checkpoints import check_series
from govbus.producers.outbox import install
from govbus.producers.publisher import Change, Publisher
from govbus.stream_apps.feed import CASES_TOPIC, VALUES_TOPIC
from govbus.stream_apps.reconciler import members
from tests.faults.check import Figures, compare, compare_cases
from tests.faults.processes import Broker, Postgres, Supervisor, cluster

ROOT = Path(__file__).resolve().parents[2]
TAX, POP = "tax.tax_registration", "public_security.population_register"
# the bus's processes as `govbus up` runs them: the hot path, and reconciliation, running
# through the broker outage like the rest (its state is in PostgreSQL)
BUS = {"hotpath": ["-m", "govbus.stream_apps.hotpath"],
       "reconciler": ["-m", "govbus.stream_apps.reconciler"],
       "cases": ["-m", "govbus.consumers.cases_sink"],
       "checkpointer": ["-m", "govbus.stream_apps.checkpointer"]}
REP = "company.legal_representative"
Say = Callable[[str], None]


@dataclass
class Plan:
    """What one run does; the seed fixes every random choice (kills, pauses, records)."""

    seed: int = 2026
    kills: int = 20          # kill -9 faults
    pg_restarts: int = 2     # PostgreSQL stopped and started
    gap: tuple[float, float] = (1.0, 3.0)   # seconds between faults
    settle_s: float = 150.0  # deadline for the pipeline to catch up after the last fault


def wait_until(cond: Callable[[], Any], timeout: float, what: str, step: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(GovbusError, psycopg2.Error):
            value = cond()
            if value:
                return value
        time.sleep(step)
    raise GovbusError(f"timed out after {timeout:.0f} s waiting for {what}")


class Load:
    """Steady load: tax rows written to the agency's table (published by the outbox relay),
    and population events published by the API, some invalid on purpose."""

    def __init__(self, settings: Settings, agency_dsn: str, seed: int) -> None:
        self.settings, self.agency_dsn = settings, agency_dsn
        # one generator per thread, none shared with the fault schedule: the schedule
        # replays exactly whatever the threads' timing
        self.rng, self.api_rng = random.Random(seed + 1), random.Random(seed + 2)
        self.pop_ids: dict[str, str] = {}
        self.invalid: list[str] = []
        self.rows = 0
        self.companies: list[dict[str, Any]] = []  # taxpayers written, in order
        self.differing: set[tuple[str, str]] = set()  # (entity, attribute) MR made differ
        self.registered = 0  # companies the market-regulation register has published
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._rows, daemon=True),
                        threading.Thread(target=self._api, daemon=True),
                        threading.Thread(target=self._register, daemon=True)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(60)

    def write_rows(self, n: int) -> None:
        """``n`` taxpayer rows in one transaction of the agency's database."""
        rows = [company(self.rng) for _ in range(n)]
        with db.transaction(self.agency_dsn) as conn, conn.cursor() as cur:
            for r in rows:
                cur.execute("INSERT INTO taxpayers VALUES (%s, %s, %s, %s, %s, %s, %s)",
                            tuple(r.values()))
        self.rows += n
        self.companies += rows

    def _register(self) -> None:
        """The source of record: every taxpayer written, as the market-regulation register
        has it (:func:`registered`); drains what is left when the load stops."""
        publisher = Publisher(self.settings)
        while True:
            stopping = self.stopping.wait(0.3)
            while self.registered < len(self.companies):
                chunk = self.companies[self.registered:self.registered + 50]
                records = [registered(c) for c in chunk]
                self._publish(publisher, "market_regulation", "legal_entity_register",
                              [Change("c", r, event_id=str(uuid.uuid4())) for r in records])
                for c, r in zip(chunk, records, strict=True):
                    if r["legal_representative"] != c["legal_representative"]:
                        self.differing.add((f"company:{c['uscc']}", REP))
                self.registered += len(chunk)
            if stopping:
                break
        publisher.close()

    def _rows(self) -> None:
        while not self.stopping.wait(0.2):
            try:
                self.write_rows(10)
            except (GovbusError, psycopg2.Error):  # the agency's database is down (refused,
                self.stopping.wait(0.5)            # or dropped mid-write): its app waits

    def _api(self) -> None:
        publisher = Publisher(self.settings)
        batch = 0
        while not self.stopping.wait(0.25):
            batch += 1
            changes = [Change("c", person(self.api_rng), event_id=str(uuid.uuid4()))
                       for _ in range(10)]
            bad = batch % 5 == 0  # an adapter with a broken check digit: DLQ, nobody
            if bad:
                rec = person(self.api_rng)
                rec["resident_id"] = rec["resident_id"][:17] + (
                    "0" if rec["resident_id"][17] != "0" else "1")
                changes.append(Change("c", rec, event_id=str(uuid.uuid4())))
            self._publish(publisher, "public_security", "population_register", changes)
            for ch in changes[:10]:
                self.pop_ids[str(ch.event_id)] = POP
            if bad:
                self.invalid.append(str(changes[-1].event_id))
        publisher.close()

    def _publish(self, publisher: Publisher, agency: str, resource: str,
                 changes: list[Change]) -> None:
        """Until every event is acknowledged; a retry re-sends the same event ids."""
        while True:
            try:
                report = publisher.publish(agency, resource, changes, validate=False)
            except GovbusError:
                report = None
            if report is not None and not report.failed and not report.refused:
                return
            time.sleep(0.5)


def company(rng: random.Random) -> dict[str, Any]:
    code = sample.uscc(rng, "360502")
    return {"uscc": code, "taxpayer_name": f"新余市{code[-6:]}有限公司",
            "legal_representative": "李强", "registered_address": "渝水区劳动北路1号",
            "taxpayer_type": rng.choice(["GENERAL", "SMALL_SCALE"]),
            "tax_authority": "国家税务总局新余市渝水区税务局", "credit_rating": None}


def registered(taxpayer: dict[str, Any]) -> dict[str, Any]:
    """The market-regulation record of a taxpayer: by a hash of its code (so the same whatever
    the timing), another legal representative (a case), the address in full-width digits
    (formatting only: no case), or the same values."""
    kind = zlib.crc32(taxpayer["uscc"].encode()) % 3
    address = taxpayer["registered_address"]
    return {"uscc": taxpayer["uscc"], "name": taxpayer["taxpayer_name"],
            "legal_representative": "赵六" if kind == 0 else taxpayer["legal_representative"],
            "legal_representative_id": "360502198001010015",
            "registered_address": address.replace("1", "１") if kind == 1 else address,
            "registered_capital": 1000000, "established_date": "2001-05-01",
            "status": "ACTIVE"}


def person(rng: random.Random) -> dict[str, Any]:
    p = sample.person(rng)
    return {k: p.get(k) for k in ("resident_id", "name", "gender", "birth_date", "ethnicity",
                                  "residence_address", "household_division", "phone")}


AGENCY_TABLE = ("CREATE TABLE IF NOT EXISTS taxpayers (uscc text PRIMARY KEY, "
                "taxpayer_name text NOT NULL, legal_representative text NOT NULL, "
                "registered_address text NOT NULL, taxpayer_type text NOT NULL, "
                "tax_authority text NOT NULL, credit_rating text)")


def prepare_databases(pg: Postgres, catalogue: Catalogue, recipients: list[str]) -> str:
    """Bus schema and catalogue, grants, and the tax agency's database with its outbox."""
    db.migrate(pg.url)
    registry.sync(pg.url, catalogue)
    admin = db.connect(pg.dsn("postgres"), autocommit=True)
    with admin.cursor() as cur:
        cur.execute("CREATE DATABASE agency_tax")
    admin.close()
    agency = pg.dsn("agency_tax")
    with db.transaction(agency) as conn, conn.cursor() as cur:
        cur.execute(AGENCY_TABLE)
    install(agency, "taxpayers", "tax", "tax_registration", catalogue)
    a, b, _ = recipients  # a: tax and population; b: population only (tax rejected); c: none
    for who in (a, b):  # Art. 24: a registered commitment covering what each asks for
        commitments_store.ensure(pg.url, f"SC-{who}", "security", who, [POP, TAX],
                                 "duties (faults)")
        sharing_store.file_request(pg.url, catalogue.resources[POP], who, "duties (faults)",
                                   None, f"SC-{who}", None)
    for who, yes in ((a, True), (b, False)):
        out = sharing_store.file_request(pg.url, catalogue.resources[TAX], who,
                                         "duties (faults)", None, f"SC-{who}", None)
        sharing_store.decide(pg.url, out["request_id"], "tax", yes, "fault suite")
    return agency


def scan(settings: Settings, topics: list[str]) -> Iterator[Any]:
    """Every message of ``topics`` (names or ``^`` patterns) from the beginning, once each,
    until nothing new came for 8 s."""
    consumer = Consumer(consumer_config(settings, f"faults-check-{uuid.uuid4().hex[:8]}"))
    consumer.subscribe(topics)
    seen: set[tuple[str, int, int]] = set()
    idle = time.monotonic()
    try:
        while time.monotonic() - idle < 8:
            for msg in consumer.consume(1000, 0.5):
                key = (msg.topic(), msg.partition(), msg.offset())
                if msg.error() or key in seen:
                    continue
                seen.add(key)
                idle = time.monotonic()
                yield msg
    finally:
        consumer.close()


def read_deliveries(settings: Settings) -> list[tuple[str, str]]:
    """(recipient, event id) of every message on every deliver topic, from the beginning,
    decoded as a subscriber does (framed Avro by the schema id it carries, or JSON)."""
    decode = Decoder(database_lookup(settings.database_url))
    return [(msg.topic().split(".")[1], decode(msg.value())["event_id"])
            for msg in scan(settings, [r"^deliver\..*"])]


def read_log(dsn: str) -> list[tuple[str, str, str]]:
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT recipient, event_id, channel FROM deliveries")
        return [(r[0], str(r[1]), r[2]) for r in cur.fetchall()]


def outbox_ids(agency_dsn: str) -> tuple[dict[str, str], int]:
    """(event id → resource of every outbox row, rows still waiting)."""
    with db.transaction(agency_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT event_id::text, published_at IS NULL AND rejected_at IS NULL "
                    "FROM govbus_outbox.events")
        rows = cur.fetchall()
    return {r[0]: TAX for r in rows}, sum(1 for r in rows if r[1])


def run(plan: Plan, base: Path, say: Say = print) -> Figures:
    """One seeded run; returns the figures (``ok`` when nothing was lost, duplicated or
    misdelivered and the log's hash chain verifies)."""
    rng = random.Random(plan.seed)
    base.mkdir(parents=True, exist_ok=True)
    (base / "logs").mkdir(exist_ok=True)
    catalogue = load_catalogue()
    tag = f"{plan.seed:x}"[-6:]
    recipients = [f"fault_{c}_{tag}" for c in "abc"]
    entitled = {TAX: {recipients[0]}, POP: {recipients[0], recipients[1]}}
    faults: Counter[str] = Counter()
    with cluster(base, say) as (pg, broker):
        agency = prepare_databases(pg, catalogue, recipients)
        state = base / "state"  # the keys every agency and the bus sign with, as `govbus up`
        keyring.provision(pg.url, state / keyring.KEYS_DIR,
                          [*sorted(catalogue.agencies), keyring.BUS, keyring.CHECKPOINT_SIGNER],
                          "fault suite")
        settings = Settings(f"127.0.0.1:{broker.port}", pg.url, catalogue.root,
                            session_timeout_ms=3000, partitions=3, state_dir=state)
        topics = runtime.catalogue_topics(catalogue) + [VALUES_TOPIC, CASES_TOPIC] + [
            f"deliver.{r}.{res.split('.', 1)[1]}" for r in recipients for res in (TAX, POP)]

        def broker_up() -> None:
            _, broker.pid = runtime.start_broker(broker.base, broker.port)
            ensure_topics(settings, topics)

        broker_up()
        env = os.environ | {"KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
                            "DATABASE_URL": pg.url, "GOVBUS_GRANT_REFRESH_S": "0.5",
                            "GOVBUS_KAFKA_SESSION_TIMEOUT_MS": "3000",
                            "GOVBUS_CHECKPOINT_INTERVAL_S": "1",
                            "GOVBUS_STATE_DIR": str(state)}
        env.pop("GOVBUS_METRICS_PORT", None)
        sup = Supervisor(env, base / "logs")
        load = Load(settings, agency, plan.seed)
        try:
            for name, argv in BUS.items():
                sup.add(name, argv)
            sup.add("outbox", ["-m", "govbus.producers.outbox", "--dsn", agency, "--agency", "tax",
                               "--resource", "tax_registration", "--batch-size", "50",
                               "--message-timeout-ms", "3000"])
            sup.thread.start()
            outage_with_work(agency, broker, sup, load, broker_up, say)
            faults["broker stop with outbox work"] += 1
            load.start()
            inject(plan, rng, sup, pg, faults, say)
            load.stop()
            figures = settle(plan, settings, pg, agency, load, entitled, say)
        finally:
            load.stopping.set()
            sup.stop_all()
        figures.faults = faults
        if sup.self_exits:
            say(f"components that exited on their own and were restarted: "
                f"{dict(sup.self_exits)}")
    return figures


def outage_with_work(agency: str, broker: Broker, sup: Supervisor, load: Load,
                     broker_up: Callable[[], None], say: Say) -> None:
    """Broker down, the agency writes, the relay fails and retries; broker back."""
    log = sup.logs / "outbox.log"
    wait_until(lambda: log.exists() and "relaying to" in log.read_text(), 60,
               "the relay to start")
    runtime.stop_pid(broker.pid, signal.SIGKILL)
    load.write_rows(50)
    wait_until(lambda: _outbox_failed(agency), 60, "the relay to fail against the dead broker")
    say("broker killed with 50 outbox rows waiting; the relay is retrying")
    broker_up()
    wait_until(lambda: outbox_ids(agency)[1] == 0, 90, "the relay to republish after the outage")
    say("broker restarted; the outbox republished its rows")


def _outbox_failed(agency: str) -> bool:
    with db.transaction(agency) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM govbus_outbox.events WHERE last_error IS NOT NULL")
        return bool(cur.fetchone()[0])


def inject(plan: Plan, rng: random.Random, sup: Supervisor, pg: Postgres,
           faults: Counter[str], say: Say) -> None:
    """``plan.kills`` kill -9s and ``plan.pg_restarts`` database restarts, seeded."""
    kinds = ["kill"] * plan.kills + ["pg"] * plan.pg_restarts
    rng.shuffle(kinds)
    for kind in kinds:
        time.sleep(rng.uniform(*plan.gap))
        if kind == "pg":
            pg.stop()
            time.sleep(rng.uniform(1.0, 3.0))
            pg.start()
            faults["PostgreSQL stop/start"] += 1
            continue
        victim = rng.choice(sorted(sup.argv))
        sup.kill(victim)
        time.sleep(rng.uniform(0.0, 1.5))
        sup.start(victim)
        faults[f"kill -9 {victim}"] += 1
    say(f"faults injected: {dict(faults)}")


def settle(plan: Plan, settings: Settings, pg: Postgres, agency: str, load: Load,
           entitled: dict[str, set[str]], say: Say) -> Figures:
    """Wait until every expected delivery is logged (or the deadline), then compare."""
    def published() -> dict[str, str]:
        ids, waiting = outbox_ids(agency)
        if waiting:
            return {}
        return ids | load.pop_ids

    def caught_up() -> bool:
        pub = published()
        want = sum(len(entitled[r]) for r in pub.values())
        return bool(pub) and len(read_log(pg.url)) >= want

    started = time.monotonic()
    try:
        wait_until(caught_up, plan.settle_s, "the pipeline to log every expected delivery", 1.0)
    except GovbusError as exc:
        say(str(exc))
    pub = published() or outbox_ids(agency)[0] | load.pop_ids
    figures = compare(pub, load.invalid, entitled, read_deliveries(settings), read_log(pg.url))
    # the log against the checkpoints signed while the faults went on (kills of the
    # checkpointer too): every one signed and linked, the log at each checkpointed seq
    checkpoints, broken = check_series(list_checkpoints(pg.url),
                                       checkpoint_publics(settings, pg.url))
    figures.checkpoints = len(checkpoints)
    figures.chain_ok = verify(pg.url, checkpoints=checkpoints).ok and not broken

    def cases_settled() -> bool:
        probe = Figures()
        compare_cases(probe, load.differing, read_cases(pg.url))
        return not (probe.cases_missing or probe.cases_unexpected)

    try:  # the reconciler is off the delivery path: it may still be catching up
        wait_until(cases_settled, max(30.0, plan.settle_s - (time.monotonic() - started)),
                   "the reconciler to open exactly the expected cases", 1.0)
    except GovbusError as exc:
        say(str(exc))
    missing = compare_cases(figures, load.differing, read_cases(pg.url))
    if missing:
        figures.examples += where_values_went(settings, {e for e, _ in missing[:3]})
    return figures


def where_values_went(settings: Settings, wanted: set[str]) -> list[str]:
    """For the entities of a few missing cases, which stage lost them: the agencies whose
    values reached ``reconcile.values`` and the statuses written to ``reconcile.cases``."""
    values: dict[str, list[str]] = {e: [] for e in wanted}
    emitted: dict[str, list[str]] = {e: [] for e in wanted}
    for msg in scan(settings, [VALUES_TOPIC, CASES_TOPIC]):
        doc = json.loads(msg.value())
        if msg.topic() == CASES_TOPIC:
            if doc.get("entity_key") in wanted:
                emitted[doc["entity_key"]].append(f"{doc['status']}@{msg.offset()}")
            continue
        for one in members(doc):
            if one.get("entity") in wanted:
                values[one["entity"]].append(f"{one['agency']}@{msg.partition()}:{msg.offset()}")
    return [f"  {e}: values on {VALUES_TOPIC}: {values[e] or 'none'}; case messages: "
            f"{emitted[e] or 'none'}" for e in sorted(wanted)]


def read_cases(dsn: str) -> list[tuple[str, str, str]]:
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT entity_key, attribute, status FROM cases")
        return [(r[0], r[1], r[2]) for r in cur.fetchall()]
