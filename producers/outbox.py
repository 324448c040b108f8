"""The transactional outbox adapter: row changes in the agency's own PostgreSQL, to the bus.

``install`` puts a trigger on the agency's source-of-record table that writes every insert,
update and delete (``to_jsonb(OLD)``/``to_jsonb(NEW)``) into ``govbus_outbox.events`` *in the
same transaction* as the change, so a change is in the outbox exactly when it is committed and
a broker outage cannot lose it; a statement-level trigger does the same for a ``TRUNCATE``
(one row, op ``t``, no image). Nothing is installed in govbus's own database.

``OutboxRelay`` publishes the outbox in batches of ``SELECT ... ORDER BY id FOR UPDATE SKIP
LOCKED`` (two relays never hold the same row) through :class:`Publisher` (the contract checks
of Art. 7-8, 12 apply), and marks ``published_at`` only for rows the broker acknowledged:

- **At least once, never lost.** A crash between acknowledgement and mark republishes a row
  with the *same* event id (the row's ``event_id``, also the ``event_id`` header), for
  downstream de-duplication.
- **Order per entity.** The source table's row locks serialise one entity's changes (its
  contract key being the table's primary or a unique key), so its outbox ids follow commit
  order. The relay produces in id order, keyed by entity, idempotently, and marks only the
  acknowledged *prefix* of a batch: a retry never puts an older change after a newer one. One
  relay per resource works at a time (advisory lock); a second is a hot standby. Rows of
  transactions still open are taken by a later batch (no high-water mark skips them).
- **Outages.** Broker (delivery errors, no acknowledgement within ``message.timeout.ms``):
  nothing unacknowledged is marked; new producer, capped exponential back-off, same rows
  again. Database: back off and reconnect.
- **Bad rows are data, not blockers.** A row that breaks the contract gets ``rejected_at`` and
  its reasons in ``last_error``, is logged and counted as refused; the rows after it go on
  (Art. 12: a clear rejection, nothing dropped silently).

**Snapshots.** The first :func:`install` puts the rows that exist in the outbox as op ``r``
(Debezium's ``snapshot.mode=initial``), and :func:`snapshot` does so again on request; those
rows go the same way as changes, so the guarantees above hold for them too. Their
``source.snapshot`` is ``true``, and ``last`` for the snapshot's last row.

**Source.** Each event's ``source`` names the agency database (``db``, the relay
connection's), the table (``schema``, ``table``), the transaction (``txId``) and the outbox row
(``sequence``, its id); ``transaction`` places it among its transaction's rows
(:mod:`govbus.producers.tx_order`, with that module's limits).

Published rows stay in the outbox: prune them by ``published_at`` on the agency's own
schedule. :func:`install` is idempotent and brings an existing outbox up to date (the
truncate trigger, the snapshot column, the transaction index).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras
from confluent_kafka import Producer
from psycopg2 import sql

from govbus.core import db, metrics
from govbus.core.catalogue import Catalogue, Resource, load_catalogue
from govbus.core.config import Settings
from govbus.core.errors import BrokerError, DatabaseError, GovbusError
from govbus.core.kafka import producer_config
from govbus.core.registry import SchemaRegistry
from govbus.producers.publisher import DEFAULT_LOCALITY, Change, Publisher
from govbus.producers.tx_order import Row as TxRow
from govbus.producers.tx_order import TransactionOrder

log = logging.getLogger("govbus.outbox")
_LOCK_SPACE = "govbus_outbox"
BACKOFF = (0.5, 10.0)  # first and longest wait after an outage, seconds

DDL = """
CREATE SCHEMA IF NOT EXISTS govbus_outbox;
CREATE TABLE IF NOT EXISTS govbus_outbox.events (
    id           bigserial PRIMARY KEY,
    event_id     uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    table_name   text NOT NULL,
    agency       text NOT NULL,
    resource     text NOT NULL,
    op           char(1) NOT NULL,
    before       jsonb,
    after        jsonb,
    txid         bigint NOT NULL DEFAULT txid_current(),
    occurred_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at timestamptz,
    rejected_at  timestamptz,               -- refused by the contract checks (Art. 12)
    attempts     int NOT NULL DEFAULT 0,
    last_error   text
);
-- a snapshot row: 'true', or 'last' for the last row of its snapshot (source.snapshot)
ALTER TABLE govbus_outbox.events ADD COLUMN IF NOT EXISTS snapshot text;
-- c, u, d from the row trigger; t from the truncate trigger; r from a snapshot
ALTER TABLE govbus_outbox.events DROP CONSTRAINT IF EXISTS events_op_check;
ALTER TABLE govbus_outbox.events ADD CONSTRAINT events_op_check
    CHECK (op IN ('c', 'u', 'd', 'r', 't'));
