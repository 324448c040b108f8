"""Integration fixtures: a real Kafka-protocol broker and a real PostgreSQL, never mocks.

- ``broker``: a fresh Tansu broker per test (it starts in milliseconds and is memory-only, so
  tests can't see each other's topics). With ``KAFKA_BOOTSTRAP_SERVERS`` set, that broker is
  used instead (tests then rely on unique group ids).
- ``database_url``: a uniquely named database created for the session on the PostgreSQL of
  ``DATABASE_URL`` (else ``postgresql://postgres@127.0.0.1:5432/postgres``, else an embedded
  PostgreSQL started for the session), dropped at the end; migrations applied, the
  catalogue synced and the sample keys registered once.
- ``GOVBUS_STATE_DIR`` is a folder of the session's, holding an Ed25519 pair for each agency of
  the catalogue and for the bus (``keys/``, as ``govbus up`` makes them), so that publishers
  sign and the hot path and subscribers verify as they do in a deployment;
  :func:`register_sample_keys` registers them in a database a test migrated itself.
"""

from __future__ import annotations

import os
import signal
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest

from govbus import runtime
from govbus.core import db, keyring, registry
from govbus.core.catalogue import Catalogue, load_catalogue
from govbus.core.config import Settings
from govbus.core.errors import DatabaseError
from govbus.core.kafka import ensure_topics
from tests.integration.helpers import worker_port

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class TansuBroker:
    """A broker process the test owns: it can be stopped and started again on its port."""

    base: Path
    port: int
    pid: int = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        _, self.pid = runtime.start_broker(self.base, self.port)

    def stop(self) -> None:
        runtime.stop_pid(self.pid, signal.SIGKILL)


@pytest.fixture
def tansu(tmp_path: Path) -> Iterator[TansuBroker]:
    broker = TansuBroker(tmp_path, runtime.free_port(worker_port(29092)))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def bootstrap(request: pytest.FixtureRequest) -> str:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        return external
    return request.getfixturevalue("tansu").bootstrap


def _with_db(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0] if base.count("/") > 2 else base
    return f"{base}/{name}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def pg_admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``DATABASE_URL``; else the local server on 5432; else an embedded PostgreSQL."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    try:
        db.connect(DEFAULT_ADMIN_URL).close()
    except DatabaseError:
        base = tmp_path_factory.mktemp("pg")
        embedded, pid, _ = runtime.start_postgres(base)
        yield _with_db(embedded, "postgres")
        runtime.stop_pid(pid, signal.SIGINT, 30)
        return
    yield DEFAULT_ADMIN_URL


@contextmanager
def scratch_database(admin_dsn: str) -> Iterator[str]:
    """A new, empty database on the test server, dropped afterwards."""
    name = f"govbus_test_{uuid.uuid4().hex[:10]}"
    admin = db.connect(admin_dsn, autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_db(admin_dsn, name)
    finally:
        with admin.cursor() as cur:
            try:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except psycopg2.Error:
                pass
        admin.close()


#: tests that start the embedded runtime (its broker, metrics and Prometheus ports are the
#: runtime's own, found from fixed bases) or load every core: run one after another on one
#: pytest-xdist worker, never beside each other
SERIAL_MODULES = ("test_cli.py", "test_supervision.py", "test_faults.py", "test_prometheus.py",
                  "test_bench_pipeline.py")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """With pytest-xdist's ``--dist loadgroup``: a module's tests run on one worker, in their
    order (some build on the ones before: a module's database, a proposal approved above),
    and :data:`SERIAL_MODULES` all on one."""
    for item in items:
        group = "runtime" if item.path.name in SERIAL_MODULES else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))


#: the session's state folder, never the user's: a developer's own runtime is left alone
SESSION_STATE = Path(tempfile.mkdtemp(prefix="govbus-tests-"))
os.environ["GOVBUS_STATE_DIR"] = str(SESSION_STATE)


def register_sample_keys(dsn: str) -> list[str]:
    """Generate (once) and register in ``dsn`` the session's key of every agency of the
    shipped catalogue and of the bus; the holders."""
    holders = [*sorted(load_catalogue().agencies), keyring.BUS, keyring.CHECKPOINT_SIGNER]
    keyring.provision(dsn, SESSION_STATE / keyring.KEYS_DIR, holders, "tests")
    return holders


@pytest.fixture(scope="session")
def database_url(pg_admin: str) -> Iterator[str]:
    """The session database: migrated, shipped catalogue synced, sample keys registered.
    Don't change its registry."""
    with scratch_database(pg_admin) as url:
        db.migrate(url)
        registry.sync(url, load_catalogue())
        register_sample_keys(url)
        yield url


@pytest.fixture
def empty_database(pg_admin: str) -> Iterator[str]:
    """A database of this test's own, with nothing in it (not even migrations)."""
    with scratch_database(pg_admin) as url:
        yield url


@pytest.fixture(scope="session")
def catalogue() -> Catalogue:
    return load_catalogue()


@pytest.fixture
def settings(bootstrap: str, database_url: str, catalogue: Catalogue) -> Settings:
    """Broker and database ready: schema migrated, catalogue synced, topics created."""
    s = Settings(bootstrap, database_url, catalogue.root, session_timeout_ms=6000, partitions=3)
    ensure_topics(s, runtime.catalogue_topics(catalogue))
    return s
