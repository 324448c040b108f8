"""Baseline: a bare Quix Streams passthrough application.

Run by ``bench.peers`` with its own virtualenv (``bench/.venvs/quix``, ``pip install
quixstreams``): ``python quix_passthrough.py --bootstrap H:P --topics a,b --out T --n N
--group G``. One streaming dataframe per input topic, bytes in, bytes out, nothing else.
Prints ``{"events": N, "seconds": S, "busy": B}``: first message seen to the N-th, producer
flushed; B the whole machine's busy CPU seconds meanwhile.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from quixstreams import Application

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout
from bench.report import machine_seconds  # noqa: E402 - stdlib only: any venv imports it

args = argparse.ArgumentParser()
args.add_argument("--bootstrap", required=True)
args.add_argument("--topics", required=True)
args.add_argument("--out", required=True)
args.add_argument("--n", type=int, required=True)
args.add_argument("--group", required=True)
opts = args.parse_args()

app = Application(broker_address=opts.bootstrap, consumer_group=opts.group,
                  auto_offset_reset="earliest", auto_create_topics=False,
                  loglevel=logging.WARNING,
                  consumer_extra_config={"session.timeout.ms": 6000,
                                         "heartbeat.interval.ms": 500})
out = app.topic(opts.out, key_serializer="bytes", value_serializer="bytes")
clock = {"first": 0.0, "last": 0.0, "count": 0, "busy": 0.0}


def count(value: Any) -> None:
    if not clock["first"]:
        clock["first"], clock["busy"] = time.perf_counter(), (machine_seconds() or 0.0)
    clock["count"] += 1
    if clock["count"] == opts.n:
        clock["last"] = time.perf_counter()
        clock["busy"] = (machine_seconds() or 0.0) - clock["busy"]
        app.stop()


for name in opts.topics.split(","):
    topic = app.topic(name, key_deserializer="bytes", value_deserializer="bytes")
    app.dataframe(topic).update(count).to_topic(out)

app.run()
print(json.dumps({"events": clock["count"], "seconds": clock["last"] - clock["first"],
                  "busy": clock["busy"]}), flush=True)
