"""An agency's subscriber: the deliveries of its grants in force, printed or applied to a table.

It reads only ``deliver.<agency>.<resource>`` for the agency's grants in force — literal topic
names from :func:`govbus.core.sharing_store.load_grants`, re-read every few seconds so a new
grant is picked up and a revoked or expired one dropped; never a pattern that could match
another agency's topics (Art. 24: shared data goes only to the entitled agency). Messages of a
topic whose grant has ended are not used.

Every delivery is verified against the bus's public keys (``GOVBUS_BUS_PUBLIC_KEY_FILE``, from
``govbus keys show --bus``; :mod:`govbus.core.signatures`) before it is used: one that fails —
unsigned, signed by another key, changed after signing — is refused: counted, logged with its
reason, never applied, never confirmed as received (Art. 8, 24).

Deliveries are framed Avro, each carrying the id of its projection's schema, which the
subscriber looks up once (through the control plane: the Schema Registry API of the service,
or the bus's database), or JSON where the grant asks for it (:mod:`govbus.core.deliveries`).
Each batch is printed as JSON lines, or applied to a table in the agency's own PostgreSQL
(:class:`TableSink`: upsert by entity key in order; an event older than the row's is
skipped, so replays are idempotent; ``d`` deletes, ``t`` removes the rows older than it;
a table with a column per granted field gets the fields as columns, else one JSON record).
Then its receipt is confirmed in the bus's ``receipts`` table (channel ``exchange``) with the
hash of what was received, and only then are the Kafka offsets committed: a crash replays a
batch, it never loses one.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

import psycopg2
import psycopg2.extras
from confluent_kafka import Consumer, TopicPartition
from psycopg2 import sql

from govbus.core import access, db, metrics, topics
from govbus.core.batching import BatchStage, commit, usable
from govbus.core.config import Settings
from govbus.core.deliveries import Decoder, database_lookup
from govbus.core.errors import BrokerError, DatabaseError, GovbusError
from govbus.core.kafka import consumer_config
from govbus.core.keyring import bus_verifier
from govbus.core.serde import json_bytes
from govbus.core.sharing import Grant
from govbus.core.sharing_store import load_grants, now
from govbus.core.signatures import Verifier, leaf
from govbus.core.topics import CHECKPOINTS
from govbus.delivery_log import MalformedEntry, confirm_receipts
from govbus.delivery_log.checkpoint_store import keep as keep_checkpoints
from govbus.delivery_log.checkpoints import Checkpoint
from govbus.delivery_log.checkpoints import parse as parse_checkpoint

log = logging.getLogger("govbus.subscriber")
AGENCY = re.compile(r"^[a-z0-9_]+$")
TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
OPS = ("c", "u", "d", "r", "t")
CHANNEL = "exchange"


class SubscriberError(GovbusError):
    """The subscriber cannot start as asked: agency name, table, resources."""


def check_agency(agency: str) -> str:
    """Refuse a name a topic or group could be widened with (``.``, ``*``, regex)."""
    if not AGENCY.match(agency or ""):
        raise SubscriberError(f"agency {agency!r} is not a plain name: only a-z, 0-9 and _ "
                              "are allowed")
    return agency


def group_id(agency: str) -> str:
    return f"govbus-subscriber-{check_agency(agency)}"


def resource_name(resource: str) -> str:
    """``tax.tax_registration`` or ``tax_registration`` → ``tax_registration``."""
    return resource.split(".", 1)[-1]


def granted_topics(grants: Iterable[Grant], agency: str, at: Any,
                   resources: Iterable[str] | None = None) -> list[str]:
    """The deliver topics of ``agency``'s grants in force at ``at``, optionally filtered."""
    wanted = {resource_name(r) for r in resources} if resources else None
    found = {topics.deliver(agency, g.resource_id) for g in grants
             if g.recipient == agency and g.in_force(at)}
    return sorted(t for t in found if wanted is None or t.split(".", 2)[2] in wanted)


