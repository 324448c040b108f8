"""The pipeline bench's summary: each figure with its ratio to every baseline of the run, and
the issue's targets, each marked met or missed by what was measured (never assumed), among
them what signing costs: 1 worker with signatures against 1 worker without them, measured
alternately in the same run."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .report import Result, Say, rates

if TYPE_CHECKING:
    from .peers import Measured

LATENCY_P99_MS = 250.0
SCALING = 1.6
FLOOR_VS_FAUST = 2.0
SIGNED_VS_UNSIGNED = 0.85  # signing and verifying may cost at most 15% of 1 worker's events/s


@dataclass
class Figures:
    n: int
    one: Result | None = None  # signed: every target but the signing one is read off it
    two: Result | None = None
    unsigned: Result | None = None  # 1 worker, no signature verified or made (bench only)
    signed_runs: list[Result] = field(default_factory=list)
    unsigned_runs: list[Result] = field(default_factory=list)
    latency: tuple[float, float, int, float] | None = None  # p50, p99, samples, rate
    deliveries_per_event: float = 0.0
    outbox: Result | None = None
    peers: list[Measured] = field(default_factory=list)
    reconcile: str | None = None  # set by the reconciler's benchmark when it ran
    signing: str | None = None  # per-record costs, set by bench.signatures_bench when it ran

    def peer(self, word: str) -> float | None:
        return next((p.rate for p in self.peers if word in p.name), None)


def reconciler_figure(lines: list[str]) -> str | None:
    """The reconciler state's row of ``bench.reconcile_bench`` (columns: bytes/entity,
    GiB per 1M, ratio to a plain dict of the raw values), as one summary cell."""
    row = next((line for line in lines if "reconciler state in" in line), None)
    if row is None:
        return None
    per_entity, gib, ratio = row.split()[-3:]
    return (f"{gib} GiB in PostgreSQL ({per_entity} B/entity on disk, {ratio}x a plain dict "
            "of the raw values in memory); the process holds one batch")


def reconciler_line(figures: Figures) -> str:
    if figures.reconcile:
        return figures.reconcile
    if importlib.util.find_spec("bench.reconcile_bench") is None:
        return "not measured: reconciler not present"
    return "not measured in this run (it runs without --only, or with --only reconcile)"


def scaling_bound(one: Result | None, two: Result | None, cores: int) -> str | None:
    """What the machine allowed a second worker: with one worker ``one.busy_cores`` of
    ``cores`` were busy (the whole machine: broker, PostgreSQL, reconciler and the bench's
    feeder run on it too), so twice that work needs twice those cores, and the most a second
    worker can add is ``cores / one.busy_cores`` (at most 2). None if not measured."""
    if one is None or two is None or not one.busy_cores or two.busy_cores is None:
        return None
    ceiling = min(2.0, cores / one.busy_cores)
    return (f"cores busy (whole machine): 1 worker {one.busy_cores:.2f}, 2 workers "
            f"{two.busy_cores:.2f} of {cores}; twice the work of 1 worker needs "
            f"{2 * one.busy_cores:.2f}: this machine's ceiling {ceiling:.2f}x")


def cpu_line(f: Figures) -> str | None:
    """The whole machine's busy CPU per event of each figure that measured it."""
    parts = [(label, r.cpu_us) for label, r in
             (("governed 1 worker", f.one), ("2 workers", f.two),
              *((p.name.split(" ")[0], p.result) for p in f.peers))
             if r is not None and r.cpu_us is not None]
    if not parts:
        return None
    return ("whole-machine CPU µs per event (broker, PostgreSQL and all): "
            + "; ".join(f"{label} {us:,.0f}" for label, us in parts))


def work_line(one: Result | None, peer: Result | None) -> str | None:
    """How much more CPU an event costs the governed path than the peer's passthrough: the
    throughput ratio a machine of these cores allows at best, all else equal."""
    if one is None or peer is None or one.cpu_us is None or not peer.cpu_us:
        return None
    return (f"CPU per event: governed {one.cpu_us:,.0f} µs, the peer {peer.cpu_us:,.0f} µs: "
            f"{one.cpu_us / peer.cpu_us:.1f}x the work per event")


def pair_ratios(signed: list[Result], unsigned: list[Result]) -> str:
    """Each signed run's events/s ÷ the unsigned run beside it: '0.84x / 0.79x / 0.88x'."""
    return " / ".join(f"{s.rate / u.rate:.2f}x" for s, u in zip(signed, unsigned, strict=False))


