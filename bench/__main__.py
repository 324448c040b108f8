"""``python -m bench``: run the benchmarks, print each figure as a ratio to its baseline."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

from govbus_core.errors import GovbusError

from . import gate_bench, publish_bench, verdict_bench
from .env import environment
from .report import BenchError

BENCHES = ("gate", "verdict", "publish")


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
    parser.add_argument("--only", choices=BENCHES, help="run just this benchmark")
    args = parser.parse_args(argv)
    if args.events < 100 or args.verdict_events < 100:
        parser.error("--events and --verdict-events need at least 100")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    chosen = [args.only] if args.only else list(BENCHES)
    started = time.monotonic()
    print(f"govbus bench: python {platform.python_version()}, {os.cpu_count()} CPU(s), "
          f"{platform.machine()}; running {', '.join(chosen)}", flush=True)
    say = lambda line: print(line, flush=True)  # noqa: E731
    try:
        with environment(need_broker=chosen != ["verdict"], say=say) as env:
            if "gate" in chosen:
                gate_bench.run(env, args.events, say)
            if "verdict" in chosen:
                verdict_bench.run(env, args.verdict_events, say)
            if "publish" in chosen:
                publish_bench.run(env, args.events, say)
    except (BenchError, GovbusError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    print(f"\ndone in {time.monotonic() - started:.1f} s; broker and scratch database removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
