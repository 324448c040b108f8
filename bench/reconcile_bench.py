"""Benchmark: what the reconciler keeps per million entities, and the cost of a change.

The reconciler keeps its state in PostgreSQL (``reconcile_state``, one row per entity) and
nothing between batches in memory. This builds that state exactly as the reconciler does —
:func:`govbus.stream_apps.reconciler.reconcile` over batches of value messages, the changed states
written with :func:`govbus.stream_apps.reconciler.write_states`, a batch's states read back first
with :func:`govbus.stream_apps.reconciler.read_states` — for N companies with three canonical
attributes each, held by the source of record (market regulation) and by tax, with 4 % of
tax's legal representatives different (an open case) and 6 % of addresses differing only in
formatting.

Figures, scaled linearly to 1,000,000 entities (the state is per entity; nothing is shared):

- **on disk**: ``pg_total_relation_size('reconcile_state')`` (table, TOAST and primary key)
  after a ``VACUUM``, per entity;
- **in the process**: the ``tracemalloc`` peak of one batch (what a reconciler holds at most;
  it does not grow with the number of entities);
- the **baseline**, built in the same run: a plain dict from the same keys to just the two raw
  values (``{key: (source value, tax value)}``) — the least any design must keep, in memory.
"""

from __future__ import annotations

import gc
import json
import random
import time
import tracemalloc
import uuid
from typing import Any

from govbus.core import db
from govbus.stream_apps.reconcile_rules import ValueChange
from govbus.stream_apps.reconciler import read_states, reconcile, write_states

from .report import Say

GROUP = "bench-reconciler"
BATCH = 2000  # value messages per batch: about what the reconciler reads from hot-path bundles

ATTRS = ("company.name", "company.legal_representative", "company.registered_address")
NAMES = "李王张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗"
STREETS = ("劳动北路", "仙来中大道", "胜利南路", "抱石大道", "长青路", "北湖西路")


def workload(n: int, seed: int = 1) -> list[ValueChange]:
    """Source-of-record then tax values of ``n`` companies, two changes per attribute; event
    ids are UUIDs as the publisher makes them."""
    rng = random.Random(seed)
    resources = {"market_regulation": "market_regulation.legal_entity_register",
                 "tax": "tax.tax_registration"}
    changes: list[ValueChange] = []
    for i in range(n):
        entity = f"company:91360502{i:09d}X"
        values = {"company.name": f"新余市{i:06d}有限公司",
                  "company.legal_representative": rng.choice(NAMES) + rng.choice(NAMES),
                  "company.registered_address":
                      f"江西省新余市渝水区{rng.choice(STREETS)}{rng.randrange(1, 999)}号"}
        theirs = dict(values)
        roll = rng.random()
        if roll < 0.04:
            theirs["company.legal_representative"] = rng.choice(NAMES) + rng.choice(NAMES) + "某"
        elif roll < 0.10:
            theirs["company.registered_address"] = values["company.registered_address"].replace(
                "号", " 号")
        event_ids = {t: str(uuid.UUID(int=rng.getrandbits(128), version=4)) for t in (1, 2)}
        for agency, held, t in (("market_regulation", values, 1), ("tax", theirs, 2)):
            for attr in ATTRS:
                changes.append(ValueChange(entity, attr, agency, "market_regulation",
                                           held[attr], 1_790_000_000_000 + i * 10 + t,
                                           event_ids[t], resources[agency]))
    return changes


def build_state(dsn: str, changes: list[ValueChange]) -> tuple[int, int, float, int]:
    """The state as the reconciler builds it, in batches; (case messages, open cases, seconds,
    peak bytes of one batch in the process)."""
    emitted = open_cases = peak = 0
    started = time.perf_counter()
    # one attribute per message here: the costliest case per change
    records = [(c.entity, [c]) for c in changes]
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM reconcile_state WHERE reconciler = %s", (GROUP,))
    for i in range(0, len(records), BATCH):
        batch = records[i:i + BATCH]
        tracemalloc.start()
        with db.transaction(dsn) as conn, conn.cursor() as cur:
            held = read_states(cur, GROUP, sorted({e for e, _ in batch}))
            changed, cases = reconcile(held, batch, 1_795_000_000_000, 5)
            write_states(cur, GROUP, changed)
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        emitted += len(cases)
    seconds = time.perf_counter() - started
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT state FROM reconcile_state WHERE reconciler = %s", (GROUP,))
        open_cases = sum(len(state.get("o", {})) for (raw,) in cur.fetchall()
                         for state in json.loads(raw).values())
    return emitted, open_cases, seconds, peak


def disk_bytes(dsn: str) -> int:
    """``reconcile_state`` on disk: table, TOAST and index, after a VACUUM."""
    conn = db.connect(dsn, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE reconcile_state")
            cur.execute("SELECT pg_total_relation_size('reconcile_state')")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def build_baseline(changes: list[ValueChange]) -> dict[bytes, Any]:
    """Just the two raw values per key: the floor any design has to keep."""
    pairs: dict[bytes, list[Any]] = {}
    for change in changes:
        pair = pairs.setdefault(change.state_key.encode(), [None, None])
        pair[0 if change.agency == change.owner else 1] = change.value
    return {k: tuple(json.loads(json.dumps(v, ensure_ascii=False))) for k, v in pairs.items()}


def measure(build: Any, changes: list[ValueChange]) -> tuple[int, Any]:
    """Bytes still allocated after ``build(changes)`` (the structure it returns)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    out = build(changes)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before, out


def run(dsn: str, n: int, say: Say) -> None:
    say(f"\n== reconciler state: {n} companies × {len(ATTRS)} canonical attributes × 2 "
        f"agencies, in batches of {BATCH}, scaled to 1,000,000 entities")
    changes = workload(n)
    base_bytes, _ = measure(build_baseline, changes)
    emitted, open_cases, seconds, peak = build_state(dsn, changes)
    per_entity, per_base = disk_bytes(dsn) / n, base_bytes / n
    say(f"  {'structure':<50} {'bytes/entity':>12} {'GiB per 1M':>11} {'ratio':>6}")
    say(f"  {'baseline: dict key → (source value, tax value)':<50} {per_base:>12.0f} "
        f"{per_base * 1e6 / 2**30:>11.2f} {1.0:>6.2f}")
    say(f"  {'reconciler state in PostgreSQL (table + index)':<50} {per_entity:>12.0f} "
        f"{per_entity * 1e6 / 2**30:>11.2f} {per_entity / per_base:>6.2f}")
    say(f"  in the reconciler process: at most {peak / 2**20:.1f} MiB for a batch of {BATCH} "
        "value messages (tracemalloc peak), whatever the number of entities")
    say(f"  {n} entities, {open_cases} open cases ({open_cases / n:.1%} of entities), "
        f"{emitted} case messages")
    say(f"  read, apply and write: {seconds / len(changes) * 1e6:.1f} µs per value change "
        f"({len(changes) / seconds:,.0f}/s, one core, PostgreSQL beside it, under tracemalloc)")
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM reconcile_state WHERE reconciler = %s", (GROUP,))