def signing_lines(f: Figures) -> list[str]:
    """The signing target: 1 worker with signatures ÷ without, then (indented by the caller)
    both events/s and their runs, the per-record costs, where the producer's cost is."""
    label = f"signing: 1 worker signed ≥ {SIGNED_VS_UNSIGNED:g}× unsigned"
    if f.one is None or f.unsigned is None:
        return [f"{label:<48} not measured"]
    ratio = f.one.rate / f.unsigned.rate
    runs = (f" (runs: {rates(f.signed_runs)}; unsigned {rates(f.unsigned_runs)}; run by run, "
            f"alternating: {pair_ratios(f.signed_runs, f.unsigned_runs)})"
            if f.signed_runs and f.unsigned_runs else "")
    return [f"{label:<48} {ratio:>6.2f}x  {_verdict(ratio >= SIGNED_VS_UNSIGNED)}",
            f"signed {f.one.rate:,.0f} events/s, unsigned {f.unsigned.rate:,.0f} events/s"
            + runs,
            *([f.signing] if f.signing else []),
            "the events were signed before the clock, as their publishers sign them: the "
            "publisher's signing cost is measured separately (benchmark 3)"]


def _verdict(ok: bool | None) -> str:
    return "met" if ok else ("MISSED" if ok is not None else "not measured")


def summarise(f: Figures, say: Say) -> None:
    names = [p.name.split(" ")[0] for p in f.peers]
    say("\n== summary: governed pipeline vs the baselines of this run (ratio = figure ÷ "
        "baseline events/s)")
    say("  baselines: " + "; ".join(
        f"{p.name} " + (f"{p.rate:,.0f}/s" if p.rate else f"not measured: {p.reason}")
        for p in f.peers))
    say(f"  {'':<44} {'value':>12}  " + " ".join(f"{n[:9]:>9}" for n in names))
    rows = [("end-to-end governed events/s, 1 worker", f.one),
            ("  1 worker without signatures (bench only)", f.unsigned),
            ("end-to-end governed events/s, 2 workers", f.two),
            ("outbox adapter events/s", f.outbox)]
    for label, r in rows:
        if r is None:
            say(f"  {label:<44} {'not measured':>12}")
            continue
        ratios = " ".join(f"{r.rate / p.rate:>8.2f}x" if p.rate else f"{'n/a':>9}"
                          for p in f.peers)
        say(f"  {label:<44} {r.rate:>12,.0f}  {ratios}")
    cpu = cpu_line(f)
    if cpu:
        say(f"  {cpu}")
    if f.latency:
        p50, p99, count, rate = f.latency
        say(f"  {'p50 / p99 publish→delivered at ' + format(rate, ',.0f') + '/s':<44} "
            f"{p50:>5.0f} / {p99:.0f} ms  ({count} deliveries)")
    say(f"  {'reconciler memory per million entities':<44} {reconciler_line(f)}")
    one = f.one.rate if f.one else None
    faust, quix, bytewax = f.peer("faust passthrough"), f.peer("Quix"), f.peer("Bytewax")
    tuned = f.peer("faust+linger")
    say("  targets:")
    checks = [
        (f"floor: 1 worker ≥ {FLOOR_VS_FAUST:g}× faust passthrough", one, faust,
         FLOOR_VS_FAUST),
        ("  the same against faust with linger 20 ms", one, tuned, FLOOR_VS_FAUST),
        ("goal: 1 worker ≥ Quix Streams passthrough", one, quix, 1.0),
        ("on the way: 1 worker vs Bytewax passthrough", one, bytewax, None),
        (f"2 workers ≥ {SCALING:g}× 1 worker", f.two.rate if f.two else None, one, SCALING),
    ]
    for label, value, base, want in checks:
        if value is None or base is None:
            say(f"    {label:<48} not measured")
            continue
        ratio = value / base
        say(f"    {label:<48} {ratio:>6.2f}x  "
            + (_verdict(ratio >= want) if want is not None else ""))
        if label.startswith("goal:"):
            work = work_line(f.one, next((p.result for p in f.peers if "Quix" in p.name), None))
            if work:
                say(f"      {work}")
    bound = scaling_bound(f.one, f.two, os.cpu_count() or 1)
    if bound:
        say(f"      {bound}")
    for i, line in enumerate(signing_lines(f)):
        say(("    " if i == 0 else "      ") + line)
    if f.latency:
        say(f"    {'p99 < 250 ms at 1,000 events/s offered':<48} {f.latency[1]:>6.0f}ms "
            f"{_verdict(f.latency[1] < LATENCY_P99_MS)}")
