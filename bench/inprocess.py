"""The hot path's own work per event, in-process, without a broker: what its interpreter lock
pays for, measured away from the noise of the shared cores.

``python -m bench.inprocess [--events 20000] [--repeats 7] [--db] [--passes P] [--unsigned]``:
a scratch database with the bench's grants and keys (:mod:`bench.env`,
:func:`bench.pipeline.file_grants`), the bench workload encoded as ingest records, signed by
their agencies' keys (128 per signature, as a publisher signs), then per 2,000-record batch
what a hot-path worker does with them: verify, judge and route
(:meth:`govbus.stream_apps.hotpath.Decider.decide`, its deliveries signed with the bus's key,
given a producer
that only keeps the delivery callbacks), answer the callbacks as the broker would, build the log
entries, chain them and render their COPY text; with ``--db`` also the real ``entity_state``,
count and log writes; with ``--unsigned``, unsigned records and a decider that neither
verifies nor signs (what signatures cost, by the difference). Prints µs of this process's CPU
per event for each part, the least of
``--repeats`` passes (the machine's speed drifts by ±30% over minutes; the least is the
steadiest estimate of the work itself).

For a figure that does not drift at all, count instructions: with ``--passes P`` it makes P
passes and prints nothing else, so that the difference between two runs under
``valgrind --tool=cachegrind --cache-sim=no`` (``--passes 1`` and ``--passes 2``), divided by
``--events``, is the instructions one pass costs per event (bench/README.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import psycopg2

from govbus.core.catalogue import load_catalogue
from govbus.core.control_plane import ControlPlane
from govbus.core.entity_state import StateWriter
from govbus.core.event_counts import CountWriter
from govbus.core.keyring import BUS, private_file
from govbus.core.registry import SchemaRegistry
from govbus.core.signatures import DELIVERIES, Signer, Verifier
from govbus.delivery_log import LogWriter
from govbus.delivery_log.chain import GENESIS
from govbus.delivery_log.store import _copy, _ready
from govbus.stream_apps.event_ids import EventIds
from govbus.stream_apps.feed import Bundles, owners
from govbus.stream_apps.hotpath import Decider
from govbus.stream_apps.judge import NegativeCache
from govbus.stream_apps.route import log_entry

from . import workload
from .env import environment
from .pipeline import file_grants

BATCH = 2000  # the hot path's batch
PARTS = ("judge+route", "acks", "log entries", "chain+COPY text", "entity_state", "counts",
         "log append")


class Record:
    """An ingest record as the consumer hands it over."""

    __slots__ = ("_headers", "_key", "_offset", "_topic", "_value")

    def __init__(self, topic: str, key: bytes, value: bytes, headers: Any, offset: int) -> None:
        self._topic, self._key, self._value = topic, key, value
        self._headers, self._offset = headers, offset

    def topic(self) -> str:
        return self._topic

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def headers(self) -> Any:
        return self._headers

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def error(self) -> None:
        return None


class Acked:
    """What the broker's acknowledgement says of a record."""

    def partition(self) -> int:
        return 1

    def offset(self) -> int:
        return 5


