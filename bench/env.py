"""What the benchmarks run against: a fresh Tansu broker and a scratch PostgreSQL database.

The broker is always our own (memory-only, so the topics hold exactly what the benchmark put
there). The database is a scratch ``govbus_bench_<random>`` on the server of ``DATABASE_URL``
(used as it is when we may not create databases there), else on the local server at
127.0.0.1:5432, else on an embedded PostgreSQL started for the run. Every agency of the
catalogue and the bus get an Ed25519 key pair in ``<tmp>/keys`` (the run's state folder,
``state_dir`` of its settings), registered in that database, as ``govbus up`` provisions them:
the events fed are signed and the hot path verifies them and signs its deliveries. Everything
started or created is stopped or dropped on the way out, failure or not.
"""

from __future__ import annotations

import os
import signal
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from govbus import runtime
from govbus.core import db, keyring, registry
from govbus.core.catalogue import Catalogue, load_catalogue
from govbus.core.config import Settings
from govbus.core.errors import DatabaseError
from govbus.core.kafka import ensure_topics

from .report import Say

LOCAL_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PARTITIONS = 3


@dataclass
class Env:
    database_url: str
    catalogue: Catalogue
    settings: Settings | None  # None when no broker was asked for
    state_dir: Path | None = None  # the run's state folder; None: the settings' own

    @property
    def broker(self) -> Settings:
        if self.settings is None:
            raise RuntimeError("this benchmark needs the broker; it was not started")
        return self.settings

    @property
    def state(self) -> Path:
        """The run's state folder (``GOVBUS_STATE_DIR`` of the processes it starts)."""
        return Path(self.state_dir or self.broker.state_dir)

    @property
    def keys(self) -> Path:
        """The folder of the agencies' and the bus's key pairs (``<holder>.key``/``.pub``)."""
        return self.state / keyring.KEYS_DIR


def provision_keys(database_url: str, catalogue: Catalogue, state_dir: Path) -> list[str]:
    """A key pair for every agency of ``catalogue`` and for the bus in ``state_dir``/keys,
    each registered in ``database_url``; the holders."""
    holders = [*sorted(catalogue.agencies), keyring.BUS]
    keyring.provision(database_url, state_dir / keyring.KEYS_DIR, holders, "bench")
    return holders


def with_db(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` on the same server."""
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0] if base.count("/") > 2 else base
    return f"{base}/{name}" + (f"?{query}" if query else "")


def _admin_url(stack: ExitStack, tmp: Path, say: Say) -> tuple[str, bool]:
    """The server to make the scratch database on; True when it is ``DATABASE_URL``."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url, True
    try:
        db.connect(LOCAL_ADMIN_URL).close()
        return LOCAL_ADMIN_URL, False
    except DatabaseError:
        pass
    say("  no PostgreSQL at 127.0.0.1:5432: starting an embedded one")
    embedded, pid, _ = runtime.start_postgres(tmp / "pg")
    stack.callback(runtime.stop_pid, pid, signal.SIGINT, 30)  # SIGINT: fast shutdown
    return with_db(embedded, "postgres"), False


def _scratch_database(stack: ExitStack, admin_url: str, given: bool, say: Say) -> str:
    name = f"govbus_bench_{uuid.uuid4().hex[:10]}"
    admin = db.connect(admin_url, autocommit=True)
    stack.callback(admin.close)
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    except psycopg2.Error as exc:
        if not given:
            raise DatabaseError(f"cannot create database {name}: {exc}") from exc
        say(f"  cannot create a scratch database there ({str(exc).strip()}); "
            "using DATABASE_URL as it is")
        return admin_url

    def drop() -> None:
        try:
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg2.Error as exc:
            say(f"  could not drop scratch database {name}: {str(exc).strip()}")

    stack.callback(drop)
    say(f"  database: scratch {name} on {db.redact(admin_url)} (dropped at the end)")
    return with_db(admin_url, name)


@contextmanager
def environment(need_broker: bool, say: Say) -> Iterator[Env]:
    """Database migrated, catalogue synced, keys provisioned (:func:`provision_keys`); with
    ``need_broker`` also a broker with the catalogue's topics. Stops and drops all of it
    afterwards."""
    with tempfile.TemporaryDirectory(prefix="govbus-bench-") as tmp, ExitStack() as stack:
        admin_url, given = _admin_url(stack, Path(tmp), say)
        database_url = _scratch_database(stack, admin_url, given, say)
        db.migrate(database_url)
        catalogue = load_catalogue()
        registry.sync(database_url, catalogue)
        state = Path(tmp)
        holders = provision_keys(database_url, catalogue, state)
        say(f"  keys: {len(holders)} Ed25519 pairs in {state / keyring.KEYS_DIR} (each "
            "agency's and the bus's), registered")
        settings = None
        if need_broker:
            bootstrap, pid = runtime.start_broker(Path(tmp), runtime.free_port(39092))
            stack.callback(runtime.stop_pid, pid)
            say(f"  broker: Tansu (memory-only) on {bootstrap}, pid {pid} (stopped at the end)")
            settings = Settings(bootstrap, database_url, catalogue.root,
                                session_timeout_ms=6000, partitions=PARTITIONS, state_dir=state)
            ensure_topics(settings, runtime.catalogue_topics(catalogue))
        yield Env(database_url, catalogue, settings, state)
