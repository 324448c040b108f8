"""Benchmark 3: the publishing library against a raw producer.

``Publisher.publish`` for N records (contract checks, envelope, Avro encoding, framing, the
agency's Ed25519 batch signature, one per 128 records, idempotent ``acks=all`` produce, flush
per call) against a raw confluent ``Producer`` with the same configuration sending the same
records pre-encoded and unsigned (same envelope and codec, encoded before the clock starts),
to the same ingest topics, also flushed once per resource. Each runs in a forked process of
its own and connects and warms up before its clock starts. The publisher's events/s are with
signing: this is where the producer's signing cost is measured (the pipeline benchmark feeds
events signed before its clock, as the agencies' publishers sign them); what signing alone
takes is timed after, over the same encoded records (``Signer.sign`` per agency, 128 per
signature, as the publisher signs them).
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from confluent_kafka import Producer

from govbus.core.kafka import producer_config
from govbus.core.registry import SchemaRegistry
from govbus.producers.publisher import Publisher

from . import workload
from .env import Env
from .report import BenchError, Memory, Result, Say, isolated, table


def _raw(env: Env, encoded: dict[str, list[workload.Encoded]], n: int) -> Result:
    mem = Memory()
    mem.start()
    producer = Producer(producer_config(env.broker))
    failures: list[Any] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(err)

    def send(batch: list[workload.Encoded]) -> None:
        for e in batch:
            while True:
                try:
                    producer.produce(e.topic, key=e.key, value=e.payload,
                                     headers={"event_id": e.event_id}, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
        if producer.flush(60):
            raise BenchError("raw producer: records unacknowledged after 60 s")

    send([batch[0] for batch in encoded.values()])  # warm-up: connections, metadata
    started = time.perf_counter()
    for batch in encoded.values():
        send(batch)
    seconds = time.perf_counter() - started
    peak, growth = mem.peak()
    if failures:
        raise BenchError(f"raw producer: {len(failures)} deliveries failed: {failures[:3]}")
    return Result("baseline: raw Producer, pre-encoded", n, seconds, peak, growth)


def _publisher(env: Env, groups: dict[tuple[str, str, bool], list[Any]], n: int) -> Result:
    mem = Memory()
    mem.start()
    pub = Publisher(env.broker, catalogue=env.catalogue)
    for (agency, name, _), changes in groups.items():  # warm-up: schemas, connections
        pub.publish(agency, name, changes[:1])
    started = time.perf_counter()
    published, problems = 0, []
    for (agency, name, _), changes in groups.items():
        report = pub.publish(agency, name, changes)
        published += report.published
        problems += [*report.failed, *(str(r.violations[0]) for r in report.refused)]
    seconds = time.perf_counter() - started
    peak, growth = mem.peak()
    pub.close()
    if problems or published != n:
        raise BenchError(f"publisher: {published} of {n} published; {problems[:3]}")
    return Result("Publisher (signing included)", n, seconds, peak, growth)


def run(env: Env, n: int, say: Say) -> None:
    say(f"\n== 3. publisher: {n} valid records to the ingest topics, idempotent acks=all "
        "producer, one flush per resource")
    work = workload.items(n, 0.0)
    groups = workload.grouped(work)
    encoder = workload.Encoder(env.catalogue, SchemaRegistry(env.database_url))
    encoded: dict[str, list[workload.Encoded]] = defaultdict(list)
    for item in work:  # the same records, grouped the same way, encoded before the clock
        encoded[f"{item.agency}.{item.name}"].append(encoder.encode(item))
    base = isolated(lambda: _raw(env, encoded, n))
    pub = isolated(lambda: _publisher(env, groups, n))
    table(say, base, [pub])
    events = [e for batch in encoded.values() for e in batch]
    signers = workload.Signers(env.keys)
    for agency in {workload.agency_of(e.topic) for e in events}:
        signers(agency)  # keys loaded before the clock, as the publisher holds them
    started = time.perf_counter()
    workload.sign(events, signers)
    signing = time.perf_counter() - started
    say(f"  per record: raw produce {base.seconds / n * 1e6:.1f} µs, publish "
        f"{pub.seconds / n * 1e6:.1f} µs (checks + envelope + encoding + signing add "
        f"{(pub.seconds - base.seconds) / n * 1e6:.1f} µs; signing alone, Signer.sign over "
        f"the same records, 128 per signature: {signing / n * 1e6:.1f} µs)")
    say(f"  publisher events/s with signing: {pub.rate:,.0f} (the producer's signing cost is "
        "measured here; the pipeline benchmark feeds events signed before its clock)")