class Outbox:
    """A producer that keeps the delivery callbacks and sends nothing."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[Any, Any], None]] = []

    def produce(self, *_: Any, on_delivery: Any = None, **__: Any) -> None:
        if on_delivery is not None:
            self.callbacks.append(on_delivery)

    def poll(self, _timeout: float = 0) -> int:
        return 0


class NoTopics:
    def ensure(self, _topics: Any) -> None:
        pass


def decider(dsn: str, signer: Signer | None) -> Decider:
    """The hot path's judging and routing, with no broker (no topic needs creating); its
    deliveries signed by ``signer`` (the bus's key), and with None neither signed nor the
    events' signatures verified (``bench.worker --unsigned``)."""
    made = Decider(NegativeCache(SchemaRegistry(dsn)), ControlPlane(dsn, 3600.0, "bench-inprocess"),
                   owners(load_catalogue()), Bundles(3), NoTopics(),  # type: ignore[arg-type]
                   EventIds(dsn), signer)
    made.verify = signer is not None
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20000, help="events per pass (20000)")
    parser.add_argument("--repeats", type=int, default=7, help="timed passes (7)")
    parser.add_argument("--db", action="store_true",
                        help="also write entity_state, the counts and the log, as a worker")
    parser.add_argument("--passes", type=int, help="make this many passes, print nothing "
                        "(for an instruction count under valgrind)")
    parser.add_argument("--unsigned", action="store_true", help="unsigned records, nothing "
                        "verified or signed (what signatures cost, by the difference)")
    args = parser.parse_args(argv)
    quiet = args.passes is not None
    with environment(need_broker=False, say=(lambda *_: None) if quiet else print) as env:
        file_grants(env)
        encoder = workload.Encoder(env.catalogue, SchemaRegistry(env.database_url))
        encoded = [encoder.encode(item) for item in workload.items(args.events, 0.02)]
        if not args.unsigned:
            workload.sign(encoded, workload.Signers(env.keys))
        records = [Record(e.topic, e.key.encode(), e.payload, e.record_headers(), i)
                   for i, e in enumerate(encoded)]
        batches = [records[i:i + BATCH] for i in range(0, len(records), BATCH)]
        bus = None if args.unsigned else Signer.from_file(private_file(env.keys, BUS),
                                                          DELIVERIES, "bench bus key")
        hot, dsn = decider(env.database_url, bus), env.database_url
        decide = hot.decide
        writers = (StateWriter(dsn), CountWriter(dsn), LogWriter(dsn)) if args.db else None

        def one_pass() -> dict[str, float]:
            spent = dict.fromkeys(PARTS, 0.0)
            old = hot.control.verifier  # a fresh one: no batch verified before, as in a worker
            hot.control.verifier = Verifier(list(old.keys.values()), old.purpose)
            if writers:  # the same events again: an empty log, as on their first pass
                with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
                    cur.execute("DELETE FROM deliveries; UPDATE delivery_log_head SET seq = 0, "
                                "row_hash = %s", (GENESIS,))
                conn.close()
            for batch in batches:
                outbox = Outbox()
                marks = [time.process_time()]
                out = decide(batch, outbox)  # type: ignore[arg-type]
                marks.append(time.process_time())
                for callback in outbox.callbacks:
                    callback(None, Acked())
                marks.append(time.process_time())
                entries = [log_entry(a) for a in out.acked]
                marks.append(time.process_time())
                _copy(Copied(), _ready(entries), {}, 1_700_000_000_000_000)
                marks.append(time.process_time())
                if writers:
                    writers[0].write(out.accepted)
                    marks.append(time.process_time())
                    writers[1].write(out.judged)
                    marks.append(time.process_time())
                    writers[2].append(entries)
                    marks.append(time.process_time())
                for part, (a, b) in zip(PARTS, zip(marks, marks[1:], strict=False),
                                        strict=False):
                    spent[part] += b - a
            return spent

        one_pass()  # warm: schemas, grants, caches
        if quiet:
            for _ in range(args.passes):
                one_pass()
            return 0
        best: dict[str, float] = {}
        for _ in range(args.repeats):
            best = {k: min(best.get(k, 1e9), v) for k, v in one_pass().items()}
        shown = {k: v for k, v in best.items() if v or writers}
        print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {args.events} events"
              + (" (unsigned)" if args.unsigned else " (signed, verified)") + ", least of "
              f"{args.repeats} passes, µs of CPU per event: "
              + ", ".join(f"{k} {1e6 * v / args.events:.1f}" for k, v in shown.items())
              + f"; total {1e6 * sum(shown.values()) / args.events:.1f}")
    return 0


class Copied:
    """A cursor that takes a COPY and reads it, as PostgreSQL would receive it."""

    def copy_expert(self, _sql: str, text: Any) -> None:
        text.read()


if __name__ == "__main__":
    raise SystemExit(main())
