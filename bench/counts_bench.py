"""What the gate's durable counts (migration 0005) cost per batch.

``python -m bench.counts_bench [--batches 200] [--batch-size 1000]``: writes batches of
verdicts (5 agencies, 3 partitions, 10 % rejected) with ``CountWriter.write`` into a scratch
database on the same PostgreSQL as the other benchmarks, and prints the median and p95 time
per batch and the verdicts/s that ceiling allows. The hot path's settling process does this
once per batch, after the batch's outputs are acknowledged; compare with the hot path's own
batch time in ``python -m bench --only gate``. Standalone (not in ``python -m bench``).
"""

from __future__ import annotations

import argparse
import statistics
import time

from govbus.core.event_counts import CountWriter, Judged

from .env import environment


def batch(number: int, size: int) -> list[Judged]:
    return [Judged(f"ingest.a{i % 5}.r", i % 3, number * size + i, f"a{i % 5}", f"a{i % 5}.r",
                   "accepted" if i % 10 else "rejected", "" if i % 10 else "identifier.uscc")
            for i in range(size)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.counts_bench")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args(argv)
    with environment(False, print) as env:
        writer = CountWriter(env.database_url)
        times = []
        for n in range(args.batches):
            verdicts = batch(n, args.batch_size)
            started = time.perf_counter()
            writer.write(verdicts)
            times.append(time.perf_counter() - started)
        writer.close()
    times.sort()
    median, p95 = statistics.median(times), times[int(len(times) * 0.95) - 1]
    print(f"CountWriter.write, {args.batches} batches of {args.batch_size}: median "
          f"{median * 1000:.2f} ms, p95 {p95 * 1000:.2f} ms per batch -> ceiling "
          f"{args.batch_size / median:,.0f} verdicts/s")


if __name__ == "__main__":
    main()
