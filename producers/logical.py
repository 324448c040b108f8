"""Log-based capture: an agency's row changes read from PostgreSQL's logical decoding.

The second capture mode of the outbox adapter (``govbus outbox --capture logical``): no
trigger and no outbox table in the agency's schema. :func:`install` creates a publication of
the source-of-record table and a logical replication slot (plugin ``pgoutput``), and sets the
table's ``REPLICA IDENTITY FULL`` so that updates and deletes carry their ``before`` image.
:class:`LogicalRelay` streams the slot through psycopg2's replication connection, parses the
messages (:mod:`govbus.producers.pgoutput`), and publishes each change through the same
:class:`~govbus.producers.publisher.Publisher` as the trigger mode (signed, contract-checked):

- **Never lost.** The slot's confirmed position is advanced to a transaction's end only after
  the broker acknowledged every event of it and of the transactions before it. A relay that
  crashes, or a broker that fails, leaves the slot where it was: the server sends those
  transactions again, and the relay publishes them again under the *same* event ids (named by
  the database, the transaction's commit position and the change's place in it) with the same
  content, so downstream de-duplication and the hot path's id check take them as retries.
- **Order per entity.** The server sends transactions in commit order; an entity's changes
  are serialised by its row lock; the relay produces in that order, keyed by entity, with an
  idempotent producer, and a retry re-sends from the confirmed position onwards.
- **Source.** ``source.db`` is the database the slot decodes (``IDENTIFY_SYSTEM``),
  ``schema`` and ``table`` the relation's, ``txId`` the transaction id, ``lsn`` the change's
  LSN; ``occurred_ms`` (= ``source.ts_ms``) is the commit time. ``transaction`` is
  ``{id: txId, total_order, data_collection_order}``, both orders the change's place among
  the transaction's changes the slot streams, from 1: its publication holds the one captured
  table, so they are equal, and the transaction's changes of other tables are not counted.
- **Snapshots** (op ``r``): :func:`snapshot` reads the table in key order, a chunk per
  transaction, ``FOR SHARE``, and writes each row's state into the WAL as a transactional
  logical message (``pg_logical_emit_message``), which reaches the relay through the slot in
  commit order with the changes: the same path, the same guarantees. ``source.snapshot`` is
  ``true``, ``last`` for the snapshot's last row; a snapshot row has no ``transaction``.
- **Truncate** (op ``t``): a ``TRUNCATE`` of the captured table is one event with neither
  image and an empty key, in its place in the stream.
- **Bad rows** are refused with their reasons, logged and counted
  (``govbus_outbox_set_aside_total``); the stream goes on.

Slot lag (WAL the slot holds back) is ``govbus_outbox_slot_lag_bytes``.
"""

from __future__ import annotations

import argparse
import json
import logging
import select
import sys
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from govbus.core import metrics
from govbus.core.catalogue import load_catalogue
from govbus.core.config import Settings
from govbus.core.errors import BrokerError, DatabaseError, GovbusError
from govbus.core.registry import SchemaRegistry
from govbus.producers import pgoutput
from govbus.producers.logical_setup import (
    SLOT_LAG,
    install,
    slot_lag,
    slot_name,
    snapshot,
    snapshot_prefix,
)
from govbus.producers.outbox import OutboxError, OutboxRelay, to_record
from govbus.producers.publisher import Change

__all__ = ["Batch", "LogicalRelay", "install", "run", "slot_lag", "slot_name", "snapshot",
           "snapshot_prefix"]
log = logging.getLogger("govbus.outbox.logical")
#: names the events of one database's changes (with its system id, commit LSN, ordinal)
EVENT_NAMESPACE = uuid.UUID("6f1c1b2e-5d0b-4c4e-9a51-7a0f3c1d2e4b")
_JSON_TYPES = {114, 3802}  # json, jsonb: numbers read exactly, as in the trigger mode


# --- the relay ---------------------------------------------------------------------------

class Images(NamedTuple):
    """What one change message says: op, row images cast, ``schema.table``, snapshot flag."""

    op: str
    after: dict[str, Any] | None
    before: dict[str, Any] | None
    table: str
    snapshot: str = "false"