class ControlPlane(Protocol):
    """What a subscriber asks the bus's control plane: whether the agency is who it says,
    its grants, and to record what it received (Art. 24). :class:`DatabaseControlPlane`
    asks the central database; the command line passes one that asks the HTTP service, so
    that an agency needs no database address."""

    def check(self, agency: str) -> None:
        """AccessError unless the caller holds ``agency``'s credential."""

    def grants(self, agency: str) -> Sequence[Any]:
        """``agency``'s grants (each with ``recipient``, ``resource_id``, ``in_force(at)``);
        DatabaseError when the control plane cannot be reached."""

    def confirm(self, keys: list[tuple[str, str, str, str | None]]) -> int:
        """Record receipts (event id, recipient, channel, content hash); the new ones."""

    def schema(self, schema_id: int) -> dict[str, Any] | None:
        """The delivery schema registered under ``schema_id``; None if there is none."""


class DatabaseControlPlane:
    """The control plane as the central database, with the agency's token."""

    def __init__(self, dsn: str, token_file: str | None = None) -> None:
        self.dsn, self.token_file = dsn, token_file

    def check(self, agency: str) -> None:
        access.require(self.dsn, agency, self.token_file)  # Art. 24

    def grants(self, agency: str) -> Sequence[Any]:
        return load_grants(self.dsn, recipient=agency)

    def confirm(self, keys: list[tuple[str, str, str, str | None]]) -> int:
        return confirm_receipts(self.dsn, keys)

    def schema(self, schema_id: int) -> dict[str, Any] | None:
        return database_lookup(self.dsn)(schema_id)


@dataclass(frozen=True)
class Received:
    """One delivery as the hot path produced it, and where the subscriber read it."""

    event_id: str
    op: str
    key: str
    record: dict[str, Any] | None
    occurred_ms: int
    value: dict[str, Any]
    topic: str
    partition: int
    offset: int
    content_sha256: str | None = None  # what was received, byte for byte (its leaf hash)

    @classmethod
    def from_message(cls, msg: Any, decode: Decoder) -> Received:
        """Decode a message (framed Avro or JSON); ``ValueError`` says what is wrong with
        it. A schema that cannot be looked up now raises DatabaseError: the batch waits."""
        value = decode(msg.value())
        event_id, op, key, occurred = (value.get(k) for k in ("event_id", "op", "key",
                                                                "occurred_ms"))
        record = value.get("after")
        if not isinstance(event_id, str) or not event_id:
            raise ValueError("no event_id")
        if op not in OPS:
            raise ValueError(f"op {op!r} is not one of {', '.join(OPS)}")
        if not isinstance(key, str) or not isinstance(occurred, int):
            raise ValueError("key (string) and occurred_ms (integer) are required")
        if record is not None and not isinstance(record, dict):
            raise ValueError("after is neither a record nor null")
        header = dict(msg.headers() or []).get("event_id")
        received = leaf(msg.topic(), msg.key(), msg.value(),
                        header.encode() if isinstance(header, str) else header).hex()
        return cls(event_id, op, key, record, occurred, value, msg.topic(), msg.partition(),
                   msg.offset(), received)


class _Link:
    """One PostgreSQL connection kept across batches; dropped and reopened after a failure."""

    def __init__(self, dsn: str, what: str) -> None:
        self.dsn, self.what = dsn, what
        self.conn: Any = None

    @contextmanager
    def cursor(self) -> Iterator[Any]:
        try:
            if self.conn is None:
                self.conn = db.connect(self.dsn)
            with self.conn, self.conn.cursor() as cur:
                yield cur
        except psycopg2.Error as exc:
            self.close()
            raise DatabaseError(f"{self.what} at {db.redact(self.dsn)}: {exc}") from exc

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            finally:
                self.conn = None


#: the columns a sink table keeps besides the record, whichever form it has
BOOKKEEPING = ("entity_key", "event_id", "op", "occurred_ms")