CREATE INDEX IF NOT EXISTS events_unpublished ON govbus_outbox.events (agency, resource, id)
    WHERE published_at IS NULL AND rejected_at IS NULL;
-- a transaction's rows in id order: the relay's transaction block (total_order)
CREATE INDEX IF NOT EXISTS events_txid ON govbus_outbox.events (txid, id);
CREATE OR REPLACE FUNCTION govbus_outbox.capture() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    old_row jsonb := CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END;
    new_row jsonb := CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END;
BEGIN
    IF TG_OP = 'UPDATE' AND old_row = new_row THEN
        RETURN NULL;  -- a no-op update is not a change
    END IF;
    INSERT INTO govbus_outbox.events (table_name, agency, resource, op, before, after)
    VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, TG_ARGV[0], TG_ARGV[1],
            CASE TG_OP WHEN 'INSERT' THEN 'c' WHEN 'UPDATE' THEN 'u' ELSE 'd' END,
            old_row, new_row);
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION govbus_outbox.capture_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO govbus_outbox.events (table_name, agency, resource, op)
    VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, TG_ARGV[0], TG_ARGV[1], 't');
    RETURN NULL;
END $$;
"""


class OutboxError(GovbusError):
    """The outbox cannot be installed, or is not installed where the relay looks."""


# --- install ------------------------------------------------------------------------------

def provider_resource(catalogue: Catalogue, agency: str, name: str) -> Resource:
    """The catalogued resource ``name`` of ``agency``; refused when another agency provides it
    (Art. 8: one datum, one source)."""
    res = catalogue.resources.get(f"{agency}.{name}")
    if res is None:
        owners = sorted(r.id for r in catalogue if r.name == name)
        if owners:
            raise OutboxError(f"{agency!r} is not the provider of {name!r} (catalogued as "
                              f"{', '.join(owners)}); only the provider publishes it (Art. 8)")
        return catalogue.get(agency, name)  # raises, listing what is known
    if res.provider != agency:
        raise OutboxError(f"{res.id} is provided by {res.provider!r}, not {agency!r} (Art. 8)")
    return res


def _table_columns(cur: Any, table: str) -> tuple[str, str, set[str]]:
    """(schema, name, columns) of ``table``; OutboxError when it does not exist."""
    cur.execute("SELECT n.nspname, c.relname, array_agg(a.attname::text) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON "
                "a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
                "WHERE c.oid = to_regclass(%s) GROUP BY 1, 2", (table,))
    found = cur.fetchone()
    if found is None:
        raise OutboxError(f"table {table!r} does not exist in the agency database")
    return found[0], found[1], set(found[2])


def checked_table(cur: Any, table: str, res: Resource) -> tuple[str, str]:
    """(schema, name) of ``table``, refused when it does not exist or its columns miss a
    non-nullable field of the contract (Art. 7)."""
    schema, name, columns = _table_columns(cur, table)
    missing = [f.name for f in res.fields if not f.nullable and f.name not in columns]
    if missing:
        raise OutboxError(f"table {schema}.{name} lacks columns for the non-nullable "
                          f"fields of {res.id}: {', '.join(missing)}")
    absent = [f.name for f in res.fields if f.nullable and f.name not in columns]
    if absent:
        log.warning("%s.%s has no column for %s: published as null", schema, name,
                    ", ".join(absent))
    return schema, name


def install(agency_dsn: str, table: str, agency: str, resource: str,
            catalogue: Catalogue, *, snapshot: bool = True) -> int:
    """Create the outbox and its trigger on ``table`` in the agency's database; idempotent.
    Returns how many rows the initial snapshot put in the outbox.

    Checked first: ``agency`` provides ``resource`` (Art. 8), ``table`` exists, and its
    columns cover every non-nullable field of the contract (Art. 7). The first install
    (no trigger yet) also snapshots the rows that exist, as op ``r``, in the transaction that
    creates the trigger: ``CREATE TRIGGER`` holds writers off until it commits, so every row
    is either in the snapshot or changed after it, by the trigger, never both or neither."""
    res = provider_resource(catalogue, agency, resource)
    try:
        with db.transaction(agency_dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_LOCK_SPACE,))
            schema, name = checked_table(cur, table, res)
            cur.execute(DDL)
            target = sql.Identifier(schema, name)
            cur.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass "
                        "AND tgname = %s", (f"{schema}.{name}", f"govbus_outbox_{resource}"))
            first = cur.fetchone()[0] == 0
            _triggers(cur, resource, target, agency)
            if not (first and snapshot):
                return 0
            # in one statement, so the row read last is known: its snapshot is 'last'
            cur.execute(sql.SQL("INSERT INTO govbus_outbox.events (table_name, agency, "
                                "resource, op, after, snapshot) SELECT %s, %s, %s, 'r', image, "
                                "CASE WHEN n = total THEN 'last' ELSE 'true' END FROM ("
                                "SELECT to_jsonb(t) AS image, row_number() OVER () AS n, "
                                "count(*) OVER () AS total FROM {} t) s ORDER BY n")
                        .format(target), (f"{schema}.{name}", agency, resource))
            return int(cur.rowcount)
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot install the outbox on {table}: {exc}".strip()) from exc


def _triggers(cur: Any, resource: str, target: sql.Composable, agency: str) -> None:
    """(Re)create the row trigger (c, u, d) and the statement-level truncate trigger (t)."""
    args = (sql.Literal(agency), sql.Literal(resource))
    for suffix, when, level, function in (
            ("", "INSERT OR UPDATE OR DELETE", "ROW", "capture"),
            ("_truncate", "TRUNCATE", "STATEMENT", "capture_truncate")):
        trigger = sql.Identifier(f"govbus_outbox_{resource}{suffix}"[:63])
        cur.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(trigger, target))
        cur.execute(sql.SQL("CREATE TRIGGER {} AFTER " + when + " ON {} FOR EACH " + level +
                            " EXECUTE FUNCTION govbus_outbox." + function + "({}, {})")
                    .format(trigger, target, *args))


SNAPSHOT_CHUNK = 1000  # rows locked per transaction: writers of other rows never wait long


def in_chunks(agency_dsn: str, table: str, res: Resource, then: str, params: dict[str, Any],
              chunk: int = SNAPSHOT_CHUNK) -> int:
    """Snapshot ``table`` in key order, ``chunk`` rows a transaction: each chunk's rows are
    locked ``FOR SHARE`` to its commit and handed, as ``chunk (k, image)`` with ``image`` the
    row's ``to_jsonb``, to the statement ``then`` (which must select one row of two columns:
    the last key, the count). Returns how many rows. ``%(name)s`` in ``then`` is the table.
    ``then`` reads the chunk from ``marked (k, image, snapshot)``, where ``snapshot`` is
    ``'last'`` for the chunk's last row when no row of a greater key exists (the snapshot's
    last row: Debezium's ``source.snapshot``), else ``'true'``; if the rows after a chunk
    are all deleted before the next chunk is read, no row is marked ``'last'``.

    The lock orders a row's snapshot with its concurrent changes: a writer of the row waits
    for the chunk's commit, and a snapshot waits for a writer's."""
    if res.key_field is None:
        raise OutboxError(f"{res.id} has no key field to snapshot {table} in order")
    try:
        with db.transaction(agency_dsn) as conn, conn.cursor() as cur:
            schema, name = checked_table(cur, table, res)
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot snapshot {table}: {exc}".strip()) from exc
    statement = sql.SQL(
        "WITH chunk AS (SELECT t.{key} AS k, to_jsonb(t) AS image FROM {table} t "
        "WHERE %(after)s::text IS NULL OR t.{key} > %(after)s ORDER BY t.{key} "
        "LIMIT %(chunk)s FOR SHARE), marked AS (SELECT k, image, CASE WHEN k = "
        "(SELECT max(k) FROM chunk) AND NOT EXISTS (SELECT 1 FROM {table} u WHERE u.{key} > "
        "(SELECT max(k) FROM chunk)) THEN 'last' ELSE 'true' END AS snapshot FROM chunk) "
    ).format(key=sql.Identifier(res.key_field), table=sql.Identifier(schema, name)) + \
        sql.SQL(then)
    params = {**params, "after": None, "chunk": chunk, "name": f"{schema}.{name}"}
    total = 0
    try:
        while True:
            with db.transaction(agency_dsn) as conn, conn.cursor() as cur:
                cur.execute(statement, params)
                last, count = cur.fetchone()
            total += int(count)
            if count < chunk:
                return total
            params["after"] = last
    except psycopg2.errors.UndefinedTable as exc:
        raise OutboxError("no outbox in the agency database: install it first "
                          "(govbus outbox --install --table ...)") from exc
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot snapshot {table}: {exc}".strip()) from exc


def snapshot(agency_dsn: str, table: str, agency: str, resource: str, catalogue: Catalogue,
             chunk: int = SNAPSHOT_CHUNK) -> int:
    """Put the current state of every row of ``table`` in the outbox as op ``r``, to be
    published like any change; returns how many rows. The outbox must be installed.

    Rows are read as :func:`in_chunks` says, so their outbox ids follow commit order with the
    row's changes and a snapshot never overtakes a newer change of the same entity. Each
    snapshot is new events (new ids): taken twice, current state is sent twice."""
    res = provider_resource(catalogue, agency, resource)
    return in_chunks(agency_dsn, table, res,
                     ", ins AS (INSERT INTO govbus_outbox.events (table_name, agency, resource, "
                     "op, after, snapshot) SELECT %(name)s, %(agency)s, %(resource)s, 'r', "
                     "image, snapshot FROM marked ORDER BY k) "
                     "SELECT max(k)::text, count(*) FROM chunk",
                     {"agency": agency, "resource": resource}, chunk)


# --- row images to Avro records --------------------------------------------------------------

def _convert(value: Any, avro_type: Any) -> Any:
    """One column value as the Avro type wants it: numerics to int (or float), dates and
    times to ISO strings, arrays item by item. Anything else is left for the contract check."""
    if value is None:
        return None
    for branch in avro_type if isinstance(avro_type, list) else [avro_type]:
        kind = branch.get("type") if isinstance(branch, dict) else branch
        if kind in ("int", "long") and isinstance(value, (Decimal, float)) \
                and value == int(value):
            return int(value)
        if kind in ("float", "double") and isinstance(value, (Decimal, int)) \
                and not isinstance(value, bool):
            return float(value)
        if kind == "string" and hasattr(value, "isoformat"):
            return value.isoformat()
        if kind == "array" and isinstance(value, list):
            return [_convert(v, branch.get("items")) for v in value]
    return value


def to_record(resource: Resource, row: dict[str, Any] | None) -> dict[str, Any] | None:
    """A row image (``to_jsonb`` of the source row) as the contract's record: only the
    contract's fields, each converted; columns the contract does not name are left out."""
    if row is None:
        return None
    return {f.name: _convert(row.get(f.name), f.avro_type) for f in resource.fields
            if f.name in row or f.nullable}


