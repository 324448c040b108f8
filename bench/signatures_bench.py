"""Benchmark 6: what a record's signature costs, in-process, no broker, no database.

``Signer.sign`` over batches of :data:`~govbus.core.signatures.MAX_BATCH` (128) records (the
leaf hashes, the hash tree, one Ed25519 signature, each record's headers), as a publisher
signs what it held; and ``Verifier.check`` of every record of those batches, in order, with a
fresh verifier per pass, as the hot path checks them: the first record of a batch pays the
Ed25519 verification, every other one is checked against the root it cached (a few hashes).
Then batches of one record (a publisher that flushes every event, as the pipeline
benchmark's latency phase feeds): each record pays a whole signature and a whole
verification. Records shaped like the bench workload's (an ingest topic, an 18-character key,
a 300-byte value, a 36-character event id). Each figure is the least of :data:`PASSES`
passes, µs of wall time per record; well under a second in all.

``python -m bench.signatures_bench`` runs it alone.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass

from govbus.core.signatures import (
    EVENTS,
    MAX_BATCH,
    PublicKey,
    Record,
    Signer,
    Verifier,
    generate,
    key_id,
)

from .report import BenchError, Say

BATCHES = 100  # of MAX_BATCH records each
SINGLES = 400  # records signed and checked one batch each
PASSES = 3
AGENCY = "public_security"
TOPIC = f"ingest.{AGENCY}.population_register"
VALUE_BYTES = 300


@dataclass
class Costs:
    """µs per record."""

    sign: float  # Signer.sign, batches of 128
    check: float  # Verifier.check, batches of 128: one verification shared by the batch
    first: float  # the first record of a batch: Ed25519 verification included
    cached: float  # every other record of the batch, against the cached root
    sign_one: float  # a batch of one record
    check_one: float

    def summary(self) -> str:
        return (f"per record (benchmark 6), batches of {MAX_BATCH}: Signer.sign "
                f"{self.sign:.1f} µs, Verifier.check {self.check:.1f} µs (cached root); a "
                f"batch of one: {self.sign_one:.0f} / {self.check_one:.0f} µs")


def records(n: int) -> list[Record]:
    return [(TOPIC, f"3605021990{i:08d}".encode(), os.urandom(VALUE_BYTES),
             str(uuid.uuid4()).encode()) for i in range(n)]


def _check(verifier: Verifier, record: Record, headers: list[tuple[str, bytes]]) -> None:
    problem = verifier.check(record[0], record[1], record[2], headers, AGENCY)
    if problem is not None:
        raise BenchError(f"a signed record did not verify: {problem.message}")


def measure() -> Costs:
    private = generate()
    signer = Signer(private, EVENTS)
    keys = [PublicKey(key_id(private.public_key()), AGENCY, private.public_key())]
    batches = [records(MAX_BATCH) for _ in range(BATCHES)]
    singles = records(SINGLES)
    n = BATCHES * MAX_BATCH
    best: dict[str, float] = {}

    def keep(name: str, seconds: float, count: int) -> None:
        best[name] = min(best.get(name, float("inf")), seconds / count * 1e6)

    for _ in range(PASSES):
        started = time.perf_counter()
        signed = [signer.sign(batch) for batch in batches]
        keep("sign", time.perf_counter() - started, n)
        headers = [[[("event_id", r[3] or b""), *h] for r, h in zip(batch, sig, strict=True)]
                   for batch, sig in zip(batches, signed, strict=True)]
        verifier = Verifier(keys, EVENTS)
        started = time.perf_counter()
        for batch, hs in zip(batches, headers, strict=True):
            _check(verifier, batch[0], hs[0])
        first = time.perf_counter() - started
        started = time.perf_counter()
        for batch, hs in zip(batches, headers, strict=True):
            for r, h in zip(batch[1:], hs[1:], strict=True):
                _check(verifier, r, h)
        rest = time.perf_counter() - started
        if verifier.verifications != BATCHES:
            raise BenchError(f"{verifier.verifications} verifications for {BATCHES} batches: "
                             "the cached root was not used")
        keep("check", first + rest, n)
        keep("first", first, BATCHES)
        keep("cached", rest, n - BATCHES)
        started = time.perf_counter()
        alone = [signer.sign([r])[0] for r in singles]
        keep("sign_one", time.perf_counter() - started, SINGLES)
        verifier = Verifier(keys, EVENTS)
        started = time.perf_counter()
        for r, h in zip(singles, alone, strict=True):
            _check(verifier, r, [("event_id", r[3] or b""), *h])
        keep("check_one", time.perf_counter() - started, SINGLES)
    return Costs(**best)


def run(say: Say) -> Costs:
    say(f"\n== 6. signatures, no broker: {BATCHES} batches of {MAX_BATCH} records and "
        f"{SINGLES} batches of one ({VALUE_BYTES}-byte values), least of {PASSES} passes")
    started = time.perf_counter()
    costs = measure()
    say(f"  Signer.sign, batches of {MAX_BATCH}: {costs.sign:.1f} µs per record "
        f"({costs.sign * MAX_BATCH:.0f} µs per batch, one Ed25519 signature)")
    say(f"  Verifier.check, batches of {MAX_BATCH}: {costs.check:.1f} µs per record (the "
        f"first of a batch {costs.first:.0f} µs with its Ed25519 verification, the others "
        f"{costs.cached:.1f} µs against the cached root)")
    say(f"  a batch of one record: sign {costs.sign_one:.0f} µs, check {costs.check_one:.0f} µs")
    say(f"  ({time.perf_counter() - started:.1f} s)")
    return costs


if __name__ == "__main__":
    run(print)
