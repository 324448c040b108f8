"""Metrics through a real Prometheus: the bus's processes run as they do under ``govbus up``
(subprocesses, each on its own metrics port), a Prometheus server (Debian package
``prometheus``) scrapes them every second, and the tests read values through its HTTP API
after a known workload:

- 12 people published to ``public_security.population_register`` (unconditional), granted to
  ``tax``: 12 accepted, 12 deliveries, 12 latency observations, 12 log records written;
- 3 adoption records (not shared, Art. 15): 3 accepted, 3 withheld, no delivery;
- 3 garbage payloads on ``ingest.tax.tax_registration``: 3 rejections ``wire.magic_byte``;
- one sharing request to ``hrss`` pending past its deadline: pending 1, overdue 1;
- every resource registered 60 days ago: the two that received events are fresh, the other
  four stale (update periods P1D..P1M).

Skipped only when the binary is missing and ``CI`` is unset; in CI a missing binary fails.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from govbus import prom, runtime, sample
from govbus.core import db, registry, sharing_store
from govbus.core.catalogue import Catalogue, load_catalogue
from govbus.core.config import Settings
from govbus.core.kafka import ensure_topics
from govbus.producers.publisher import Change, Publisher
from tests.integration.conftest import TansuBroker, register_sample_keys, scratch_database
from tests.integration.helpers import SignedProducer, commitment, wait_until, worker_port

APPS = {"hotpath": "govbus.stream_apps.hotpath",
        "ops_exporter": "govbus.stream_apps.ops_exporter"}
PEOPLE, ADOPTIONS, GARBAGE = 12, 3, 3
POPULATION, ADOPTION = "public_security.population_register", "civil_affairs.adoption_register"
HRSS = "hrss.social_insurance_enrolment"

if prom.prometheus_binary() is None:
    if os.environ.get("CI"):
        pytest.fail("CI: the `prometheus` binary is required (apt-get install prometheus)",
                    pytrace=False)
    pytest.skip("no `prometheus` binary (apt-get install prometheus)", allow_module_level=True)


@dataclass
class Observed:
    url: str
    settings: Settings
    catalogue: Catalogue
    logs: Path

    def log_tails(self, lines: int = 15) -> str:
        """The end of each process's log, for a failure message."""
        return "\n".join(f"--- {log.name}\n" + "\n".join(
            log.read_text(errors="replace").splitlines()[-lines:])
            for log in sorted(self.logs.glob("*.log")))


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory, pg_admin: str) -> Iterator[Observed]:
    """Broker, database, the four processes, Prometheus; then the workload."""
    base = tmp_path_factory.mktemp("observed")
    broker = TansuBroker(base, runtime.free_port(worker_port(29500)))
    broker.start()
    pids: list[int] = []
    with scratch_database(pg_admin) as dsn:
        try:
            catalogue = load_catalogue()
            db.migrate(dsn)
            registry.sync(dsn, catalogue)
            register_sample_keys(dsn)  # the agencies sign; the hot path verifies
            settings = Settings(broker.bootstrap, dsn, catalogue.root)
            ensure_topics(settings, runtime.catalogue_topics(catalogue))
            ports = prom.free_ports(APPS, start=19600)
            env = os.environ | {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                                "DATABASE_URL": dsn}
            for name, module in APPS.items():
                pids.append(runtime.spawn([sys.executable, "-m", module],
                                          base / "logs" / f"{name}.log",
                                          env | {"GOVBUS_METRICS_PORT": str(ports[name])}))
            port = prom.free_ports(["prometheus"], start=19700)["prometheus"]
            url, prom_pid = prom.start_prometheus(base / "prometheus", ports, port,
                                                  interval_s=1)
            pids.append(prom_pid)
            wait_until(lambda: prom.value(url, 'sum(up{job="govbus"})') == len(APPS), 90,
                       "Prometheus to scrape every process")
            workload(settings, catalogue, url)
            yield Observed(url, settings, catalogue, base / "logs")
        finally:
            for pid in pids:
                runtime.stop_pid(pid, signal.SIGTERM, 15)
            broker.stop()


