"""Baseline: a bare Bytewax passthrough dataflow, one worker.

Run by ``bench.peers`` with its own virtualenv (``bench/.venvs/bytewax``, ``pip install
'bytewax[kafka]'``): ``python bytewax_passthrough.py --bootstrap H:P --topics a,b --out T
--n N``. KafkaSource → map to a sink message → KafkaSink. Prints ``{"events": N, "seconds":
S}``: first message seen to the N-th mapped (the sink produces per batch; the source tails
forever, so the run is ended there).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, KafkaSource
from bytewax.dataflow import Dataflow
from bytewax.testing import run_main

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout
from bench.report import machine_seconds  # noqa: E402 - stdlib only: any venv imports it

args = argparse.ArgumentParser()
args.add_argument("--bootstrap", required=True)
args.add_argument("--topics", required=True)
args.add_argument("--out", required=True)
args.add_argument("--n", type=int, required=True)
args.add_argument("--group", default="")
opts = args.parse_args()
clock = {"first": 0.0, "count": 0, "busy": 0.0}


def forward(msg: Any) -> KafkaSinkMessage:
    if not clock["first"]:
        clock["first"], clock["busy"] = time.perf_counter(), (machine_seconds() or 0.0)
    clock["count"] += 1
    return KafkaSinkMessage(msg.key, msg.value)


def done(_item: Any) -> None:
    if clock["count"] >= opts.n:
        seconds = time.perf_counter() - clock["first"]
        print(json.dumps({"events": clock["count"], "seconds": seconds,
                          "busy": (machine_seconds() or 0.0) - clock["busy"]}), flush=True)
        os._exit(0)  # the source tails forever; the measurement is complete


flow = Dataflow("passthrough")
source = op.input("in", flow, KafkaSource([opts.bootstrap], opts.topics.split(","),
                                          add_config={"fetch.wait.max.ms": "100"}))
sent = op.map("forward", source, forward)
op.output("out", sent, KafkaSink([opts.bootstrap], opts.out))
op.inspect("done", sent, lambda _step, item: done(item))
run_main(flow)
