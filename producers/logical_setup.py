"""Logical capture's setup in the agency's database: the publication, the slot, the replica
identity, snapshots written into the WAL, and the slot's lag.

What :func:`install` runs is what docs/capture.md gives the agency's DBA; the relay that
streams the slot is :mod:`govbus.producers.logical`.
"""

from __future__ import annotations

from typing import Any

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from govbus.core import db
from govbus.core.catalogue import Catalogue
from govbus.core.errors import DatabaseError
from govbus.producers.outbox import (
    SNAPSHOT_CHUNK,
    OutboxError,
    checked_table,
    in_chunks,
    provider_resource,
)


def slot_name(agency: str, resource: str) -> str:
    """The default slot (and publication) of an adapter: ``govbus_<agency>_<resource>``."""
    return f"govbus_{agency}_{resource}"[:63]


def snapshot_prefix(agency: str, resource: str) -> str:
    """The logical messages' prefix that marks a snapshot row of ``agency.resource``."""
    return f"govbus.snapshot:{agency}.{resource}"


def _replica_identity_full(cur: Any, qualified: str, target: sql.Composable) -> None:
    cur.execute("SELECT relreplident FROM pg_class WHERE oid = %s::regclass", (qualified,))
    if cur.fetchone()[0] == "f":
        return
    try:
        cur.execute("SAVEPOINT identity")
        cur.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(target))
    except psycopg2.errors.InsufficientPrivilege as exc:
        raise OutboxError(
            f"table {qualified} needs REPLICA IDENTITY FULL, so that its updates and deletes "
            f"carry their before image, and this role may not set it: ask its owner to run "
            f"ALTER TABLE {qualified} REPLICA IDENTITY FULL") from exc


def _publication(cur: Any, name: str, qualified: str, target: sql.Composable) -> None:
    cur.execute("SELECT count(*), count(*) FILTER (WHERE schemaname || '.' || tablename = %s) "
                "FROM pg_publication p LEFT JOIN pg_publication_tables t USING (pubname) "
                "WHERE p.pubname = %s", (qualified, name))
    exists, has_table = cur.fetchone()
    if not exists:
        cur.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}")
                    .format(sql.Identifier(name), target))
    elif not has_table:
        cur.execute(sql.SQL("ALTER PUBLICATION {} ADD TABLE {}")
                    .format(sql.Identifier(name), target))


def install(agency_dsn: str, table: str, agency: str, resource: str, catalogue: Catalogue,
            *, slot: str | None = None, snapshot_rows: bool = True) -> int:
    """Create (idempotently) the publication of ``table``, its replication slot, and set its
    ``REPLICA IDENTITY FULL``; a new slot is followed by a snapshot of the rows that exist.
    Returns how many rows were snapshotted. Refused, with what to change, when the server's
    ``wal_level`` is not ``logical`` or the role may not set the replica identity."""
    res = provider_resource(catalogue, agency, resource)
    name = slot or slot_name(agency, resource)
    try:
        with db.transaction(agency_dsn) as conn, conn.cursor() as cur:
            cur.execute("SHOW wal_level")
            level = cur.fetchone()[0]
            if level != "logical":
                raise OutboxError(f"the agency database has wal_level={level}: logical "
                                  "capture needs wal_level=logical (postgresql.conf, then a "
                                  "restart), or use --capture trigger")
            schema, rel = checked_table(cur, table, res)
            qualified, target = f"{schema}.{rel}", sql.Identifier(schema, rel)
            _replica_identity_full(cur, qualified, target)
            _publication(cur, name, qualified, target)
        conn = db.connect(agency_dsn, autocommit=True)  # a slot is made outside a transaction
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s",
                            (name,))
                created = cur.fetchone()[0] == 0
                if created:
                    cur.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')",
                                (name,))
        finally:
            conn.close()
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot install logical capture on {table}: {exc}".strip()) \
            from exc
    if created and snapshot_rows:
        return snapshot(agency_dsn, table, agency, resource, catalogue)
    return 0


def snapshot(agency_dsn: str, table: str, agency: str, resource: str, catalogue: Catalogue,
             chunk: int = SNAPSHOT_CHUNK) -> int:
    """Write the current state of every row of ``table`` into the WAL as transactional
    logical messages, op ``r`` once relayed, read as :func:`~govbus.producers.outbox.in_chunks`
    says; returns how many rows. Each snapshot is new events."""
    res = provider_resource(catalogue, agency, resource)
    # emitted in key order (a volatile target list is evaluated after the sort), so the row
    # marked 'last' is the snapshot's last message
    return in_chunks(agency_dsn, table, res,
                     "SELECT max(k)::text, count(m) FROM (SELECT k, pg_logical_emit_message("
                     "true, %(prefix)s, jsonb_build_object('table', %(name)s, 'after', image, "
                     "'snapshot', snapshot)::text) AS m FROM marked ORDER BY k) emitted",
                     {"prefix": snapshot_prefix(agency, resource)}, chunk)


SLOT_LAG = ("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) "
            "FROM pg_replication_slots WHERE slot_name = %s")


def slot_lag(agency_dsn: str, slot: str) -> int | None:
    """Bytes of WAL between the server's position and the slot's confirmed one (None: no
    such slot)."""
    with db.transaction(agency_dsn) as conn, conn.cursor() as cur:
        cur.execute(SLOT_LAG, (slot,))
        row = cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])