def workload(settings: Settings, catalogue: Catalogue, url: str) -> None:
    dsn = settings.database_url
    filed = time.time()
    granted = sharing_store.file_request(dsn, catalogue.resources[POPULATION], "tax",
                                         "tax registration checks", None,
                                         commitment(dsn, "tax", [POPULATION, HRSS]))
    assert granted["grant_id"], granted
    # a grant takes effect at the hot path's next load (every GOVBUS_GRANT_REFRESH_S): publish
    # only once it says it loaded it, or the people would be routed on the old grants
    wait_until(lambda: (prom.value(url, "govbus_router_grants") == 1 and (prom.value(
        url, "govbus_router_grants_loaded_timestamp_seconds") or 0) > filed), 60,
        "the hot path to load the new grant")
    hrss = catalogue.resources[HRSS]
    pending = sharing_store.file_request(dsn, hrss, "tax", "contribution checks", None,
                                         commitment(dsn, "tax", HRSS))
    assert pending["status"] == "pending"
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("UPDATE sharing_requests SET due_at = now() - interval '1 day' "
                    "WHERE request_id = %s", (pending["request_id"],))
        cur.execute("UPDATE schema_versions SET registered_at = now() - interval '60 days'")
    rows = sample.generate(events=400, seed=5).rows
    publisher = Publisher(settings, catalogue)
    report = publisher.publish("public_security", "population_register",
                               [Change("c", r) for r in rows[POPULATION][:PEOPLE]])
    assert report.published == PEOPLE, report.as_dict()
    report = publisher.publish("civil_affairs", "adoption_register",
                               [Change("c", r) for r in rows[ADOPTION][:ADOPTIONS]])
    assert report.published == ADOPTIONS, report.as_dict()
    producer = SignedProducer(settings)  # signed by tax: its contents are the garbage
    for i in range(GARBAGE):
        producer.produce("ingest.tax.tax_registration", key=f"g{i}", value=b"garbage")
    assert producer.flush(30) == 0


def test_metric_values_match_the_workload(observed: Observed) -> None:
    url = observed.url

    def value(expr: str) -> float | None:
        return prom.value(url, expr)

    def settled(expr: str, expected: float) -> None:
        try:
            wait_until(lambda: value(expr) == expected, 90, f"{expr} == {expected}", step=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last value {value(expr)}\n"
                                 f"{observed.log_tails()}") from None

    settled('sum(govbus_gate_events_total{outcome="accepted"})', PEOPLE + ADOPTIONS)
    settled(f'govbus_gate_events_total{{resource="{POPULATION}", outcome="accepted"}}', PEOPLE)
    settled('govbus_gate_rejections_total{agency="tax", rule="wire.magic_byte"}', GARBAGE)
    settled('sum(govbus_gate_events_total{outcome="rejected"})', GARBAGE)
    settled(f'govbus_router_deliveries_total{{provider="public_security", recipient="tax", '
            f'resource="{POPULATION}", share_class="unconditional"}}', PEOPLE)
    settled('sum(govbus_router_deliveries_total)', PEOPLE)
    settled(f'govbus_router_withheld_total{{resource="{ADOPTION}", share_class="not_shared"}}',
            ADOPTIONS)
    settled(f'govbus_delivery_latency_seconds_count{{resource="{POPULATION}"}}', PEOPLE)
    settled('govbus_delivery_log_records_total{outcome="written"}', PEOPLE)
    latency = value(f'govbus_delivery_latency_seconds_sum{{resource="{POPULATION}"}}')
    assert latency is not None and 0 <= latency / PEOPLE < 60
    settled('govbus_requests_pending{agency="hrss"}', 1)
    settled('govbus_requests_overdue{agency="hrss"}', 1)
    settled('sum(govbus_requests_overdue)', 1)
    settled(f'govbus_resource_stale{{resource="{POPULATION}"}}', 0)
    settled(f'govbus_resource_stale{{resource="{ADOPTION}"}}', 0)
    settled('sum(govbus_resource_stale)', len(observed.catalogue.resources) - 2)
    settled('govbus_ops_source_up{source="database"}', 1)
    with db.transaction(observed.settings.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT resource_id, outcome, rule, sum(events) FROM event_counts "
                    "GROUP BY 1, 2, 3 ORDER BY 1, 2")  # the durable counts, for Art. 28
        assert cur.fetchall() == [(ADOPTION, "accepted", "", ADOPTIONS),
                                  (POPULATION, "accepted", "", PEOPLE),
                                  ("tax.tax_registration", "rejected", "wire.magic_byte",
                                   GARBAGE)]

    def lag_groups() -> set[str]:
        return {g["metric"]["group"]
                for g in prom.query(url, "govbus_consumer_lag")["data"]["result"]}

    wait_until(lambda: "govbus-hotpath" in lag_groups(), 60, "the hot path's consumer lag",
               step=0.5)

    def offsets(metric: str) -> dict[str, float]:
        return {g["metric"]["group"]: float(g["value"][1])
                for g in prom.query(url, metric)["data"]["result"]}
    # what GovbusConsumerStalled compares: each group's commits against its input
    wait_until(lambda: "govbus-hotpath" in offsets("govbus_consumer_committed_offsets"), 60,
               "the hot path's committed offsets", step=0.5)
    committed, ends = offsets("govbus_consumer_committed_offsets"), \
        offsets("govbus_consumer_input_offsets")
    assert committed["govbus-hotpath"] > 0  # it committed what it judged
    assert all(committed[g] <= ends[g] for g in committed), (committed, ends)


