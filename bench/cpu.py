"""Where the CPU of one governed run goes: µs of CPU per event, per process.

``python -m bench.cpu [--events 20000] [--runs 4] [--workers 1] [--py-spy FILE] [--unsigned]``:
a fresh broker and scratch database (:mod:`bench.env`), one worker (or ``--workers``, in one
group) as the pipeline benchmark runs it (with the reconciler beside it), warmed up; then ``--runs``
timed runs of ``--events`` events each, and for each the events/s and the CPU (user +
system, from ``/proc/<pid>/stat``) that the workers, their settling processes, the
reconciler, the broker, every PostgreSQL process and this process (the feeder) spent, divided
by the events; then the whole machine's busy CPU per event (``/proc/stat``: the bench's own
feeder and the kernel included) and how many cores were busy on average. The events are
signed before each run (as in the pipeline benchmark); with ``--unsigned`` they are not, and
the workers neither verify nor sign (``bench.worker --unsigned``).
With ``--py-spy FILE`` (py-spy installed and allowed to attach), a worker is sampled during
the last run, per thread, into FILE (py-spy's raw format); with ``--gil`` as well, only the
thread holding the interpreter lock is sampled, and the worker is not paused to take a
sample. Linux only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path

from . import workload
from .env import environment
from .pipeline import Feeder, file_grants, timed_feed, workers
from .report import machine_seconds

PROCESSES = ("worker", "settler", "reconciler", "tansu", "postgres", "feeder")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parent(pid: str) -> str:
    """The parent's pid ("0" once the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[1]
    except OSError:
        return "0"


def kind(pid: str) -> str | None:
    """Which of :data:`PROCESSES` a process is, if any."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().strip()
        with open(f"/proc/{pid}/cmdline") as f:
            cmd = f.read().replace("\0", " ")
    except OSError:
        return None
    if comm.startswith("postgres"):
        return "postgres"
    if "tansu" in cmd and " broker" in cmd:
        return "tansu"
    if "bench.worker" in cmd:
        return "worker"
    if "spawn_main" in cmd and kind(parent(pid)) == "worker":
        return "settler"  # the hot path's settling process: a multiprocessing spawn child
    if int(pid) == os.getpid():
        return "feeder"  # this process: it encodes and feeds the events
    if "govbus.stream_apps.reconciler" in cmd:
        return "reconciler"
    return None


def snapshot() -> dict[str, float]:
    out: dict[str, float] = dict.fromkeys(PROCESSES, 0.0)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        name = kind(pid)
        if name:
            out[name] += cpu_seconds(int(pid))
    out["machine"] = machine_seconds() or 0.0
    return out


def worker_pid() -> int:
    return next(int(p) for p in filter(str.isdigit, os.listdir("/proc"))
                if kind(p) == "worker")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--events", type=int, default=20000, help="events per run (20000)")
    parser.add_argument("--runs", type=int, default=4, help="timed runs (4)")
    parser.add_argument("--workers", type=int, default=1, choices=(1, 2, 3, 4),
                        help="worker processes in the group (1); CPU is summed over them")
    parser.add_argument("--py-spy", metavar="FILE", help="sample the worker in the last run")
    parser.add_argument("--gil", action="store_true", help="with --py-spy: sample only the "
                        "thread holding the interpreter lock, without pausing the worker")
    parser.add_argument("--unsigned", action="store_true", help="unsigned events, workers "
                        "that neither verify nor sign (what signatures cost, by the difference)")
    args = parser.parse_args(argv)
    if args.events < 100 or args.runs < 1:
        parser.error("--events needs at least 100 and --runs at least 1")
    spy = shutil.which("py-spy") if args.py_spy else None
    if args.py_spy and not spy:
        parser.error("--py-spy: no py-spy on PATH (pip install py-spy)")
    say = print
    with environment(need_broker=True, say=say) as env:
        feeder = Feeder(env, file_grants(env))
        try:
            with tempfile.TemporaryDirectory() as tmp, workers(
                    env, args.workers, f"cpu-{uuid.uuid4().hex[:6]}", Path(tmp), say,
                    unsigned=args.unsigned) as procs:
                feeder.warm_up(procs, signed=not args.unsigned)
                for run in range(args.runs):
                    batch = feeder.encode(workload.items(args.events, 0.02, seed=3000 + run),
                                          signed=not args.unsigned)
                    sampler = None
                    if spy and run == args.runs - 1:
                        sampler = subprocess.Popen(
                            [spy, "record", "-p", str(worker_pid()), "-f", "raw", "--threads",
                             "-r", "200", *(["--gil", "--nonblocking"] if args.gil else []),
                             "-o", args.py_spy], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
                    before = snapshot()
                    seconds, _ = timed_feed(feeder, batch, env.database_url, 300)
                    after = snapshot()
                    if sampler:
                        sampler.send_signal(signal.SIGINT)  # py-spy writes its file on ^C
                        sampler.wait(30)
                    per_event = {p: (after[p] - before[p]) / args.events * 1e6
                                 for p in PROCESSES}
                    busy = after["machine"] - before["machine"]
                    say(f"run {run + 1}: {args.events / seconds:,.0f} events/s; CPU µs per "
                        "event: " + ", ".join(f"{p} {v:.0f}" for p, v in per_event.items())
                        + f"; total {sum(per_event.values()):.0f}; whole machine "
                        f"{busy / args.events * 1e6:.0f} ({busy / seconds:.2f} of "
                        f"{os.cpu_count()} cores busy)")
        finally:
            feeder.close()
    if spy:
        say(f"py-spy samples of the worker's last run: {args.py_spy}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
