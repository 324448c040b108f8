"""Benchmark 2: what the gate's verdict costs in CPU, without a broker.

``govbus.stream_apps.judge.judge`` over M framed events in memory, as the hot path calls it:
each event signed by its agency's key (128 per signature, as a publisher signs) and its
signature checked against the registered keys (a fresh verifier for every pass over the
pool of distinct events, so each batch's first record pays its Ed25519 verification, as in
a worker that has not seen them), against a baseline that only unframes, looks the schema up
(cached) and Avro-decodes the same bytes: the ratio is what the signature check and the
contract rules (providers, Art. 12 identifiers, locality, envelope) add to bare decoding.
The same verdict without the signature check (the contents alone) shows the check's share.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from govbus.core import keys_store
from govbus.core.config import Settings
from govbus.core.envelope import now_ms
from govbus.core.registry import SchemaRegistry
from govbus.core.serde import unframe
from govbus.core.signatures import EVENTS, Verifier
from govbus.stream_apps.judge import judge

from . import workload
from .env import Env
from .report import BenchError, Result, Say, table

POOL = 5000  # distinct framed events; M cycles through them
REPEATS = 3
SKEW_MS = Settings.max_clock_skew_ms

Work = list[tuple[str, bytes, bytes, Any]]  # topic, key, payload, headers
NewVerifier = Callable[[], Verifier | None]


def _decode_only(work: Work, lookup: SchemaRegistry, _verifier: NewVerifier) -> None:
    for _topic, _key, payload, _headers in work:
        schema_id, body = unframe(payload)
        lookup.by_id(schema_id).codec.decode(body)


def _judge_all(work: Work, lookup: SchemaRegistry, verifier: NewVerifier,
               pool: int = POOL) -> None:
    now = now_ms()  # read once per pass, as the hot path reads it once per batch
    check = None
    for i, (topic, key, payload, headers) in enumerate(work):
        if i % pool == 0:  # the pool's events again: as if never seen
            check = verifier()
        judge(topic, payload, lookup.by_id, now_ms=now, max_skew_ms=SKEW_MS, verifier=check,
              key=key, headers=headers)


def run(env: Env, m: int, say: Say) -> None:
    say(f"\n== 2. verdict CPU cost, no broker: {m} framed events in memory, signed, "
        f"~2% with a bad check character; best of {REPEATS}, alternating")
    registry = SchemaRegistry(env.database_url)
    encoder = workload.Encoder(env.catalogue, registry)
    pool = [encoder.encode(i) for i in workload.items(min(m, POOL), 0.02)]
    workload.sign(pool, workload.Signers(env.keys))
    keys = [k.as_public() for k in keys_store.list_keys(env.database_url)
            if k.agency != keys_store.BUS]

    def fresh() -> Verifier:
        return Verifier(keys, EVENTS)

    work: Work = [(e.topic, e.key.encode(), e.payload, e.record_headers())
                  for e in (pool[i % len(pool)] for i in range(m))]
    check = fresh()
    verdicts = Counter(judge(t, p, registry.by_id, now_ms=now_ms(), max_skew_ms=SKEW_MS,
                             verifier=check, key=k, headers=h).accepted
                       for t, k, p, h in work[:len(pool)])
    if not verdicts[True] or not verdicts[False]:  # also warms the schema cache
        raise BenchError(f"the workload should hold good and bad events: {dict(verdicts)}")
    best: dict[str, Result] = {}
    for _ in range(REPEATS):
        for name, fn, verifier in (
                ("baseline: unframe + Avro decode", _decode_only, fresh),
                ("stream_apps.judge.judge", _judge_all, fresh),
                ("  the same, contents only", _judge_all, lambda: None)):
            gc.collect()
            started = time.perf_counter()
            fn(work, registry, verifier)
            seconds = time.perf_counter() - started
            if name not in best or seconds < best[name].seconds:
                best[name] = Result(name, m, seconds)
    base, gate, contents = best.values()
    table(say, base, [gate, contents], memory=False)
    say(f"  per event: decode {base.seconds / m * 1e6:.1f} µs, judge "
        f"{gate.seconds / m * 1e6:.1f} µs; the signature check and validation add "
        f"{(gate.seconds - base.seconds) / m * 1e6:.1f} µs "
        f"({gate.seconds / base.seconds:.2f}x the decode time), of which the signature check "
        f"{(gate.seconds - contents.seconds) / m * 1e6:.1f} µs")