@dataclass
class Batch:
    """What one batch produced: event ids in order, the transactions they end, answers."""

    sent: list[str] = field(default_factory=list)
    commits: list[tuple[int, int]] = field(default_factory=list)  # (end LSN, events before)
    results: dict[str, Any] = field(default_factory=dict)
    refused: int = 0

    def acknowledged(self) -> tuple[int, int]:
        """(events, end LSN) of the longest prefix of whole transactions the broker
        acknowledged; LSN 0 when none."""
        done = 0
        while done < len(self.sent) and self.results.get(self.sent[done], False) is None:
            done += 1
        upto = 0
        for end_lsn, count in self.commits:
            if count <= done:
                upto = end_lsn
        return done, upto

    def exposed(self, data_start: int, confirmed: int) -> bool:
        """Whether whole transactions of this batch must be settled before the next read.

        psycopg2, on a server keepalive, moves the flush position it reports up to the
        server's WAL end by itself when the last message read lies at or below the position
        confirmed so far: "the client processed everything". A transaction that began before
        the last confirmed commit sends its first messages at such positions, while the
        transactions read after that commit may still wait for the broker; so those are
        settled (acknowledged, then confirmed) before another message is read. What the
        keepalive then confirms is below the open transaction's commit, which the server
        sends again after a crash."""
        return data_start <= confirmed and bool(self.commits) and self.commits[-1][0] > confirmed


