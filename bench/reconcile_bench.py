"""Benchmark: the reconciler table's memory per million entities, and the cost of a change.

Builds the table exactly as the faust agent does — ``stream_apps.reconcile_rules.apply_entity``
per value change, the states of an entity's attributes stored under the entity — for N
companies with three canonical attributes each, held by the source of record (market
regulation) and by tax, with 4 % of tax's legal representatives different (an open case)
and 6 % of addresses differing only in formatting. Each state goes through a JSON round trip
first: that is the form faust's memory store holds after rebuilding from the changelog (no
strings shared between entries).

Memory is measured with ``tracemalloc`` (bytes allocated by Python objects that stay alive),
against a baseline built in the same run: a plain dict from the same keys to just the two raw
values (``{key: (source value, tax value)}``) — the least any design must keep. Figures are
scaled linearly to 1,000,000 entities (the state is per key; nothing is shared across keys).
"""

from __future__ import annotations

import gc
import json
import random
import time
import tracemalloc
import uuid
from typing import Any

from stream_apps.reconcile_rules import ValueChange, apply_entity

from .report import Say

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


def build_table(changes: list[ValueChange]) -> tuple[dict[bytes, Any], int, float]:
    """The table as the agent builds it; (table, case messages, seconds)."""
    table: dict[bytes, Any] = {}
    emitted = 0
    started = time.perf_counter()
    for change in changes:  # one attribute per message here: the costliest case per change
        key = change.entity.encode()
        held = table.get(key)
        state, cases = apply_entity(held, [change], 1_795_000_000_000)
        if state is not held:
            table[key] = state
        emitted += len(cases)
    seconds = time.perf_counter() - started
    recovered = {k: json.loads(json.dumps(v, ensure_ascii=False)) for k, v in table.items()}
    return recovered, emitted, seconds


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


def run(n: int, say: Say) -> None:
    say(f"\n== reconciler state: {n} companies × {len(ATTRS)} canonical attributes × 2 "
        "agencies, tracemalloc, scaled to 1,000,000 entities")
    changes = workload(n)
    base_bytes, _ = measure(build_baseline, changes)
    table_bytes, (table, emitted, seconds) = measure(build_table, changes)
    open_cases = sum(len(state.get("o", {})) for states in table.values()
                     for state in states.values())  # entity -> attribute -> state
    per_entity, per_base = table_bytes / n, base_bytes / n
    say(f"  {'structure':<46} {'bytes/entity':>12} {'GiB per 1M':>11} {'ratio':>6}")
    say(f"  {'baseline: dict key → (source value, tax value)':<46} {per_base:>12.0f} "
        f"{per_base * 1e6 / 2**30:>11.2f} {1.0:>6.2f}")
    say(f"  {'reconciler table (after changelog recovery)':<46} {per_entity:>12.0f} "
        f"{per_entity * 1e6 / 2**30:>11.2f} {per_entity / per_base:>6.2f}")
    say(f"  {len(table)} table keys, {open_cases} open cases ({open_cases / n:.1%} of "
        f"entities), {emitted} case messages")
    say(f"  apply(): {seconds / len(changes) * 1e6:.1f} µs per value change "
        f"({len(changes) / seconds:,.0f}/s, one core, under tracemalloc)")
