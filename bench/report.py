"""Measurements and their printing: events/s and peak RSS, each as a ratio to a baseline."""

from __future__ import annotations

import gc
import multiprocessing
import os
import resource
from collections.abc import Callable
from dataclasses import dataclass

Say = Callable[[str], None]


class BenchError(Exception):
    """A benchmark could not measure what it claims (lost events, a timeout, a crash)."""


def _current_rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


class Memory:
    """Peak RSS of this process over one phase.

    ``getrusage`` reports the peak since the process started; on Linux writing ``5`` to
    ``/proc/self/clear_refs`` resets that peak to the current RSS, so each phase gets its own.
    Where that is not allowed, the figure is the process peak so far (``per_phase`` False).
    """

    def __init__(self) -> None:
        self.per_phase = False
        self.start_kib = 0

    def start(self) -> None:
        gc.collect()  # start from a settled heap
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.per_phase = True
        except OSError:
            self.per_phase = False
        try:
            self.start_kib = _current_rss_kib()
        except OSError:
            self.start_kib = 0

    def peak(self) -> tuple[int, int]:
        """(peak RSS KiB, peak minus the RSS at :meth:`start`)."""
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        return peak, max(0, peak - self.start_kib)


@dataclass
class Result:
    name: str
    events: int
    seconds: float
    peak_kib: int = 0
    growth_kib: int = 0
    busy_cores: float | None = None  # the whole machine's, on average over the run
    child_peak_kib: int = 0  # peak RSS of a helper process the measured code started, if any

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")

    @property
    def cpu_us(self) -> float | None:
        """The whole machine's busy CPU per event over the run, in µs (None: not measured)."""
        if self.busy_cores is None or not self.events:
            return None
        return self.busy_cores * self.seconds / self.events * 1e6


def machine_seconds() -> float | None:
    """Busy CPU of the whole machine so far, all cores (``/proc/stat``: all but idle and
    iowait), in seconds: what every process (the bench's own feeder included) and the kernel
    spent together. None where there is no ``/proc/stat`` (not Linux)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(t) for t in f.readline().split()[1:]]
    except OSError:
        return None
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def cores_busy(before: float | None, after: float | None, seconds: float) -> float | None:
    """Cores busy on average between two :func:`machine_seconds` readings ``seconds`` apart
    (None when either is missing)."""
    if before is None or after is None or seconds <= 0:
        return None
    return (after - before) / seconds


def median(results: list[Result]) -> Result:
    """The run with the median time (of an even number, the slower of the middle two): what a
    figure of several runs reports, so that one lucky or unlucky run decides nothing."""
    if not results:
        raise ValueError("no runs")
    ordered = sorted(results, key=lambda r: r.seconds)
    return ordered[len(ordered) // 2]


def rates(results: list[Result]) -> str:
    """The runs' events/s in the order they ran, for the report: '4,040 / 3,582 / 4,211'."""
    return " / ".join(f"{r.rate:,.0f}" for r in results)


def isolated(fn: Callable[[], Result], timeout: float = 300.0) -> Result:
    """Run one measured phase in a forked child and return its result.

    Every phase then starts from the same memory state (the parent's at the fork), so memory
    one phase freed cannot flatter the growth of the next. Call it with no Kafka client or
    database connection in use: the child gets a copy of the parent, not its threads.
    """
    gc.collect()  # no half-dead client left for the child to finalise
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)

    def child() -> None:
        try:
            send.send(("ok", fn()))
        except BaseException as exc:  # noqa: BLE001 - handed to the parent as text
            send.send(("error", f"{type(exc).__name__}: {exc}"))

    proc = ctx.Process(target=child, name="bench-phase")
    proc.start()
    send.close()
    try:
        if not recv.poll(timeout):
            raise BenchError(f"a measurement did not finish in {timeout:.0f} s")
        kind, value = recv.recv()
    except EOFError as exc:
        raise BenchError(f"the measurement process died (exit {proc.exitcode})") from exc
    finally:
        recv.close()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    if kind != "ok":
        raise BenchError(value)
    return value  # type: ignore[no-any-return]


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base > 0 else "n/a"


def table(say: Say, baseline: Result, others: list[Result], memory: bool = True) -> None:
    """One row per result, ratios against ``baseline``: events/s, and with ``memory`` the
    growth of peak RSS over the phase (the process's absolute peak is shown, not compared:
    it carries whatever earlier phases left behind)."""
    head = f"  {'':<36} {'events':>7} {'seconds':>8} {'events/s':>10} {'ratio':>6}"
    if memory:
        head += f" {'peak RSS':>9} {'growth':>8} {'ratio':>6}"
    say(head)
    for r in [baseline, *others]:
        line = (f"  {r.name:<36} {r.events:>7} {r.seconds:>8.3f} {r.rate:>10,.0f} "
                f"{_ratio(r.rate, baseline.rate):>6}")
        if memory:
            line += (f" {r.peak_kib / 1024:>6.1f}MiB {r.growth_kib / 1024:>5.1f}MiB"
                     f" {_ratio(r.growth_kib, baseline.growth_kib):>6}")
        say(line)
