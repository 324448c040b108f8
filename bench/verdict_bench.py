"""Benchmark 2: what the gate's verdict costs in CPU, without a broker.

``govbus.stream_apps.judge.judge`` over M framed events in memory, against a baseline that only
unframes, looks the schema up (cached) and Avro-decodes the same bytes: the ratio is what the
contract rules (providers, Art. 12 identifiers, locality, envelope) add to bare decoding.
"""

from __future__ import annotations

import gc
import time
from collections import Counter

from govbus.core.config import Settings
from govbus.core.envelope import now_ms
from govbus.core.registry import SchemaRegistry
from govbus.core.serde import unframe
from govbus.stream_apps.judge import judge

from . import workload
from .env import Env
from .report import BenchError, Result, Say, table

POOL = 5000  # distinct framed events; M cycles through them
REPEATS = 3
SKEW_MS = Settings.max_clock_skew_ms


def _decode_only(work: list[tuple[str, bytes]], lookup: SchemaRegistry) -> None:
    for _topic, payload in work:
        schema_id, body = unframe(payload)
        lookup.by_id(schema_id).codec.decode(body)


def _judge_all(work: list[tuple[str, bytes]], lookup: SchemaRegistry) -> None:
    now = now_ms()  # read once per pass, as the hot path reads it once per batch
    for topic, payload in work:
        judge(topic, payload, lookup.by_id, now_ms=now, max_skew_ms=SKEW_MS)


def run(env: Env, m: int, say: Say) -> None:
    say(f"\n== 2. verdict CPU cost, no broker: {m} framed events in memory, "
        f"~2% with a bad check character; best of {REPEATS}, alternating")
    registry = SchemaRegistry(env.database_url)
    encoder = workload.Encoder(env.catalogue, registry)
    pool = [encoder.encode(i) for i in workload.items(min(m, POOL), 0.02)]
    work = [(pool[i % len(pool)].topic, pool[i % len(pool)].payload) for i in range(m)]
    verdicts = Counter(judge(t, p, registry.by_id, now_ms=now_ms(), max_skew_ms=SKEW_MS).accepted
                       for t, p in work[:len(pool)])
    if not verdicts[True] or not verdicts[False]:  # also warms the schema cache
        raise BenchError(f"the workload should hold good and bad events: {dict(verdicts)}")
    best: dict[str, Result] = {}
    for _ in range(REPEATS):
        for name, fn in (("baseline: unframe + Avro decode", _decode_only),
                         ("stream_apps.judge.judge", _judge_all)):
            gc.collect()
            started = time.perf_counter()
            fn(work, registry)
            seconds = time.perf_counter() - started
            if name not in best or seconds < best[name].seconds:
                best[name] = Result(name, m, seconds)
    base, gate = best.values()
    table(say, base, [gate], memory=False)
    say(f"  per event: decode {base.seconds / m * 1e6:.1f} µs, judge "
        f"{gate.seconds / m * 1e6:.1f} µs; validation adds "
        f"{(gate.seconds - base.seconds) / m * 1e6:.1f} µs "
        f"({gate.seconds / base.seconds:.2f}x the decode time)")
