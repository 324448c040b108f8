"""``db.Reused``, the connection every long-running writer keeps (entity_state, counts, the
log, the cases sink, the reconciler, the outbox relay), on a real PostgreSQL: one connection
across calls, and a fresh one after any failure, also after the server dropped it."""

from __future__ import annotations

import psycopg2
import pytest

from govbus.core import db
from govbus.core.errors import DatabaseError


def backend(conn: psycopg2.extensions.connection) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return int(cur.fetchone()[0])  # type: ignore[index]


def test_one_connection_across_calls_and_a_fresh_one_after_a_failure(database_url: str
                                                                      ) -> None:
    prepared: list[int] = []
    reused = db.Reused(database_url, on_connect=lambda c: prepared.append(backend(c)))
    try:
        with reused.use("first") as conn:
            first = backend(conn)
        with reused.use("second") as conn:
            assert backend(conn) == first  # kept
        with pytest.raises(DatabaseError, match=r"^cannot divide: .*division by zero"), \
                reused.use("cannot divide") as conn, conn.cursor() as cur:
            cur.execute("SELECT 1 / 0")
        with reused.use("after an error") as conn:
            second = backend(conn)
        assert second != first  # dropped and opened again
        with pytest.raises(DatabaseError, match="refused"), reused.use("x"):
            raise DatabaseError("refused by a check of the caller")
        with reused.use("after the caller's error") as conn:
            third = backend(conn)
        assert third != second
        with db.transaction(database_url) as admin, admin.cursor() as cur:  # the server drops it
            cur.execute("SELECT pg_terminate_backend(%s)", (third,))
        with pytest.raises(DatabaseError, match="^after a kill: "), \
                reused.use("after a kill") as conn:
            backend(conn)
        with reused.use("then") as conn:
            fourth = backend(conn)
        assert prepared == [first, second, third, fourth]  # on_connect once per connection
    finally:
        reused.close()
    reused.close()  # twice is harmless
