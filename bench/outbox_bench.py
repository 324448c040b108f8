"""The outbox adapter's events/s: rows captured by the trigger, relayed to the ingest topic.

A scratch schema in the bench database plays the agency's database: a population table with
the outbox trigger installed (``govbus.producers.outbox.install``), ``rows`` residents inserted in
one transaction (the trigger writes one outbox row each). The clock runs from the relay's
first batch to the last row marked published, through ``OutboxRelay.run_once`` (claim with
``FOR UPDATE SKIP LOCKED``, contract checks, Avro, idempotent produce, wait for the
acknowledgements, mark) — the loop ``govbus outbox`` runs, minus its idle polling.
"""

from __future__ import annotations

import random
import time
import uuid

import psycopg2.extras

from govbus import sample
from govbus.core import db
from govbus.producers.outbox import OutboxRelay, install

from .env import Env
from .report import BenchError, Result, Say

AGENCY, RESOURCE = "public_security", "population_register"
COLUMNS = ("resident_id", "name", "gender", "birth_date", "ethnicity", "residence_address",
           "household_division", "phone")


def _fill(dsn: str, table: str, rows: int) -> None:
    rng = random.Random(11)
    people: dict[str, tuple[object, ...]] = {}
    while len(people) < rows:  # distinct resident ids: the table's primary key
        p = sample.person(rng)
        people[p["resident_id"]] = tuple(p[c] for c in COLUMNS)
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        psycopg2.extras.execute_values(
            cur, f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES %s", list(people.values()),
            page_size=1000)


def run(env: Env, rows: int, say: Say) -> Result:
    schema = f"bench_outbox_{uuid.uuid4().hex[:8]}"
    table = f"{schema}.residents"
    with db.transaction(env.database_url) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}; CREATE TABLE {table} (resident_id text PRIMARY "
                    "KEY, name text NOT NULL, gender char(1) NOT NULL, birth_date date NOT "
                    "NULL, ethnicity text, residence_address text NOT NULL, household_division "
                    "char(6) NOT NULL, phone text)")
    try:
        install(env.database_url, table, AGENCY, RESOURCE, env.catalogue)
        _fill(env.database_url, table, rows)
        relay = OutboxRelay(env.database_url, env.broker, AGENCY, RESOURCE,
                            catalogue=env.catalogue, batch_size=500)
        relay.publisher.registry.latest(relay.resource.id)  # schema cached, as in service
        backlog = relay.backlog()
        started = time.perf_counter()
        while relay.published + relay.refused < backlog:
            if not relay.run_once():
                raise BenchError(f"outbox: relay stalled at {relay.published} of {backlog}")
        seconds = time.perf_counter() - started
        published, refused = relay.published, relay.refused
        relay.close()
        del relay
    finally:
        with db.transaction(env.database_url) as conn, conn.cursor() as cur:
            cur.execute(f"DROP SCHEMA {schema} CASCADE")
    if published != rows or refused:
        raise BenchError(f"outbox: {published} of {rows} published, {refused} refused")
    say(f"  outbox adapter: {rows} rows captured by the trigger, relayed in {seconds:.2f} s = "
        f"{rows / seconds:,.0f} events/s")
    return Result("outbox adapter", rows, seconds)
