"""Prometheus metrics: every metric of every govbus process is defined here, once.

Names follow ``govbus_<component>_<what>_<unit|total>``; labels are bounded by the catalogue
(agency, resource, share class, rule, channel, consumer group) and never carry an event,
person or company id. Each long-running process calls :func:`serve` at start-up: with
``GOVBUS_METRICS_PORT`` set (``govbus up`` picks a free port per process and records it in
``runtime.json``, from which the scrape targets are generated) it exposes ``/metrics`` there.

Why counters in the processes and gauges in the ops exporter: counters (events, rejections,
deliveries) and the latency histogram are facts only the stream loop sees; open cases, overdue
requests, staleness and consumer lag are facts of PostgreSQL and the broker, read at scrape
time by :mod:`govbus.stream_apps.ops_exporter`, so the reconciler and the control plane need no code
for them.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from govbus.core.settings_spec import Metrics

# --- the gate (Art. 7, 8, 12) -------------------------------------------------------------
GATE_EVENTS = Counter(
    "govbus_gate_events_total", "Ingest events judged by the gate, by outcome",
    ["agency", "resource", "outcome"])  # outcome: accepted | rejected
GATE_REJECTIONS = Counter(
    "govbus_gate_rejections_total", "Events rejected to the DLQ, by first violated rule",
    ["agency", "rule"])

# --- routing (Art. 15, 17, 25) ------------------------------------------------------------
ROUTER_EVENTS = Counter(
    "govbus_router_events_total", "Validated events routed", ["agency", "resource"])
ROUTER_DELIVERIES = Counter(
    "govbus_router_deliveries_total", "Deliveries acknowledged by the broker",
    ["provider", "recipient", "resource", "share_class"])
ROUTER_WITHHELD = Counter(
    "govbus_router_withheld_total", "Events of not-shared resources that reached nobody",
    ["agency", "resource", "share_class"])
ROUTER_GRANTS = Gauge(
    "govbus_router_grants", "Grants (revoked ones too) in the router's last load of the "
    "control plane", ["group"])  # labelled, so only a hot-path process exports it
ROUTER_GRANTS_LOADED = Gauge(
    "govbus_router_grants_loaded_timestamp_seconds",
    "When the hot path last loaded the grants (a new grant takes effect from then on)",
    ["group"])
DELIVERY_LATENCY = Histogram(
    "govbus_delivery_latency_seconds",
    "From the event's publish time (envelope ts_ms) to the broker's acknowledgement of its "
    "delivery", ["resource"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800))

# --- the delivery log (Art. 24, 31) ---------------------------------------------------------
LOG_RECORDS = Counter(
    "govbus_delivery_log_records_total", "Deliveries appended to the delivery log, by outcome",
    ["outcome"])  # written | duplicate (a replayed batch's, already logged)
LOG_LOCK_WAIT = Histogram(
    "govbus_delivery_log_lock_wait_seconds",
    "How long a batch's log writer waited for its shards' locks (another writer of the same "
    "shard; none while each ingest partition is owned by one worker)",
    buckets=(0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30))

# --- the HTTP service (`govbus serve`) --------------------------------------------------------
API_REQUESTS = Counter("govbus_api_requests_total", "HTTP requests the service answered",
                       ["method", "route", "status"])  # route: its template, /v1/cases/{case_id}
API_LATENCY = Histogram("govbus_api_request_seconds", "time to answer an HTTP request",
                        ["method", "route"],
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
API_RATE_LIMITED = Counter("govbus_api_rate_limited_total", "calls refused with 429, per "
                           "agency and limit", ["agency", "limit"])

# --- the outbox adapter -------------------------------------------------------------------
OUTBOX_PUBLISHED = Counter(
    "govbus_outbox_published_total", "Outbox rows published and acknowledged",
    ["agency", "resource"])
OUTBOX_SET_ASIDE = Counter(
    "govbus_outbox_set_aside_total", "Outbox rows set aside because they break the contract",
    ["agency", "resource"])
OUTBOX_BACKLOG = Gauge(
    "govbus_outbox_backlog", "Outbox rows not yet published", ["agency", "resource"])
OUTBOX_SLOT_LAG = Gauge(
    "govbus_outbox_slot_lag_bytes", "WAL held back by a logical capture's replication slot "
    "(server position minus the slot's confirmed one)", ["agency", "resource"])

# --- reconciliation (Art. 8, 19, 20) ------------------------------------------------------
RECONCILE_FEED = Counter(
    "govbus_reconcile_feed_events_total", "Validated events read by the reconcile feed",
    ["outcome"])  # fed | no_canonical_values | undecodable
RECONCILE_CASES = Counter(
    "govbus_reconcile_case_messages_total", "Case messages emitted by the reconciler",
    ["attribute", "status"])  # status: open | closed
RECONCILER_VALUES = Counter(
    "govbus_reconciler_values_total", "Value messages read by the reconciler",
    ["outcome"])  # applied | malformed (a record that is no value message or bundle)
CASES_SINK_RECORDS = Counter(
    "govbus_cases_sink_records_total", "Case messages read by the cases sink", ["outcome"])
CHECKPOINTS = Counter(
    "govbus_log_checkpoints_total", "Signed checkpoints of the delivery log and the audit ledger")
SUBSCRIBER_REFUSED = Counter(
    "govbus_subscriber_refused_total",
    "Deliveries a subscriber refused: not signed by the bus, or changed after signing "
    "(never applied, never confirmed)", ["agency", "rule"])

# --- every batch loop ---------------------------------------------------------------------
BATCH_RETRIES = Counter(
    "govbus_batch_retries_total", "Batches rewound after a database or broker failure",
    ["component"])
OFFSET_COMMIT_FAILURES = Counter(
    "govbus_offset_commit_failures_total",
    "Asynchronous offset commits the broker refused (the batch is replayed after a restart)",
    ["component"])
RECORDS_SET_ASIDE = Counter(
    "govbus_records_set_aside_total",
    "Output records refused for good (too large, invalid) and set aside instead of retried",
    ["error"])
QUARANTINED = Counter(
    "govbus_quarantined_records_total",
    "Payloads filed in the quarantine table for their provider, by stage (gate, produce)",
    ["agency", "stage"])

# --- deadlines in working days (Art. 20, 31) ----------------------------------------------
WORKDAY_FALLBACK = Counter(
    "govbus_workday_calendar_fallback_total",
    "Deadline computations for a year neither chinese-calendar nor GOVBUS_HOLIDAYS_FILE covers "
    "(Monday to Friday assumed, holidays ignored)", ["year"])


def observe_many(child: Any, amounts: Sequence[float]) -> None:
    """``child.observe(a)`` for every amount, with one increment per bucket and one of the
    sum, not one of each per amount: the hot path times every delivery, and observing them one
    by one was a twentieth of its interpreter lock (py-spy ``--gil``). Uses the histogram
    child's bucket bounds and values (prometheus-client 0.20-0.26); a child without them is
    observed one by one. ``tests/unit/stream_apps/test_stage_metrics.py`` checks both give the same
    exposition."""
    bounds = getattr(child, "_upper_bounds", None)
    buckets = getattr(child, "_buckets", None)
    total = getattr(child, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for amount in amounts:
            child.observe(amount)
        return
    for i, n in Tally(bisect_left(bounds, a) for a in amounts).items():
        buckets[i].inc(n)  # the first bucket whose bound is >= the amount, as observe()
    total.inc(sum(amounts))


def metrics_port() -> int | None:
    """``GOVBUS_METRICS_PORT``: where to serve ``/metrics``; unset or empty: nowhere."""
    return Metrics.from_env().metrics_port


def serve(port: int | None = None, addr: str | None = None) -> int | None:
    """Expose ``/metrics`` on ``port`` (default: ``GOVBUS_METRICS_PORT``); returns it."""
    port = port if port is not None else metrics_port()
    if port is not None:
        start_http_server(port, addr=addr or metrics_addr())
    return port


def metrics_addr() -> str:
    """``GOVBUS_METRICS_ADDR``: the interface to listen on (0.0.0.0 in containers)."""
    return Metrics.from_env().metrics_addr
