"""Baseline: a bare faust passthrough agent, ``await topic.send`` per event.

Run by ``bench.peers`` in the project's virtualenv (faust-streaming is a project dependency):
``python faust_passthrough.py --bootstrap H:P --topics a,b --out T --n N --group G``. Prints
one JSON line ``{"events": N, "seconds": S}``: from the first event the agent receives to the
N-th sent and the producer flushed. DESIGN.md's Tansu settings: ``kafka://`` (aiokafka)
transport, short session timeouts, no web server (several workers may share the machine);
faust's own producer settings unless ``--linger-ms`` is given.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import faust

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout
from bench.report import machine_seconds  # noqa: E402 - stdlib only: any venv imports it

args = argparse.ArgumentParser()
args.add_argument("--bootstrap", required=True)
args.add_argument("--topics", required=True)
args.add_argument("--out", required=True)
args.add_argument("--n", type=int, required=True)
args.add_argument("--group", required=True)
args.add_argument("--linger-ms", type=int, default=None,
                  help="producer linger; default: faust's own (0 ms)")
opts = args.parse_args()
tuning = {} if opts.linger_ms is None else {"producer_linger_ms": opts.linger_ms}

# faust makes its data folder even with memory tables: in a temporary folder, not the checkout
datadir = tempfile.mkdtemp(prefix="govbus-bench-faust-")
atexit.register(shutil.rmtree, datadir, True)  # any other way out
app = faust.App(opts.group, broker=f"kafka://{opts.bootstrap}", web_enabled=False,
                datadir=datadir,
                broker_session_timeout=6.0, broker_heartbeat_interval=0.5,
                store="memory://", consumer_auto_offset_reset="earliest",
                topic_allow_declare=False, **tuning)
source = app.topic(*opts.topics.split(","), key_type=bytes, value_type=bytes,
                   key_serializer="raw", value_serializer="raw")
sink = app.topic(opts.out, key_type=bytes, value_type=bytes, key_serializer="raw",
                 value_serializer="raw")
clock = {"first": 0.0, "count": 0, "busy": 0.0}


@app.agent(source)
async def passthrough(stream: faust.StreamT) -> None:
    async for event in stream.events():
        if not clock["first"]:
            clock["first"], clock["busy"] = time.perf_counter(), (machine_seconds() or 0.0)
        await sink.send(key=event.key, value=event.value)
        clock["count"] += 1
        if clock["count"] == opts.n:
            await app.producer.flush()
            seconds = time.perf_counter() - clock["first"]
            busy = (machine_seconds() or 0.0) - clock["busy"]
            # fd 1 itself: the faust worker redirects sys.stdout into its logger
            os.write(1, (json.dumps({"events": opts.n, "seconds": seconds, "busy": busy})
                         + "\n").encode())
            shutil.rmtree(datadir, True)  # os._exit runs no atexit handler
            os._exit(0)  # a bare worker: no graceful rebalance needed for a measurement


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    app.main()
