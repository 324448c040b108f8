"""A real ``govbus serve`` for the service's tests: the process an agency calls over HTTP,
on a free port, over the session database and a broker of the test's own.

``service`` is its base URL; :func:`as_agency` gives an ``httpx.Client`` holding an agency's
token, issued once per database and agency."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from govbus import runtime
from tests.integration.helpers import token, wait_until, worker_port

ROOT = Path(__file__).resolve().parents[3]
@dataclass
class Service:
    url: str
    database_url: str
    bootstrap: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self, agency: str | None = None, token_: str | None = None) -> httpx.Client:
        """A client holding ``agency``'s token (or ``token_``; neither: no token)."""
        if agency:
            token_ = token(self.database_url, agency)
        headers = {"Authorization": f"Bearer {token_}"} if token_ else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def start_service(database_url: str, bootstrap: str, log: Path,
                  extra: dict[str, str] | None = None, verify: Any = None) -> Service:
    """``python -m govbus.api`` with ``extra`` settings; over HTTPS when ``verify`` (an
    ``ssl.SSLContext`` holding what the health check presents) is given."""
    # a random start: test runs side by side must not race for the same first free port
    port = runtime.free_port(worker_port(31000) + random.randrange(0, 700, 7))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOVBUS_API", "GOVBUS_QUERY"))}
    env |= {"DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "GOVBUS_API_PORT": str(port), "PYTHONPATH": str(ROOT)} | (extra or {})
    out = log.open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "govbus.api"], env=env, cwd=ROOT,
                            stdout=out, stderr=subprocess.STDOUT)
    url = f"{'https' if verify else 'http'}://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"govbus serve exited: {log.read_text()[-2000:]}")
        try:
            return httpx.get(f"{url}/healthz", timeout=1,
                             verify=verify or True).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, 30, "govbus serve to answer /healthz")
    return Service(url, database_url, bootstrap, proc, log)


def stop_service(service: Service) -> None:
    service.process.terminate()
    try:
        service.process.wait(10)
    except subprocess.TimeoutExpired:
        service.process.kill()
        service.process.wait(5)


@contextmanager
def own_service(pg_admin: str, base: Path, port: int) -> Iterator[Service]:
    """The service over a database and a broker of its own (migrated, the shipped catalogue
    registered), for tests that change the registry or the credentials."""
    from govbus.core import db, registry
    from govbus.core.catalogue import load_catalogue
    from tests.integration.conftest import TansuBroker, scratch_database

    broker = TansuBroker(base, runtime.free_port(worker_port(port)))
    broker.start()
    try:
        with scratch_database(pg_admin) as url:
            db.migrate(url)
            registry.sync(url, load_catalogue())
            svc = start_service(url, broker.bootstrap, base / "serve.log")
            try:
                yield svc
            finally:
                stop_service(svc)
    finally:
        broker.stop()


@pytest.fixture
def service(settings, tmp_path: Path) -> Iterator[Service]:  # type: ignore[no-untyped-def]
    """The service over the session database and this test's broker (topics created)."""
    svc = start_service(settings.database_url, settings.bootstrap_servers,
                        tmp_path / "serve.log")
    yield svc
    stop_service(svc)
