"""A reconciliation pipeline for integration tests: gate, feed and cases sink in threads, the
reconciler as a child process (so that ``kill -9`` is a real crash), on a real broker and
a real PostgreSQL."""

from __future__ import annotations

import ctypes
import os
import random
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import psycopg2.extras

from govbus import sample
from govbus.consumers.cases_sink import CasesSink
from govbus.core import db
from govbus.core.catalogue import Catalogue
from govbus.core.config import Settings
from govbus.core.kafka import ensure_topics
from govbus.producers.publisher import Change, Publisher
from govbus.stream_apps.feed import (
    CASES_TOPIC,
    VALUES_TOPIC,
    owners,
    value_message,
)
from govbus.stream_apps.hotpath import HotPath
from govbus.stream_apps.reconcile_rules import apply_entity
from govbus.stream_apps.reconciler import changes

ROOT = Path(__file__).resolve().parents[2]
MR, TAX = "market_regulation", "tax"


def _die_with_parent() -> None:
    """Linux: the reconciler gets SIGTERM if the test process dies, even by a crash."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Pipeline:
    """Start/stop the stages; ``reconciler_*`` control the reconciler process."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings, self.logs = settings, logs
        self.run_id = uuid.uuid4().hex[:8]
        self.app_id = f"test-reconciler-{self.run_id}"
        self.workers: list[Any] = []
        self.threads: list[threading.Thread] = []
        self.procs: list[subprocess.Popen[bytes]] = []  # reconcilers, in one consumer group

    def start(self) -> Pipeline:
        ensure_topics(self.settings, [VALUES_TOPIC, CASES_TOPIC])
        self.workers = [HotPath(self.settings, group=f"hotpath-{self.run_id}", batch=200),
                        CasesSink(self.settings, group=f"sink-{self.run_id}", batch=200)]
        self.threads = [threading.Thread(target=w.run, daemon=True) for w in self.workers]
        for t in self.threads:
            t.start()
        self.reconciler_start()
        return self

    def reconciler_start(self) -> None:
        """Start a reconciler; one started beside a running one joins its group."""
        env = os.environ | {"KAFKA_BOOTSTRAP_SERVERS": self.settings.bootstrap_servers,
                            "DATABASE_URL": self.settings.database_url,
                            "GOVBUS_PARTITIONS": str(self.settings.partitions),
                            "GOVBUS_RECONCILER_ID": self.app_id}
        with open(self.logs / "reconciler.log", "ab") as out:
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "govbus.stream_apps.reconciler"], env=env, stdout=out,
                stderr=out, cwd=ROOT, preexec_fn=_die_with_parent))

    def reconciler_kill(self, which: int = -1) -> None:
        """``kill -9`` a running reconciler (the last started by default)."""
        proc = self.procs.pop(which)
        proc.kill()
        proc.wait(10)

    def cases(self, entities: list[str]) -> list[dict[str, Any]]:
        """The cases of ``entities`` in PostgreSQL; fails at once if a reconciler died."""
        assert self.procs and all(p.poll() is None for p in self.procs), (
            f"a reconciler exited; see {self.logs / 'reconciler.log'}")
        return cases_of(self.settings.database_url, entities)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for w in self.workers:
            w.stop()
        for t in self.threads:
            t.join(30)
            assert not t.is_alive(), "a stage did not stop"


def company(rng: random.Random, rep: str = "李强", addr: str = "渝水区劳动北路1号"
            ) -> dict[str, Any]:
    code = sample.uscc(rng, "360502")
    return {"uscc": code, "name": f"新余市{code[-5:]}有限公司", "legal_representative": rep,
            "legal_representative_id": "360502198001010015", "registered_address": addr,
            "registered_capital": 1000000, "established_date": "2001-05-01",
            "status": "ACTIVE"}


def tax_row(c: dict[str, Any], **over: Any) -> dict[str, Any]:
    return {"uscc": c["uscc"], "taxpayer_name": c["name"],
            "legal_representative": c["legal_representative"],
            "registered_address": c["registered_address"], "taxpayer_type": "GENERAL",
            "tax_authority": "国家税务总局新余市渝水区税务局", "credit_rating": None} | over


def publish(settings: Settings, items: list[tuple[str, str, Change]]) -> None:
    """Publish (agency, resource, change) in the given order, one batch per run of agency."""
    pub = Publisher(settings)
    try:
        for agency, resource, change in items:
            report = pub.publish(agency, resource, [change])
            assert report.refused == [], report.refused
    finally:
        pub.close()


def cases_of(dsn: str, entities: list[str]) -> list[dict[str, Any]]:
    with db.transaction(dsn) as conn, conn.cursor(
            cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("SELECT * FROM cases WHERE entity_key = ANY(%s) ORDER BY case_key",
                    (entities,))
        return [dict(r) for r in cur.fetchall()]


def summary(cases: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    """What must not depend on arrival order: identity, parties, status and values."""
    return {(c["case_key"], c["entity_key"], c["attribute"], c["owner_agency"],
             c["other_agency"], c["status"], c["resolution"],
             tuple(sorted((v["agency"], v["value"]) for v in c["values"]))) for c in cases}


def open_summary(cases: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    return {s for s in summary(cases) if s[5] == "open"}


def expected_open(catalogue: Catalogue, items: list[tuple[str, str, Change]]
                  ) -> set[tuple[Any, ...]]:
    """The open cases the pure rules derive from ``items`` (the oracle for a pipeline run)."""
    owner_of = owners(catalogue)
    states: dict[str, Any] = {}
    cases: dict[str, dict[str, Any]] = {}
    for agency, name, ch in items:
        resource = catalogue.get(agency, name)
        image = ch.before if ch.op == "d" else ch.record
        event = {"key": (image or {})[str(resource.key_field)], "op": ch.op,
                 "after": ch.record, "source": {"agency": agency},
                 "event_id": ch.event_id, "occurred_ms": ch.occurred_ms}
        out = value_message(resource, event, owner_of)
        assert out is not None
        states[out[0]], emitted = apply_entity(states.get(out[0]), changes(out[1]), 0)
        for case in emitted:
            if cases.get(case["case_key"], {}).get("status") != "closed":
                cases[case["case_key"]] = case
    return {(c["case_key"], c["entity_key"], c["attribute"], c["owner_agency"],
             c["other_agency"], "open", None,
             tuple(sorted((v["agency"], v["value"]) for v in c["values"])))
            for c in cases.values() if c["status"] == "open"}
