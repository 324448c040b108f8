"""PostgreSQL access and versioned migrations.

Migrations are ``migrations/NNNN_name.sql``, applied in order, each in its own transaction,
recorded in ``govbus_schema_migrations``, under an advisory lock so concurrent starters
don't race.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psycopg2
import psycopg2.extensions

from govbus.core.errors import DatabaseError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_LOCK_KEY = 0x60B05  # advisory lock id for migrations


def connect(dsn: str, *, autocommit: bool = False) -> psycopg2.extensions.connection:
    """Open a connection, with an error that says where it tried."""
    try:
        conn = psycopg2.connect(dsn, connect_timeout=10, application_name="govbus")
    except psycopg2.OperationalError as exc:
        raise DatabaseError(f"cannot connect to PostgreSQL at {redact(dsn)}: "
                            f"{str(exc).strip()}") from exc
    conn.autocommit = autocommit
    return conn


@contextmanager
def transaction(dsn: str) -> Iterator[psycopg2.extensions.connection]:
    """A connection whose work is committed on success and rolled back on error."""
    conn = connect(dsn)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


class Reused:
    """One connection kept across calls by a long-running writer: opened when first needed, and
    dropped after any PostgreSQL error, so that the next call starts on a fresh one (the
    writer's batch is rewound and retried meanwhile).

    ``with reused.use("cannot update entity_state") as conn:`` gives the connection and turns
    a ``psycopg2.Error`` in the block into a :class:`DatabaseError` with that prefix (a
    ``DatabaseError`` raised in the block drops the connection too). ``on_connect`` prepares
    each new connection (type casters, say)."""

    def __init__(self, dsn: str, on_connect: Callable[[psycopg2.extensions.connection], None]
                 | None = None) -> None:
        self.dsn, self.on_connect = dsn, on_connect
        self._conn: psycopg2.extensions.connection | None = None

    def connection(self) -> psycopg2.extensions.connection:
        """The connection, opened now if there is none (DatabaseError if it cannot be)."""
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.dsn)
            if self.on_connect is not None:
                self.on_connect(self._conn)
        return self._conn

    @contextmanager
    def use(self, failing: str) -> Iterator[psycopg2.extensions.connection]:
        try:
            yield self.connection()
        except psycopg2.Error as exc:
            self.close()
            raise DatabaseError(f"{failing}: {exc}") from exc
        except DatabaseError:
            self.close()
            raise

    def close(self) -> None:
        """Drop the connection; a failure to close it is of no interest."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(psycopg2.Error):
                conn.close()


def redact(dsn: str) -> str:
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", dsn)


def migration_files() -> list[tuple[int, str, Path]]:
    found = []
    for path in sorted(MIGRATIONS.glob("*.sql")):
        m = re.match(r"^(\d{4})_(\w+)\.sql$", path.name)
        if m:
            found.append((int(m.group(1)), m.group(2), path))
    return found


def migrate(dsn: str) -> list[str]:
    """Apply the migrations not applied yet; return their names."""
    applied: list[str] = []
    conn = connect(dsn, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
            cur.execute("""CREATE TABLE IF NOT EXISTS govbus_schema_migrations (
                             version int PRIMARY KEY, name text NOT NULL,
                             applied_at timestamptz NOT NULL DEFAULT now())""")
            cur.execute("SELECT version FROM govbus_schema_migrations")
            done = {row[0] for row in cur.fetchall()}
        for version, name, path in migration_files():
            if version in done:
                continue
            conn.autocommit = False
            with conn, conn.cursor() as cur:
                cur.execute(path.read_text())
                cur.execute("INSERT INTO govbus_schema_migrations (version, name) "
                            "VALUES (%s, %s)", (version, name))
            conn.autocommit = True
            applied.append(f"{version:04d}_{name}")
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    except psycopg2.Error as exc:
        raise DatabaseError(f"migration failed: {exc}") from exc
    finally:
        conn.close()
    return applied