class TableSink:
    """The agency's own table, one row per entity: the latest delivered record.

    Two forms. A table that does not exist is created with the record as one ``jsonb``
    column (``record``). A table the agency made with a column per granted field (and
    ``entity_key`` unique, ``event_id``, ``op``, ``occurred_ms``; ``updated_at`` if it
    likes) gets each field in its column: :meth:`check` refuses to start when a granted field
    has none, naming it, so nothing delivered is silently left out."""

    def __init__(self, dsn: str, table: str) -> None:
        if not TABLE.match(table or ""):
            raise SubscriberError(f"table {table!r} is not a plain [schema.]name")
        self.table = table
        self.ident = sql.Identifier(*table.split("."))
        self.link = _Link(dsn, f"sink table {table}")
        #: the field columns, in column mode; None when the record is one jsonb column
        self.columns: list[str] | None = None
        self.stamped = True  # has updated_at

    def _existing(self, cur: Any) -> list[str]:
        schema, _, name = self.table.rpartition(".")
        cur.execute("""SELECT column_name FROM information_schema.columns
                       WHERE table_name = %s AND table_schema = coalesce(nullif(%s, ''),
                             current_schema()) ORDER BY ordinal_position""", (name, schema))
        return [r[0] for r in cur.fetchall()]

    def ensure(self) -> None:
        with self.link.cursor() as cur:
            columns = self._existing(cur)
            if not columns:
                cur.execute(sql.SQL("""CREATE TABLE IF NOT EXISTS {} (
                    entity_key text PRIMARY KEY, record jsonb, event_id text NOT NULL,
                    op text NOT NULL, occurred_ms bigint NOT NULL,
                    updated_at timestamptz NOT NULL DEFAULT now())""").format(self.ident))
                return
        missing = [c for c in BOOKKEEPING if c not in columns]
        if missing:
            raise SubscriberError(f"table {self.table} lacks the column(s) "
                                  f"{', '.join(missing)}: a sink table has "
                                  f"{', '.join(BOOKKEEPING)} and either a jsonb record column "
                                  "or a column per granted field")
        self.stamped = "updated_at" in columns
        if "record" not in columns:
            self.columns = [c for c in columns if c not in (*BOOKKEEPING, "updated_at")]

    def check(self, fields: Iterable[str]) -> None:
        """In column mode, SubscriberError unless every granted field has its column."""
        if self.columns is None:
            return
        missing = [f for f in fields if f not in self.columns]
        if missing:
            raise SubscriberError(f"table {self.table} has no column for the granted "
                                  f"field(s) {', '.join(missing)}: add them (ALTER TABLE "
                                  f"{self.table} ADD COLUMN ...) or use a table with a jsonb "
                                  "record column")

    def _upsert(self, names: list[str]) -> sql.Composed:
        cols = [*BOOKKEEPING, *names] + (["updated_at"] if self.stamped else [])
        values = [sql.Placeholder()] * (len(BOOKKEEPING) + len(names)) + (
            [sql.SQL("now()")] if self.stamped else [])
        updates = [sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
                   for c in cols if c != "entity_key"]
        return sql.SQL("""INSERT INTO {} AS cur ({}) VALUES ({})
                          ON CONFLICT (entity_key) DO UPDATE SET {}
                          WHERE cur.occurred_ms <= EXCLUDED.occurred_ms""").format(
            self.ident, sql.SQL(", ").join(map(sql.Identifier, cols)),
            sql.SQL(", ").join(values), sql.SQL(", ").join(updates))

    def apply(self, deliveries: Sequence[Received], checkpoints: Sequence[Checkpoint] = ()
              ) -> Counter[str]:
        """Apply in order, in one transaction. An event older than the stored one is skipped.

        A delete removes the row only if it is not older than the row, a truncate every row
        older than it (a reload in its transaction, of its instant, stays): replaying a batch
        converges on the same table. The log's
        ``checkpoints`` received with the batch are kept in the same transaction
        (``govbus_evidence.checkpoints``): the agency's own evidence of what the bus's log
        held (docs/security.md).
        """
        delete = sql.SQL("DELETE FROM {} WHERE entity_key = %s AND occurred_ms <= %s"
                         ).format(self.ident)
        truncate = sql.SQL("DELETE FROM {} WHERE occurred_ms < %s").format(self.ident)
        counts: Counter[str] = Counter()
        statements: dict[tuple[str, ...], sql.Composed] = {}
        with self.link.cursor() as cur:
            for d in deliveries:
                if d.op == "t":
                    cur.execute(truncate, (d.occurred_ms,))
                    counts["truncated"] += cur.rowcount
                    continue
                if d.op == "d":
                    cur.execute(delete, (d.key, d.occurred_ms))
                    counts["deleted" if cur.rowcount else "stale"] += 1
                    continue
                head = [d.key, d.event_id, d.op, d.occurred_ms]
                if self.columns is None:
                    names: tuple[str, ...] = ("record",)
                    row = [psycopg2.extras.Json(d.record) if d.record is not None else None]
                else:
                    names = tuple(n for n in (d.record or {}) if n in self.columns)
                    row = [_column_value(d.record[n]) for n in names]  # type: ignore[index]
                statement = statements.get(names)
                if statement is None:
                    statement = statements[names] = self._upsert(list(names))
                cur.execute(statement, head + row)
                counts["applied" if cur.rowcount else "stale"] += 1
            if checkpoints:
                counts["checkpoints_kept"] += keep_checkpoints(cur.connection, checkpoints)
        return counts

    def close(self) -> None:
        self.link.close()


