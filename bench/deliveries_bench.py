"""What writing the hot path's deliveries costs, in-process, without a broker.

``python -m bench.deliveries_bench [--events 4000] [--passes 5]``: a scratch database with the
bench's grants and keys (:mod:`bench.env`, :func:`bench.pipeline.file_grants`), the bench
workload encoded and signed as ingest records; the hot path's decider
(:func:`bench.inprocess.decider`) judges and routes the first half once, and the deliveries it
made are written ``--passes`` times as the grants ask (framed Avro, :mod:`govbus.core.deliveries`)
and as JSON (orjson), for comparison; then the decider's CPU per event over the second half,
the least of three passes. Prints µs of this process's CPU. Run against another commit's tree
(``PYTHONPATH`` set to a worktree with this file copied in), it compares the decider.
"""

from __future__ import annotations

import argparse
import time

from govbus.core.keyring import BUS, private_file
from govbus.core.registry import SchemaRegistry
from govbus.core.serde import json_bytes
from govbus.core.signatures import DELIVERIES, Signer

from . import workload
from .env import environment
from .inprocess import Outbox, Record, decider
from .pipeline import file_grants


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.deliveries_bench",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=4000, help="events (4000), in halves")
    parser.add_argument("--passes", type=int, default=5, help="passes over the deliveries (5)")
    args = parser.parse_args(argv)
    with environment(need_broker=False, say=lambda *_: None) as env:
        file_grants(env)
        encoder = workload.Encoder(env.catalogue, SchemaRegistry(env.database_url))
        encoded = [encoder.encode(item) for item in workload.items(args.events, 0.02)]
        workload.sign(encoded, workload.Signers(env.keys))
        records = [Record(e.topic, e.key.encode(), e.payload, e.record_headers(), i)
                   for i, e in enumerate(encoded)]
        half = len(records) // 2
        bus = Signer.from_file(private_file(env.keys, BUS), DELIVERIES, "bench bus key")
        hot = decider(env.database_url, bus)
        made = hot.decide(records[:half], Outbox()).deliveries  # type: ignore[arg-type]
        started = time.process_time()
        for _ in range(args.passes):
            for d in made:  # (a tree without Avro deliveries writes them as JSON)
                getattr(d, "encode", json_bytes)(d.value)
        as_granted = (time.process_time() - started) / args.passes / len(made)
        started = time.process_time()
        for _ in range(args.passes):
            for d in made:
                json_bytes(d.value)
        as_json = (time.process_time() - started) / args.passes / len(made)
        spent = []
        for _ in range(3):
            started = time.process_time()
            hot.decide(records[half:], Outbox())  # type: ignore[arg-type]
            spent.append((time.process_time() - started) / (len(records) - half))
    print(f"{len(made)} deliveries of {half} events; µs of CPU per delivery written as the "
          f"grants ask {1e6 * as_granted:.1f}, as JSON {1e6 * as_json:.1f}; the decider "
          f"{1e6 * min(spent):.1f} µs per event (least of 3)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
