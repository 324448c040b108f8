"""``python -m tests.faults --seed N [--kills 20] [--pg-restarts 2]``: one
seeded run of the fault suite; prints the figures, exit status 1 when anything was lost,
duplicated or misdelivered."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tests.faults.suite import Plan, run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__)
    p.add_argument("--seed", type=int, default=2026, help="replays a run exactly (faults, "
                   "timings, records)")
    p.add_argument("--kills", type=int, default=20, help="kill -9 faults (20)")
    p.add_argument("--pg-restarts", type=int, default=2, help="PostgreSQL stop/starts (2)")
    p.add_argument("--dir", type=Path, help="where logs and data go (a temporary folder)")
    args = p.parse_args(argv)
    base = args.dir or Path(tempfile.mkdtemp(prefix="govbus-faults-"))
    started = time.monotonic()
    figures = run(Plan(seed=args.seed, kills=args.kills, pg_restarts=args.pg_restarts), base)
    print(f"seed {args.seed}: {figures.line()} ({time.monotonic() - started:.0f} s)")
    for line in figures.examples:
        print(f"  {line}")
    return 0 if figures.ok else 1


if __name__ == "__main__":
    sys.exit(main())
