"""``python -m bench.worker --group G [--unsigned]``: one governed worker process for the
pipeline bench.

A worker is one OS process running every stage of the governed path as a thread: the hot
path (judge, route, feed and settle in one pass over each batch, as ``govbus up`` runs it;
its settling process is a child of this one) and the cases sink. That makes "events/s per
worker" comparable with the single-process baselines. Several workers started with the same
``--group`` share the work through their consumer groups (``G-hotpath``, ``G-cases_sink``),
exactly as production workers would.

Broker and database come from ``KAFKA_BOOTSTRAP_SERVERS`` and ``DATABASE_URL``, the keys from
``GOVBUS_STATE_DIR`` (``<it>/keys``, provisioned by ``bench.env``): the hot path verifies each
event's signature and signs its deliveries, as ``govbus up`` runs it. ``--unsigned`` turns
both off on the hot path after it is built (``decider.verify = False``, ``decider.signer =
None``): the benchmark's comparison without signatures, a switch of this benchmark only, never
a setting. The worker
prints ``stages <names>`` at start, ``ready`` once every core stage has processed a batch,
and ``stopped <json stats>`` after SIGTERM (with the log writer's lock wait per batch); the
bench reads these lines on stdout.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from govbus.core.batching import tune_gc
from govbus.core.config import Settings
from govbus.stream_apps.hotpath import HotPath


class Stage(Protocol):
    consumer: Any
    stats: Any  # a Counter, empty until the stage processed its first batch

    def run(self) -> Any: ...
    def stop(self, *_: Any) -> None: ...


Factory = Callable[[Settings, str], Stage]

# the core stage: the hot path, what `govbus up` runs
CORE: list[tuple[str, Factory]] = [("hotpath", lambda s, g: HotPath(s, group=f"{g}-hotpath"))]

# Reconciliation runs in the governed pipeline whenever its stages exist: (name, module,
# class taking (settings, group=...)). Adding a stage is adding one line here. The hot path
# feeds the reconciler itself; the reconciler runs as a process of its own next to the
# workers, as `govbus up` runs it, off the workers' interpreter lock
# (see bench.pipeline.COMPANIONS).
OPTIONAL: list[tuple[str, str, str]] = [
    ("cases_sink", "govbus.consumers.cases_sink", "CasesSink"),
]


def _factory(cls: Any, name: str) -> Factory:
    def make(settings: Settings, group: str) -> Stage:
        return cls(settings, group=f"{group}-{name}")  # type: ignore[no-any-return]
    return make


def optional_stages() -> tuple[list[tuple[str, Factory]], list[str]]:
    """The optional stages importable here, and a note for each one that is not."""
    found: list[tuple[str, Factory]] = []
    missing: list[str] = []
    for name, module, cls in OPTIONAL:
        try:
            factory = getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError) as exc:
            missing.append(f"{name} ({module}.{cls}: {exc})")
            continue
        found.append((name, _factory(factory, name)))
    return found, missing


def busy(stage: Stage) -> bool:
    """Whether the stage has processed a batch: it holds partitions and its caches are warm.

    Read from its counters, not from ``consumer.assignment()``: that call blocks while the
    stage's thread sits in ``consume()``."""
    return bool(stage.stats)


def unsign(stage: HotPath) -> None:
    """What the hot path costs without signatures: it checks none and signs none (for the
    comparison of ``bench.pipeline_bench`` only; a deployment always does both)."""
    stage.decider.verify = False
    stage.decider.signer = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    parser.add_argument("--group", required=True, help="consumer-group prefix of the stages")
    parser.add_argument("--unsigned", action="store_true",
                        help="benchmark only: the hot path neither verifies the events' "
                             "signatures nor signs its deliveries")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = Settings.from_env()
    extra, missing = optional_stages()
    stages = [(name, make(settings, args.group)) for name, make in [*CORE, *extra]]
    if args.unsigned:
        for _, stage in stages:
            if isinstance(stage, HotPath):
                unsign(stage)
    print("stages " + " ".join(name for name, _ in stages)
          + (" (unsigned: no verification, no delivery signatures)" if args.unsigned else "")
          + "".join(f"; not present: {m}" for m in missing), flush=True)
    tune_gc()  # as serve() does for each stage `govbus up` starts
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    errors: list[str] = []

    def runner(name: str, stage: Stage) -> None:
        try:
            stage.run()
        except BaseException as exc:  # noqa: BLE001 - reported to the bench, which fails
            errors.append(f"{name}: {exc!r}")
            stop.set()

    threads = [threading.Thread(target=runner, args=(n, s), name=n, daemon=True)
               for n, s in stages]
    for t in threads:
        t.start()
    ready = False
    needed = {name for name, _ in CORE}  # the optional ones may see no input for a while
    while not stop.wait(0.1):
        if not ready and all(busy(s) for n, s in stages if n in needed):
            ready = True
            print("ready", flush=True)
    for _, stage in stages:
        stage.stop()
    for t in threads:
        t.join(60)
    stats = {name: dict(stage.stats) for name, stage in stages}
    # the hot path's log writer: its wait for its shards' locks, per batch (seconds)
    waits = [w for _, stage in stages for w in getattr(stage, "lock_waits", ())]
    print("stopped " + json.dumps({"errors": errors, "stats": stats,
                                   "lock_waits": waits, "at": time.time()}), flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
