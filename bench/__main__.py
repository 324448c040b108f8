"""``python -m bench``: run the benchmarks, print each figure as a ratio to its baseline."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable

from govbus.core.errors import GovbusError

from . import (
    gate_bench,
    pipeline_bench,
    publish_bench,
    reconcile_bench,
    signatures_bench,
    verdict_bench,
)
from .env import environment
from .report import BenchError

BENCHES = ("gate", "verdict", "publish", "pipeline", "reconcile", "signatures")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="govbus benchmarks. Each figure is measured in this run next to a baseline "
                    "and printed as a ratio to it. Starts its own Tansu broker and a scratch "
                    "PostgreSQL database, and removes both at the end.")
    parser.add_argument("--events", type=int, default=20000, metavar="N",
                        help="events for the gate and publisher benchmarks (default 20000)")
    parser.add_argument("--verdict-events", type=int, default=50000, metavar="M",
                        help="in-memory events for the verdict benchmark (default 50000)")
    parser.add_argument("--pipeline-events", type=int, default=20000, metavar="P",
                        help="events per governed run and per baseline (default 20000)")
    parser.add_argument("--latency-rate", type=float, default=1000.0, metavar="R",
                        help="offered events/s of the latency phase (default 1000)")
    parser.add_argument("--latency-seconds", type=float, default=10.0, metavar="S",
                        help="length of the latency phase (default 10)")
    parser.add_argument("--repeats", type=int, default=3, metavar="K",
                        help="timed runs of each governed figure and each baseline; each "
                             "reports its median run (default 3)")
    parser.add_argument("--reconcile-entities", type=int, default=100000, metavar="E",
                        help="entities in the reconciler memory benchmark (default 100000)")
    parser.add_argument("--only", choices=BENCHES, help="run just this benchmark")
    args = parser.parse_args(argv)
    if min(args.events, args.verdict_events, args.pipeline_events) < 100:
        parser.error("--events, --verdict-events and --pipeline-events need at least 100")
    if args.latency_rate <= 0 or args.latency_seconds <= 0:
        parser.error("--latency-rate and --latency-seconds must be positive")
    if args.repeats < 1:
        parser.error("--repeats needs at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    chosen = [args.only] if args.only else list(BENCHES)
    started = time.monotonic()
    print(f"govbus bench: python {platform.python_version()}, {os.cpu_count()} CPU(s), "
          f"{platform.machine()}; running {', '.join(chosen)}", flush=True)
    say = lambda line: print(line, flush=True)  # noqa: E731
    try:
        if set(chosen) & {"gate", "verdict", "publish"}:
            run_basic(args, chosen, say)
        signing = None  # the per-record costs of signatures, for the pipeline's summary
        if "signatures" in chosen:  # in-process: no broker, no database
            signing = signatures_bench.run(say).summary()
        printed: list[str] = []  # the reconciler's lines, for the pipeline's summary

        def say_and_keep(line: str) -> None:
            printed.append(line)
            say(line)

        if "reconcile" in chosen:  # its state lives in PostgreSQL: a scratch database
            with environment(need_broker=False, say=say) as env:
                reconcile_bench.run(env.database_url, args.reconcile_entities, say_and_keep)
        if "pipeline" in chosen:  # its own broker and database: its topics hold only its data
            with environment(need_broker=True, say=say) as env:
                pipeline_bench.run(env, args.pipeline_events, say, args.latency_rate,
                                   args.latency_seconds, reconcile=printed,
                                   repeats=args.repeats, signing=signing)
    except (BenchError, GovbusError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    print(f"\ndone in {time.monotonic() - started:.1f} s; brokers and scratch databases removed")
    return 0


def run_basic(args: argparse.Namespace, chosen: list[str], say: Callable[[str], None]) -> None:
    """The per-component benchmarks, sharing one broker and database."""
    with environment(need_broker=bool({"gate", "publish"} & set(chosen)), say=say) as env:
        if "gate" in chosen:
            gate_bench.run(env, args.events, say)
        if "verdict" in chosen:
            verdict_bench.run(env, args.verdict_events, say)
        if "publish" in chosen:
            publish_bench.run(env, args.events, say)


if __name__ == "__main__":
    sys.exit(main())