def _column_value(value: Any) -> Any:
    """A delivered field as its column takes it: nested records and arrays as JSON."""
    return psycopg2.extras.Json(value) if isinstance(value, (dict, list)) else value


class Subscriber(BatchStage):
    """Reads an agency's deliveries in batches until :meth:`stop`, ``max_messages`` or idle.

    ``sink`` is a :class:`TableSink`; without one each delivery is printed to ``out`` as one
    JSON line. ``resources`` restricts the subscription to some granted resources; a table
    holds one resource, so with a sink and no ``resources`` the agency must have exactly one
    granted resource in force.
    """

    component = "subscriber"

    def __init__(self, settings: Settings, agency: str, sink: TableSink | None = None, *,
                 out: TextIO | None = None, resources: Sequence[str] | None = None,
                 max_messages: int | None = None, idle_exit: float | None = None,
                 refresh_s: float = 3.0, batch: int = 500, verifier: Verifier | None = None,
                 control: ControlPlane | None = None) -> None:
        self.settings, self.agency, self.sink = settings, check_agency(agency), sink
        self.control = control or DatabaseControlPlane(settings.database_url)
        self.decode = Decoder(self.control.schema)  # each schema id looked up once
        #: the bus's public keys every delivery must verify against (none found: refused
        #: at start, nothing is used unverified)
        self.verifier = verifier or bus_verifier(settings)
        self.out = out or sys.stdout
        self.resources = [resource_name(r) for r in resources] if resources else None
        self.max_messages, self.idle_exit = max_messages, idle_exit
        self.refresh_s = refresh_s
        self.prefix = topics.deliver_prefix(self.agency)
        self.topics: list[str] = []      # what the consumer is subscribed to now
        self.assigned: set[str] = set()  # topics of the partitions assigned now
        if sink is not None and self.resources is None:
            self.resources = self._only_resource()
        elif self.resources:
            self._refuse_ungranted(self.resources)
        super().__init__(Consumer(consumer_config(settings, group_id(self.agency))), batch)
        self._refreshed = 0.0
        self._last_activity = time.monotonic()

    def _only_resource(self) -> list[str]:
        topics = granted_topics(self.control.grants(self.agency), self.agency, now())
        if len(topics) != 1:
            have = ", ".join(t.split(".", 2)[2] for t in topics) or "none"
            raise SubscriberError(f"a table holds one resource; {self.agency} has "
                                  f"{len(topics)} granted resource(s) in force ({have}): "
                                  "name one with --resource")
        return [topics[0].split(".", 2)[2]]

    def _refuse_ungranted(self, resources: list[str]) -> None:
        """Asked explicitly for a resource without a grant in force: refuse, don't wait
        (Art. 24: a subscriber cannot be pointed at what its agency is not granted)."""
        granted = {t.split(".", 2)[2] for t in granted_topics(
            self.control.grants(self.agency), self.agency, now())}
        ungranted = sorted(set(resources) - granted)
        if ungranted:
            raise SubscriberError(f"{self.agency} has no grant in force for "
                                  f"{', '.join(ungranted)} (Art. 24); granted: "
                                  f"{', '.join(sorted(granted)) or 'nothing'}")

    def run(self) -> Counter[str]:
        """Process batches until stopped, ``max_messages`` or idle; then close. The counts."""
        if self.sink is not None:
            self.sink.ensure()
            at = now()
            wanted = {resource_name(r) for r in self.resources} if self.resources else None
            self.sink.check(dict.fromkeys(
                f for g in self.control.grants(self.agency)
                if g.recipient == self.agency and g.in_force(at)
                and (wanted is None or resource_name(g.resource_id) in wanted)
                for f in g.fields))
        return super().run()

    def finished(self) -> bool:
        """``max_messages`` read, or idle for ``idle_exit`` seconds."""
        if self.max_messages is not None and self.stats["messages"] >= self.max_messages:
            return True
        idle = time.monotonic() - self._last_activity
        return self.idle_exit is not None and idle >= self.idle_exit

    def fetch(self) -> list[Any]:
        """Refresh the grants when due, then read up to a batch of what they allow."""
        self.refresh()
        if not self.topics:
            self.stopping.wait(min(0.5, self.refresh_s))
            return []
        n = self.batch
        if self.max_messages is not None:
            n = max(1, min(n, self.max_messages - self.stats["messages"]))
        return usable(self.consumer.consume(n, 0.5))

    def refresh(self, force: bool = False) -> list[str]:
        """Re-read the grants (every ``refresh_s``) and re-subscribe if the topics changed."""
        if not force and time.monotonic() - self._refreshed < self.refresh_s:
            return self.topics
        self._refreshed = time.monotonic()
        try:
            grants = self.control.grants(self.agency)
        except DatabaseError as exc:
            log.warning("grants not refreshed, keeping %s: %s", self.topics, exc)
            return self.topics
        topics = granted_topics(grants, self.agency, now(), self.resources)
        if self.sink is not None and topics:  # the log's checkpoints, kept with the data
            topics = [*topics, CHECKPOINTS]
        if topics != self.topics:
            log.info("%s now reads %s", self.agency, ", ".join(topics) or "nothing")
            if topics:
                self.consumer.subscribe(topics, on_assign=self._on_assign,
                                        on_revoke=self._on_revoke)
            else:
                self.consumer.unsubscribe()
                self.assigned = set()
            self.topics = topics
        return topics

    def _on_assign(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        self.assigned = {p.topic for p in partitions}
        self._last_activity = time.monotonic()

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        self.assigned -= {p.topic for p in partitions}

    def process(self, msgs: list[Any]) -> None:
        """Print or apply, confirm receipt, then commit; counts only a batch that is done."""
        counts: Counter[str] = Counter()
        deliveries, offsets, checkpoints = [], {}, []
        for msg in msgs:
            topic = msg.topic()
            if topic == CHECKPOINTS:
                offsets[(topic, msg.partition())] = msg.offset() + 1
                try:
                    checkpoints.append(parse_checkpoint(msg.value()))
                except MalformedEntry as exc:
                    counts["malformed_checkpoints"] += 1
                    log.warning("malformed checkpoint %s@%d skipped: %s", topic, msg.offset(),
                                exc)
                continue
            counts["messages"] += 1
            if not topic.startswith(self.prefix) or topic not in self.topics:
                counts["not_granted"] += 1  # its grant ended since the fetch: not used
                continue
            offsets[(topic, msg.partition())] = msg.offset() + 1
            refused = self.verifier.check(topic, msg.key(), msg.value(), msg.headers())
            if refused is not None:  # not the bus's: never applied, never confirmed
                counts["refused"] += 1
                counts[f"refused {refused.rule}"] += 1
                metrics.SUBSCRIBER_REFUSED.labels(self.agency, refused.rule).inc()
                log.warning("delivery %s[%d]@%d refused (%s): %s", topic, msg.partition(),
                            msg.offset(), refused.rule, refused.message)
                continue
            try:
                deliveries.append(Received.from_message(msg, self.decode))
            except ValueError as exc:
                counts["malformed"] += 1
                log.warning("malformed delivery %s[%d]@%d skipped: %s", topic,
                            msg.partition(), msg.offset(), exc)
        if self.sink is not None:
            counts.update(self.sink.apply(deliveries, checkpoints))
        else:
            self._print(deliveries)
        counts["receipts"] = self.control.confirm(
            [(d.event_id, self.agency, str(d.value.get("channel") or CHANNEL), d.content_sha256)
             for d in deliveries])
        counts["delivered"] = len(deliveries)
        self.stats.update(counts)
        self._last_activity = time.monotonic()
        self._commit(offsets)

    def _print(self, deliveries: list[Received]) -> None:
        for d in deliveries:
            self.out.write(json_bytes(d.value).decode() + "\n")
        self.out.flush()

    def _commit(self, offsets: dict[tuple[str, int], int]) -> None:
        try:
            commit(self.consumer, offsets)
        except BrokerError as exc:
            # Output and receipts are idempotent: a rebalance replays the batch, harmlessly.
            log.warning("offsets not committed (the batch may be replayed): %s", exc)

    def close(self) -> None:
        super().close()
        if self.sink is not None:
            self.sink.close()


DESCRIPTION = ("Read an agency's deliveries (its grants in force, Art. 24): print them as JSON "
               "lines, or apply them to a table of its own.")


def main(argv: list[str] | None = None) -> int:
    """``python -m govbus.consumers.subscriber``, the options of ``govbus subscribe``."""
    parser = argparse.ArgumentParser(prog="python -m govbus.consumers.subscriber",
                                     description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv), parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--agency B [--sink-dsn DSN --table T] [--resource R] [--max N] [--idle-exit S]``."""
    parser.add_argument("--agency", required=True, help="the receiving agency")
    parser.add_argument("--sink-dsn", help="the agency's own PostgreSQL (with --table)")
    parser.add_argument("--table", help="table to upsert into: created with one jsonb record "
                        "column if missing; a table with a column per granted field gets "
                        "the fields as columns")
    parser.add_argument("--resource", action="append", help="only this granted resource "
                        "(repeatable); needed for a table when several are granted")
    parser.add_argument("--max", type=int, help="stop after N messages")
    parser.add_argument("--idle-exit", type=float, metavar="SECONDS",
                        help="stop after SECONDS without deliveries")
    parser.add_argument("--token-file", help="the agency's token (mode 600); else "
                        "$GOVBUS_TOKEN_FILE or $GOVBUS_TOKEN")
    parser.add_argument("--bus-public-key", metavar="FILE", help="the bus's public key(s) the "
                        "deliveries are verified with (`govbus keys show --bus`); else "
                        "$GOVBUS_BUS_PUBLIC_KEY_FILE")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser,
        control: ControlPlane | None = None, settings: Settings | None = None) -> int:
    """Subscribe as ``args`` say (``govbus subscribe`` calls this with its sub-parser, and
    with the HTTP service's ``control`` when it acts through the service)."""
    if bool(args.sink_dsn) != bool(args.table):
        parser.error("--sink-dsn and --table go together")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        check_agency(args.agency)
        settings = settings or Settings.from_env()
        control = control or DatabaseControlPlane(settings.database_url, args.token_file)
        control.check(args.agency)  # Art. 24
        sink = TableSink(args.sink_dsn, args.table) if args.sink_dsn else None
        sub = Subscriber(settings, args.agency, sink, resources=args.resource,
                         max_messages=args.max, idle_exit=args.idle_exit,
                         verifier=bus_verifier(settings, args.bus_public_key), control=control)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, sub.stop)
            signal.signal(signal.SIGINT, sub.stop)
        stats = sub.run()
    except GovbusError as exc:
        print(f"govbus subscribe: error: {exc}", file=sys.stderr)
        return 1
    log.info("%s: %s", args.agency, dict(sorted(stats.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