def test_no_event_or_person_ids_in_labels(observed: Observed) -> None:
    series = prom.query(observed.url, '{__name__=~"govbus_.*"}')["data"]["result"]
    assert series
    allowed = {"__name__", "agency", "resource", "outcome", "rule", "provider", "recipient",
               "share_class", "le", "group", "source", "component", "instance", "job",
               "stage", "error"}
    for s in series:
        assert set(s["metric"]) <= allowed, s["metric"]
        for label, val in s["metric"].items():  # no resident id, credit code, event id
            assert label in ("le", "instance") or not re.search(r"[0-9A-F]{8,}", val), s


@pytest.mark.parametrize("dashboard", ["ops.json", "information-center.json"])
def test_every_dashboard_query_is_valid_promql(observed: Observed, dashboard: str) -> None:
    queries = prom.dashboard_queries(prom.DASHBOARDS / dashboard)
    assert len(queries) >= 10
    failed = [(title, expr, answer.get("error")) for title, expr in queries
              if (answer := prom.query(observed.url, expr))["status"] != "success"]
    assert failed == []

    def answered() -> bool:  # rate() needs two scrapes of a counter after it appeared
        return sum(bool(prom.query(observed.url, expr)["data"]["result"])
                   for _t, expr in queries) >= len(queries) // 2

    wait_until(answered, 60, f"most panels of {dashboard} to show data after the workload")


def test_alert_rules_are_loaded_and_the_overdue_request_alert_is_pending(
        observed: Observed) -> None:
    with urllib.request.urlopen(f"{observed.url}/api/v1/rules", timeout=10) as resp:
        groups = json.loads(resp.read())["data"]["groups"]
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    assert {"GovbusResourceStale", "GovbusRequestsUnanswered", "GovbusCasesOverdue",
            "GovbusDlqRateHigh", "GovbusConsumerLagHigh", "GovbusOutboxBacklog"} <= set(rules)

    def state() -> str:
        with urllib.request.urlopen(f"{observed.url}/api/v1/alerts", timeout=10) as resp:
            alerts = json.loads(resp.read())["data"]["alerts"]
        return next((a["state"] for a in alerts if a["labels"]["alertname"] ==
                     "GovbusRequestsUnanswered" and a["labels"].get("agency") == "hrss"), "")

    wait_until(lambda: state() == "pending", 60, "GovbusRequestsUnanswered{agency=hrss}")