# --- the relay ----------------------------------------------------------------------------

@dataclass
class OutboxRow:
    id: int
    event_id: str
    table_name: str
    op: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    txid: int
    occurred_at: Any
    snapshot: str | None = None  # 'true' or 'last' for a snapshot row



def _exact_jsonb(conn: psycopg2.extensions.connection) -> None:
    """Read jsonb numerics exactly, as Decimal, not as floats."""
    psycopg2.extras.register_default_jsonb(conn, loads=partial(json.loads, parse_float=Decimal))


class OutboxRelay:
    """Publishes one resource's outbox rows from the agency's database to its ingest topic."""

    def __init__(self, agency_dsn: str, settings: Settings, agency: str, resource: str, *,
                 catalogue: Catalogue | None = None, batch_size: int = 500,
                 locality: str | None = None, message_timeout_ms: int = 10000,
                 poll_interval: float = 0.5, key_file: str | None = None,
                 registry: SchemaRegistry | None = None) -> None:
        self.dsn, self.settings, self.agency = agency_dsn, settings, agency
        self.batch_size, self.poll_interval = batch_size, poll_interval
        self.locality = locality or settings.locality
        self.message_timeout_ms = message_timeout_ms
        catalogue = catalogue or load_catalogue(settings.schemas_dir)
        self.resource = provider_resource(catalogue, agency, resource)
        self.publisher = Publisher(settings, catalogue, producer=self._new_producer(),
                                   key_file=key_file, registry=registry)
        self.publisher.signer_for(agency)  # no signing key: refused at start (Art. 8, 24)
        self.published = self.refused = 0
        self.db = db.Reused(self.dsn, on_connect=_exact_jsonb)
        self.order = TransactionOrder(agency, self.resource.name)
        self.dbname = ""  # the agency database's name, as its connection reports it
        self._stop = threading.Event()

    def _new_producer(self) -> Producer:
        # short timeouts: an outage is noticed in seconds, and the relay retries it itself
        return Producer(producer_config(self.settings, **{
            "message.timeout.ms": self.message_timeout_ms, "reconnect.backoff.max.ms": 1000}))

    def _reset_producer(self) -> None:
        """Drop the producer after a failure (it may hold a fatal idempotence state)."""
        old = self.publisher.producer
        old.purge(in_queue=True, in_flight=True, blocking=False)
        old.flush(0)
        self.publisher.producer = self._new_producer()

    def backlog(self) -> int:
        """How many rows of this resource wait to be published (refused rows excluded)."""
        conn = self.db.connection()
        with conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM govbus_outbox.events WHERE published_at IS NULL "
                        "AND rejected_at IS NULL AND agency = %s AND resource = %s",
                        (self.agency, self.resource.name))
            return int(cur.fetchone()[0])

    def _claim(self, cur: Any) -> list[OutboxRow]:
        """Lock the next batch in id order; none when another relay is active."""
        cur.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))",
                    (f"{_LOCK_SPACE}:{self.resource.id}",))
        if not cur.fetchone()[0]:
            return []
        cur.execute("SELECT id, event_id::text, table_name, op, before, after, txid, "
                    "occurred_at, snapshot FROM govbus_outbox.events WHERE published_at IS NULL "
                    "AND rejected_at IS NULL AND agency = %s AND resource = %s "
                    "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                    (self.agency, self.resource.name, self.batch_size))
        self.dbname = cur.connection.info.dbname
        return [OutboxRow(*r) for r in cur.fetchall()]

    def _change(self, row: OutboxRow, transaction: dict[str, Any] | None = None) -> Change:
        """The change of an outbox row; ``source`` says where it is in the agency database
        (db, schema, table, txId, the row id as ``sequence``) and ``transaction`` where it
        is in its transaction (:mod:`govbus.producers.tx_order`)."""
        schema, _, table = row.table_name.rpartition(".")
        return Change(op=row.op, record=to_record(self.resource, row.after),
                      before=to_record(self.resource, row.before), locality=self.locality,
                      occurred_ms=int(row.occurred_at.timestamp() * 1000),
                      event_id=row.event_id, connector="outbox", db=self.dbname,
                      schema=schema or None, table=table, tx_id=row.txid,
                      sequence=str(row.id), snapshot=row.snapshot or "false",
                      transaction=transaction)

    def _send(self, rows: list[OutboxRow], blocks: dict[int, dict[str, Any]]
              ) -> tuple[list[int], dict[int, str], dict[int, Any]]:
        """Produce the batch and wait for acknowledgements: (sent ids, refusals, results)."""
        sent: list[int] = []
        refused: dict[int, str] = {}
        results: dict[int, Any] = {}
        for row in rows:
            event, violations = self.publisher.prepare(self.agency, self.resource,
                                                       self._change(row, blocks.get(row.id)))
            if event is None or violations:
                refused[row.id] = "; ".join(str(v) for v in violations)
                log.warning("outbox row %d (event %s) refused: %s", row.id, row.event_id,
                            refused[row.id])
                continue
            sent.append(row.id)
            try:
                self.publisher.send(self.resource, event,
                                    lambda err, _msg, rid=row.id: results.__setitem__(rid, err))
            except BrokerError as exc:
                results[row.id] = exc  # this row and the rest stay queued
                break
        deadline = time.monotonic() + self.message_timeout_ms / 1000 + 5
        while self.publisher.flush(0.5) and time.monotonic() < deadline \
                and not self._stop.is_set():
            pass
        return sent, refused, results

    def _mark(self, cur: Any, sent: list[int], refused: dict[int, str],
              results: dict[int, Any]) -> tuple[int, str | None]:
        """Mark the acknowledged prefix published and the refused rows rejected."""
        done = 0
        while done < len(sent) and sent[done] in results and results[sent[done]] is None:
            done += 1
        if done:
            cur.execute("UPDATE govbus_outbox.events SET published_at = now(), "
                        "last_error = NULL, attempts = attempts + 1 WHERE id = ANY(%s)",
                        (sent[:done],))
        psycopg2.extras.execute_batch(
            cur, "UPDATE govbus_outbox.events SET rejected_at = now(), last_error = %s, "
            "attempts = attempts + 1 WHERE id = %s", [(why, rid) for rid, why in refused.items()])
        if done == len(sent):
            return done, None
        error = str(results.get(sent[done]) or "no acknowledgement from the broker in time")
        cur.execute("UPDATE govbus_outbox.events SET attempts = attempts + 1, last_error = %s "
                    "WHERE id = ANY(%s)", (error, sent[done:]))
        return done, error

    def run_once(self) -> int:
        """Publish one batch; returns how many rows were published (and marked).

        Raises BrokerError, after marking the acknowledged prefix, when the broker failed;
        DatabaseError or psycopg2.OperationalError when the agency database did."""
        conn = self.db.connection()
        try:
            with conn, conn.cursor() as cur:
                rows = self._claim(cur)
                if not rows:
                    return 0
                blocks = self.order.blocks(cur, [TxRow(r.id, r.txid, r.op) for r in rows])
                sent, refused, results = self._send(rows, blocks)
                done, error = self._mark(cur, sent, refused, results)
        except psycopg2.errors.UndefinedTable as exc:
            raise OutboxError("no outbox in the agency database: install it first "
                              "(python -m govbus.producers.outbox --install --table ...)") from exc
        except psycopg2.errors.UndefinedColumn as exc:
            raise OutboxError("the agency's outbox is older than this relay: run the install "
                              "again, it is idempotent (govbus outbox --install --table ...)"
                              ) from exc
        self.published += done
        self.refused += len(refused)
        metrics.OUTBOX_PUBLISHED.labels(self.agency, self.resource.id).inc(done)
        metrics.OUTBOX_SET_ASIDE.labels(self.agency, self.resource.id).inc(len(refused))
        if error:
            raise BrokerError(f"{done} of {len(sent)} acknowledged, the rest stay queued: "
                              f"{error}")
        return done

    def run(self, stop_event: threading.Event,
            progress: Callable[[str], None] | None = None) -> None:
        """Relay until ``stop_event`` is set, riding out broker and database outages with a
        capped exponential back-off (0.5 s, 1 s, ... 10 s)."""
        self._stop, delay = stop_event, BACKOFF[0]
        while not stop_event.is_set():
            try:
                published = self.run_once()
                self.observe()
            except (BrokerError, DatabaseError, psycopg2.OperationalError,
                    psycopg2.InterfaceError) as exc:
                broker = isinstance(exc, BrokerError)
                if broker:
                    self._reset_producer()
                else:
                    self.db.close()
                if not stop_event.is_set():
                    (progress or log.warning)(f"{'broker' if broker else 'database'} "
                                              f"unavailable, nothing lost, retrying in "
                                              f"{delay:.1f} s: {exc}")
                stop_event.wait(delay)
                delay = min(delay * 2, BACKOFF[1])
                continue
            delay = BACKOFF[0]
            if published and progress:
                progress(f"published {published} (total {self.published}, refused "
                         f"{self.refused}), {self.status()}")
            if published < self.batch_size:
                stop_event.wait(self.poll_interval)
        self.close()

    def observe(self) -> None:
        """Update the gauge of what waits (after each batch)."""
        metrics.OUTBOX_BACKLOG.labels(self.agency, self.resource.id).set(self.backlog())

    def status(self) -> str:
        """What waits, for the progress lines."""
        return f"backlog {self.backlog()}"

    def close(self) -> None:
        """Release the database connection and the producer (no pending marks remain)."""
        self.db.close()
        self.publisher.producer.flush(1)


# --- command line ---------------------------------------------------------------------------

DESCRIPTION = ("Relay an agency's row changes to the bus: its transactional outbox, or its "
               "logical decoding (--capture logical). Broker and schema registry "
               "come from KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL (or the embedded runtime of "
               "`govbus up`).")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The relay's options, on ``python -m govbus.producers.outbox`` and ``govbus outbox``."""
    p.add_argument("--dsn", required=True, help="the AGENCY's PostgreSQL (holds the outbox)")
    p.add_argument("--agency", required=True, help="provider agency, e.g. public_security")
    p.add_argument("--resource", required=True, help="resource, e.g. population_register")
    p.add_argument("--table", help="source-of-record table (schema-qualified allowed)")
    p.add_argument("--install", action="store_true",
                   help="install (idempotently) the capture of --table first: the outbox and "
                   "its trigger, or the publication and the slot (--capture logical); the first "
                   "install snapshots the rows that exist (op r)")
    p.add_argument("--capture", choices=("trigger", "logical"), default="trigger",
                   help="trigger: the outbox table filled by a trigger (default); logical: "
                   "PostgreSQL's logical decoding (pgoutput), no trigger (docs/capture.md)")
    p.add_argument("--snapshot", action="store_true",
                   help="take a snapshot of --table now: every row's current state as op r")
    p.add_argument("--no-snapshot", action="store_true",
                   help="with --install: do not snapshot the rows that exist")
    p.add_argument("--slot", help="--capture logical: the replication slot, also the "
                   "publication's name (default govbus_<agency>_<resource>)")
    p.add_argument("--once", action="store_true", help="publish what waits, then exit")
    p.add_argument("--batch-size", type=int, default=500, help="rows per batch (500)")
    p.add_argument("--locality", help="division code of the records (default: "
                   f"$GOVBUS_LOCALITY, else {DEFAULT_LOCALITY})")
    p.add_argument("--message-timeout-ms", type=int, default=10000,
                   help="broker acknowledgement deadline per event (10000)")
    p.add_argument("--key-file", help="the agency's Ed25519 private key the events are signed "
                   "with (default: $GOVBUS_SIGNING_KEY_FILE)")


def signal_stop() -> threading.Event:
    """An event set by SIGTERM or SIGINT: the relay finishes its batch and stops."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m govbus.producers.outbox``. Returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m govbus.producers.outbox",
                                     description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv), parser)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser,
        settings: Settings | None = None, registry: SchemaRegistry | None = None) -> int:
    """Relay as ``args`` say (``govbus outbox`` calls this with its own sub-parser, and with
    the settings and the registry of the HTTP service when it acts through the service)."""
    if (args.install or args.snapshot) and not args.table:
        parser.error("--install and --snapshot need --table")
    if args.capture == "logical":
        from govbus.producers import logical  # imports this module: imported when chosen

        return logical.run(args, parser, settings, registry)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")

    def say(line: str) -> None:
        print(f"outbox {args.agency}.{args.resource}: {line}", file=sys.stderr, flush=True)

    logging.basicConfig(level=logging.WARNING, format="outbox: %(message)s")
    stop = signal_stop()
    try:
        settings = settings or Settings.from_env()
        metrics.serve()
        catalogue = load_catalogue(settings.schemas_dir)
        if args.install:
            taken = install(args.dsn, args.table, args.agency, args.resource, catalogue,
                            snapshot=not args.no_snapshot)
            say(f"installed on {args.table}" + (f", {taken} rows snapshotted" if taken else ""))
        if args.snapshot:
            taken = snapshot(args.dsn, args.table, args.agency, args.resource, catalogue)
            say(f"snapshot of {args.table}: {taken} rows")
        relay = OutboxRelay(args.dsn, settings, args.agency, args.resource,
                            catalogue=catalogue, batch_size=args.batch_size,
                            locality=args.locality,
                            message_timeout_ms=args.message_timeout_ms,
                            key_file=args.key_file, registry=registry)
        relay.publisher.registry.latest(relay.resource.id)  # fail fast: contract registered
        say(f"relaying to {relay.resource.ingest_topic}, backlog {relay.backlog()}")
        if args.once:  # what waits now, then exit
            while relay.run_once() and relay.backlog():
                pass
            say(f"published {relay.published}, refused {relay.refused}, "
                f"backlog {relay.backlog()}")
            relay.close()
        else:
            relay.run(stop, say)
            say(f"stopped: published {relay.published}, refused {relay.refused}")
    except (GovbusError, psycopg2.Error) as exc:
        say(f"error: {exc}".strip())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
