"""The baselines a user could pick instead of govbus, on the same broker and topic data.

- **confluent-kafka**: :class:`bench.gate_bench.Passthrough`, a plain consume→produce loop
  (batches of :data:`bench.gate_bench.BATCH`, the hot path's, manual commit after flush), in
  a forked process of the bench.
- **faust**: a bare passthrough agent (``await topic.send`` per event): once with faust's
  default producer settings, once with the 20 ms producer linger every govbus stage uses (about
  twice as fast here, so the stricter baseline).
- **Quix Streams** and **Bytewax**: bare passthrough apps.

Each of the three runs in its own virtualenv under ``bench/.venvs/`` (created on first use
with ``pip install 'faust-streaming<0.16'`` / ``quixstreams`` / ``'bytewax[kafka]'``):
bench-only dependencies whose pins need not agree with the project's. (faust-streaming was a
project dependency until the reconciler left it.)

Each peer reads the first N records of the ``ingest.*`` topics from the beginning (its own
consumer group) and writes them to a scratch topic of its own; it runs as a subprocess
(``bench/baselines/*.py``) and prints its events/s as JSON. A peer that cannot be installed or
run here is reported as "not measured: <reason>", never with a number.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from govbus.core.config import Settings
from govbus.core.kafka import ensure_topics

from .gate_bench import BATCH, Passthrough, timed_loop
from .report import BenchError, Result, Say, isolated, median, rates

HERE = Path(__file__).resolve().parent
VENVS = HERE / ".venvs"
SCRIPTS = HERE / "baselines"


@dataclass(frozen=True)
class Peer:
    name: str          # what the report calls it
    script: str        # under bench/baselines/
    venv: str | None   # own virtualenv under bench/.venvs/, or None: the project's
    package: str       # what pip installs into that virtualenv
    module: str        # what must import there
    args: tuple[str, ...] = ()  # extra arguments to its script


FAUST = "faust-streaming>=0.15.3,<0.16"  # the version the bus ran its reconciler on

PEERS = (
    # "bare": faust's own producer settings (linger 0), as the issue and DESIGN.md measured it
    Peer("faust passthrough agent", "faust_passthrough.py", "faust", FAUST, "faust"),
    # and tuned with the producer linger every govbus stage uses: the stricter baseline
    Peer("faust+linger20 passthrough agent", "faust_passthrough.py", "faust", FAUST, "faust",
         ("--linger-ms", "20")),
    Peer("Quix Streams passthrough", "quix_passthrough.py", "quix", "quixstreams", "quixstreams"),
    Peer("Bytewax passthrough", "bytewax_passthrough.py", "bytewax", "bytewax[kafka]",
         "bytewax.connectors.kafka"),
)


@dataclass
class Measured:
    """A baseline's figure, or why there is none."""

    name: str
    result: Result | None
    reason: str = ""

    @property
    def rate(self) -> float | None:
        return self.result.rate if self.result else None


def python_for(peer: Peer, say: Say) -> str:
    """The interpreter to run ``peer`` with; creates its virtualenv on first use."""
    if peer.venv is None:
        return sys.executable
    venv = VENVS / peer.venv
    python = venv / "bin" / "python"
    if python.exists() and subprocess.run([str(python), "-c", f"import {peer.module}"],
                                          capture_output=True, timeout=60).returncode == 0:
        return str(python)
    say(f"  creating {venv.relative_to(HERE.parent)} (pip install {peer.package}) ...")
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True,
                       capture_output=True, timeout=120)
        subprocess.run([str(python), "-m", "pip", "install", "-q", peer.package], check=True,
                       capture_output=True, timeout=300)
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-1:]
        raise BenchError(f"pip install {peer.package} failed: {' '.join(tail)}") from exc
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"pip install {peer.package} took over {exc.timeout:.0f} s") from exc
    return str(python)


def run_script(peer: Peer, settings: Settings, topics: list[str], n: int, timeout: float,
               say: Say) -> Result:
    """Run one peer's script to completion; its JSON line becomes a Result."""
    python = python_for(peer, say)
    run_id = uuid.uuid4().hex[:8]
    out = f"bench.peer.{peer.script.split('_')[0]}.{run_id}"
    ensure_topics(settings, [out])
    argv = [python, str(SCRIPTS / peer.script), "--bootstrap", settings.bootstrap_servers,
            "--topics", ",".join(topics), "--out", out, "--n", str(n),
            "--group", f"bench-peer-{run_id}", *peer.args]
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, cwd=HERE.parent)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"did not pass {n} events within {timeout:.0f} s") from exc
    lines = [ln for ln in proc.stdout.decode(errors="replace").splitlines()
             if ln.startswith("{")]
    if not lines:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise BenchError(f"exit {proc.returncode}, no figure; {' '.join(err[-2:])[:300]}")
    figure = json.loads(lines[-1])
    if int(figure["events"]) < n or float(figure["seconds"]) <= 0:
        raise BenchError(f"passed {figure['events']} of {n} events")
    seconds, busy = float(figure["seconds"]), float(figure.get("busy") or 0.0)
    return Result(peer.name, int(figure["events"]), seconds,
                  busy_cores=busy / seconds if busy > 0 else None)


def confluent(settings: Settings, n: int) -> Result:
    """The plain confluent-kafka loop over the ingest topics, in a forked process."""
    run_id = uuid.uuid4().hex[:8]
    scratch = f"bench.peer.confluent.{run_id}"
    ensure_topics(settings, [scratch])
    return isolated(lambda: timed_loop("confluent-kafka consume→produce loop", lambda: (
        Passthrough(settings, f"bench-peer-confluent-{run_id}", scratch, BATCH)), n))


def measure(settings: Settings, topics: list[str], n: int, say: Say,
            timeout: float = 180.0, repeats: int = 1) -> list[Measured]:
    """Every baseline over the first ``n`` records of ``topics``, ``repeats`` times each (its
    figure: the median run); failures as reasons."""
    out: list[Measured] = []
    runs: list[tuple[str, Callable[[], Result]]] = [
        ("confluent-kafka consume→produce loop", lambda: confluent(settings, n))]
    runs += [(p.name, lambda p=p: run_script(p, settings, topics, n, timeout, say))  # type: ignore[misc]
             for p in PEERS]
    for name, run in runs:
        done: list[Result] = []
        try:
            for _ in range(repeats):
                done.append(run())
            out.append(Measured(name, median(done)))
        except BenchError as exc:  # one failed run: no figure, rather than a chosen one
            out.append(Measured(name, None, str(exc)))
        last = out[-1]
        runs_said = f" (median of {rates(done)})" if last.result and repeats > 1 else ""
        say(f"  {last.name:<38} " + (f"{last.result.rate:>10,.0f} events/s{runs_said}"
                                     if last.result else f"not measured: {last.reason}"))
    return out