class LogicalRelay(OutboxRelay):
    """Publishes one resource's changes from the agency's replication slot to its topic."""

    def __init__(self, agency_dsn: str, settings: Settings, agency: str, resource: str, *,
                 slot: str | None = None, **options: Any) -> None:
        super().__init__(agency_dsn, settings, agency, resource, **options)
        self.slot = slot or slot_name(agency, resource)
        self.prefix = snapshot_prefix(agency, resource)
        self.confirmed = 0  # the LSN confirmed to the server in this session
        self._repl: Any = None
        self._cur: Any = None
        self._origin = ""
        self._dbname = ""
        self._relations = pgoutput.Relations()
        self._tx: pgoutput.Begin | None = None
        self._ordinal = 0

    # -- the replication session
    def _connect(self) -> None:
        try:
            self._repl = psycopg2.connect(
                self.dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection,
                connect_timeout=10, application_name="govbus-logical")
            self._cur = self._repl.cursor()
            self._cur.execute("IDENTIFY_SYSTEM")
            system, _timeline, _pos, dbname = self._cur.fetchone()
            self._origin, self._dbname = f"{system}/{dbname}/{self.resource.id}", dbname
            self._cur.start_replication(
                slot_name=self.slot, decode=False, status_interval=5,
                options={"proto_version": "1", "publication_names": self.slot,
                         "messages": "true"})
        except psycopg2.errors.UndefinedObject as exc:
            self.disconnect()
            raise OutboxError(f"no replication slot {self.slot!r} in the agency database: "
                              "install it first (govbus outbox --capture logical --install "
                              "--table ...)") from exc
        except psycopg2.Error as exc:
            self.disconnect()
            raise DatabaseError(f"cannot stream slot {self.slot}: {exc}".strip()) from exc
        self._relations, self._tx = pgoutput.Relations(), None

    def disconnect(self) -> None:
        """End the replication session without confirming anything more: what was read and
        not confirmed is sent again to the next session (as after a crash)."""
        if self._repl is not None:
            try:
                self._repl.close()
            except psycopg2.Error:
                pass
        self._repl = self._cur = None

    # -- messages to changes
    def _cast(self, value: pgoutput.Value, type_oid: int) -> Any:
        if not isinstance(value, str):
            return value
        if type_oid in _JSON_TYPES:
            return json.loads(value, parse_float=Decimal)
        caster = psycopg2.extensions.string_types.get(type_oid)
        return value if caster is None else caster(value, self._cur)

    def _image(self, oid: int, values: tuple[pgoutput.Value, ...] | None,
               base: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """A row image by column name, cast; unchanged TOAST values taken from ``base``."""
        if values is None:
            return None
        rel = self._relations.get(oid)
        image = {}
        for col, value in zip(rel.columns, values, strict=True):
            if value is pgoutput.UNCHANGED:
                if base is None or col.name not in base:
                    raise OutboxError(f"{rel.qualified}.{col.name}: an unchanged TOAST value "
                                      "without a before image (REPLICA IDENTITY FULL?)")
                image[col.name] = base[col.name]
            else:
                image[col.name] = self._cast(value, col.type_oid)
        return image

    def _images(self, msg: pgoutput.Message) -> Images:
        """What a change message says, rows cast."""
        if isinstance(msg, pgoutput.LogicalMessage):
            body = json.loads(msg.content, parse_float=Decimal)
            return Images("r", body["after"], None, body["table"],
                          str(body.get("snapshot") or "true"))
        if isinstance(msg, pgoutput.Truncate):
            return Images("t", None, None, self._relations.get(msg.relation_oids[0]).qualified)
        if isinstance(msg, pgoutput.Insert):
            return Images("c", self._image(msg.relation_oid, msg.new), None,
                          self._relations.get(msg.relation_oid).qualified)
        if isinstance(msg, pgoutput.Update):
            before = self._image(msg.relation_oid, msg.old if msg.old_kind == "O" else None)
            return Images("u", self._image(msg.relation_oid, msg.new, before), before,
                          self._relations.get(msg.relation_oid).qualified)
        assert isinstance(msg, pgoutput.Delete)
        rel = self._relations.get(msg.relation_oid)
        if msg.old_kind != "O":
            raise OutboxError(f"a delete of {rel.qualified} carries only its key: set "
                              f"ALTER TABLE {rel.qualified} REPLICA IDENTITY FULL")
        return Images("d", None, self._image(msg.relation_oid, msg.old), rel.qualified)

    def _publish(self, msg: pgoutput.Message, lsn: int, batch: Batch) -> None:
        tx = self._tx
        assert tx is not None
        self._ordinal += 1
        event_id = str(uuid.uuid5(EVENT_NAMESPACE,
                                  f"{self._origin}/{tx.final_lsn}/{self._ordinal}"))
        try:
            found = self._images(msg)
        except (OutboxError, pgoutput.PgoutputError, ValueError, KeyError, IndexError) as exc:
            self._set_aside(event_id, lsn, str(exc), batch)
            return
        if found.op == "u" and found.before == found.after:
            return  # a no-op update is not a change (nor is it in the trigger mode)
        schema, _, table = found.table.rpartition(".")
        change = Change(op=found.op, record=to_record(self.resource, found.after),
                        before=to_record(self.resource, found.before), locality=self.locality,
                        occurred_ms=int(tx.commit_time.timestamp() * 1000),
                        event_id=event_id, connector="logical", db=self._dbname,
                        schema=schema or None, table=table, tx_id=tx.xid, lsn=lsn,
                        snapshot=found.snapshot,
                        transaction=None if found.op == "r" else {
                            "id": str(tx.xid), "total_order": self._ordinal,
                            "data_collection_order": self._ordinal})
        event, violations = self.publisher.prepare(self.agency, self.resource, change)
        if event is None or violations:
            self._set_aside(event_id, lsn, "; ".join(str(v) for v in violations), batch)
            return
        batch.sent.append(event_id)
        self.publisher.send(self.resource, event,
                            lambda err, _msg, eid=event_id: batch.results.__setitem__(eid, err))

    def _set_aside(self, event_id: str, lsn: int, why: str, batch: Batch) -> None:
        log.warning("change at %s (event %s) refused: %s", pgoutput.lsn_text(lsn), event_id,
                    why)
        batch.refused += 1

    def _handle(self, payload: bytes, lsn: int, batch: Batch) -> None:
        msg = pgoutput.decode(payload)
        if isinstance(msg, pgoutput.Relation):
            self._relations.add(msg)
        elif isinstance(msg, pgoutput.Begin):
            self._tx, self._ordinal = msg, 0
        elif isinstance(msg, pgoutput.Commit):
            batch.commits.append((msg.end_lsn, len(batch.sent)))
            self._tx = None
        elif isinstance(msg, (pgoutput.Insert, pgoutput.Update, pgoutput.Delete,
                              pgoutput.Truncate)):
            self._publish(msg, lsn, batch)
        elif isinstance(msg, pgoutput.LogicalMessage):
            if msg.transactional and msg.prefix == self.prefix:
                self._publish(msg, lsn, batch)

    # -- batches
    def read_batch(self, idle: float | None = None) -> Batch:
        """Read whole transactions, publishing each change, until ``batch_size`` events or
        ``idle`` seconds without a message; then wait for the broker's answers. Confirms
        nothing (:meth:`confirm` does) unless a message forces the transactions read before
        it to be settled first (:meth:`Batch.exposed`)."""
        if self._cur is None:
            self._connect()
        batch = Batch()
        wait = self.poll_interval if idle is None else idle
        quiet_since = time.monotonic()
        while not self._stop.is_set():
            msg = self._cur.read_message()
            if msg is None:
                if self._tx is None and (len(batch.sent) >= self.batch_size
                                         or time.monotonic() - quiet_since > wait):
                    break
                select.select([self._cur], [], [], 0.1)
                continue
            quiet_since = time.monotonic()
            self._handle(msg.payload, msg.data_start, batch)
            if batch.exposed(msg.data_start, self.confirmed):
                self._wait_for_answers()
                if self.confirm(batch)[1] is not None:
                    break  # the broker failed: read nothing more, so nothing moves on
            if self._tx is None and len(batch.sent) >= self.batch_size:
                break
        self._wait_for_answers()
        return batch

    def _wait_for_answers(self) -> None:
        deadline = time.monotonic() + self.message_timeout_ms / 1000 + 5
        while self.publisher.flush(0.5) and time.monotonic() < deadline \
                and not self._stop.is_set():
            pass

    def confirm(self, batch: Batch) -> tuple[int, str | None]:
        """Advance the slot over the acknowledged whole transactions; (events, error)."""
        done, upto = batch.acknowledged()
        if upto > self.confirmed:
            self._cur.send_feedback(flush_lsn=upto, force=True)
            self.confirmed = upto
        if done == len(batch.sent):
            return done, None
        return done, str(batch.results.get(batch.sent[done])
                         or "no acknowledgement from the broker in time")

    def run_once(self) -> int:
        """Publish one batch and confirm it; returns how many events were published.

        Raises BrokerError (after confirming the acknowledged transactions) when the broker
        failed, DatabaseError when the agency database did; the session is ended then, so
        the next call starts from the confirmed position."""
        try:
            batch = self.read_batch()
            done, error = self.confirm(batch)
        except psycopg2.Error as exc:
            self.disconnect()
            raise DatabaseError(f"replication of slot {self.slot}: {exc}".strip()) from exc
        except BaseException:
            self.disconnect()
            raise
        self.published += done
        self.refused += batch.refused
        metrics.OUTBOX_PUBLISHED.labels(self.agency, self.resource.id).inc(done)
        metrics.OUTBOX_SET_ASIDE.labels(self.agency, self.resource.id).inc(batch.refused)
        if error:
            self.disconnect()
            raise BrokerError(f"{done} of {len(batch.sent)} acknowledged, the rest is sent "
                              f"again from the slot: {error}")
        return done

    def backlog(self) -> int:
        """Bytes of WAL the slot holds back (0 when it cannot be read)."""
        try:
            with self.db.use("cannot read the slot's lag") as conn, conn, conn.cursor() as cur:
                cur.execute(SLOT_LAG, (self.slot,))
                row = cur.fetchone()
        except DatabaseError:
            return 0
        return 0 if row is None or row[0] is None else int(row[0])

    def observe(self) -> None:
        metrics.OUTBOX_SLOT_LAG.labels(self.agency, self.resource.id).set(self.backlog())

    def status(self) -> str:
        return f"slot lag {self.backlog()} bytes"

    def close(self) -> None:
        self.disconnect()
        super().close()


# --- command line ---------------------------------------------------------------------------

def run(args: argparse.Namespace, parser: argparse.ArgumentParser,
        settings: Settings | None = None, registry: SchemaRegistry | None = None) -> int:
    """``govbus outbox --capture logical``: install, snapshot and relay as ``args`` say."""
    from govbus.producers.outbox import signal_stop

    def say(line: str) -> None:
        print(f"outbox {args.agency}.{args.resource} (logical): {line}", file=sys.stderr,
              flush=True)

    logging.basicConfig(level=logging.WARNING, format="outbox: %(message)s")
    stop = signal_stop()
    try:
        settings = settings or Settings.from_env()
        metrics.serve()
        catalogue = load_catalogue(settings.schemas_dir)
        if args.install:
            taken = install(args.dsn, args.table, args.agency, args.resource, catalogue,
                            slot=args.slot, snapshot_rows=not args.no_snapshot)
            say(f"installed on {args.table}" + (f", {taken} rows snapshotted" if taken else ""))
        if args.snapshot:
            taken = snapshot(args.dsn, args.table, args.agency, args.resource, catalogue)
            say(f"snapshot of {args.table}: {taken} rows")
        relay = LogicalRelay(args.dsn, settings, args.agency, args.resource, slot=args.slot,
                             catalogue=catalogue, batch_size=args.batch_size,
                             locality=args.locality,
                             message_timeout_ms=args.message_timeout_ms,
                             key_file=args.key_file, registry=registry)
        relay.publisher.registry.latest(relay.resource.id)  # fail fast: contract registered
        say(f"relaying slot {relay.slot} to {relay.resource.ingest_topic}, {relay.status()}")
        if args.once:
            while relay.run_once():
                pass
            say(f"published {relay.published}, refused {relay.refused}, {relay.status()}")
            relay.close()
        else:
            relay.run(stop, say)
            say(f"stopped: published {relay.published}, refused {relay.refused}")
    except (GovbusError, psycopg2.Error) as exc:
        say(f"error: {exc}".strip())
        return 1
    return 0

