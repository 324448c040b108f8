"""Pure parts of the metrics and reports, without a broker or database: the replay guard of the
gate's counts, staleness, the evaluation arithmetic, scrape configs, dashboards and alert rules
referring only to metrics that exist, and the chart."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from prometheus_client.metrics import MetricWrapperBase

from govbus import prom, report_calc, report_render
from govbus.core import metrics
from govbus.core.errors import ConfigError
from govbus.core.event_counts import Judged, aggregate, countable
from govbus.stream_apps import ops_exporter
from govbus.stream_apps.ops_queries import staleness

UTC = dt.UTC


def judged(offsets: range, topic: str = "ingest.tax.tax_registration", partition: int = 0,
           outcome: str = "accepted") -> list[Judged]:
    return [Judged(topic, partition, o, "tax", "tax.tax_registration", outcome,
                   "" if outcome == "accepted" else "identifier.uscc") for o in offsets]


def test_first_batch_is_counted_and_guarded() -> None:
    keep, guards = countable(judged(range(0, 100)), {})
    assert len(keep) == 100 and guards == {("ingest.tax.tax_registration", 0): (0, 100)}


def test_a_replayed_batch_is_not_counted_twice() -> None:
    guard = {("ingest.tax.tax_registration", 0): (100, 200)}
    keep, guards = countable(judged(range(100, 250)), guard)  # replay + 50 new records
    assert [j.offset for j in keep] == list(range(200, 250))
    assert guards == {("ingest.tax.tax_registration", 0): (100, 250)}


def test_the_next_batch_and_other_partitions_count_in_full() -> None:
    guard = {("ingest.tax.tax_registration", 0): (100, 200)}
    batch = judged(range(200, 210)) + judged(range(0, 5), partition=1)
    keep, guards = countable(batch, guard)
    assert len(keep) == 15
    assert guards[("ingest.tax.tax_registration", 1)] == (0, 5)


def test_a_recreated_topic_counts_again() -> None:
    """A memory-only broker restarted: offsets begin again below the last batch."""
    keep, guards = countable(judged(range(3, 10)),
                             {("ingest.tax.tax_registration", 0): (500, 600)})
    assert len(keep) == 7 and guards[("ingest.tax.tax_registration", 0)] == (3, 10)


def test_aggregate_keeps_no_event_identity() -> None:
    counts = aggregate(judged(range(3)) + judged(range(3, 5), outcome="rejected"))
    assert counts == {("tax", "tax.tax_registration", "accepted", ""): 3,
                      ("tax", "tax.tax_registration", "rejected", "identifier.uscc"): 2}


def test_staleness_against_the_update_period() -> None:
    now = dt.datetime(2026, 3, 10, 12, tzinfo=UTC)
    rows = [("tax", "tax.t", 7 * 86400.0, now - dt.timedelta(days=8), now.replace(year=2024)),
            ("hrss", "hrss.s", 30 * 86400.0, now - dt.timedelta(days=29), None),
            ("ps", "ps.p", 86400.0, None, now - dt.timedelta(hours=2)),
            ("ca", "ca.m", 86400.0, None, None)]
    families = {name: rows for name, _help, _labels, rows in staleness(rows, now)}
    assert families["govbus_resource_stale"] == [("tax", "tax.t", 1), ("hrss", "hrss.s", 0),
                                                 ("ps", "ps.p", 0), ("ca", "ca.m", 0)]
    assert families["govbus_resource_seconds_since_update"][0][2] == 8 * 86400
    assert families["govbus_resource_seconds_since_update"][2][2] == 7200


@pytest.mark.parametrize(("days", "period_days", "expected"), [
    ([], 7, (0, 52)),                                       # 52 complete weeks, none changed
    ([dt.date(2025, 1, 1), dt.date(2025, 1, 6)], 7, (1, 52)),  # same window twice
    ([dt.date(2025, 12, 31)], 7, (1, 53)),                  # the running window, with a change
    ([dt.date(2024, 12, 31), dt.date(2026, 1, 1)], 1, (0, 365)),  # outside the year
    ([dt.date(2025, 1, 1)], 0.5, (1, 365)),                 # under a day counts as a day
])
def test_timeliness_windows(days: list[dt.date], period_days: float,
                            expected: tuple[int, int]) -> None:
    assert report_calc.timeliness(days, period_days * 86400, dt.date(2025, 1, 1),
                                  dt.datetime(2026, 1, 1, tzinfo=UTC)) == expected


def test_the_running_day_is_not_a_missed_window() -> None:
    today, at = dt.date(2026, 11, 25), dt.datetime(2026, 11, 25, 10, 43, tzinfo=UTC)
    assert report_calc.timeliness([], 86400, today, at) == (0, 0)
    assert report_calc.timeliness([today], 86400, today, at) == (1, 1)
    assert report_calc.timeliness([], 86400, today - dt.timedelta(days=1), at) == (0, 1)


def test_responsiveness_counts_late_answers_and_overdue_silence() -> None:
    t0 = dt.datetime(2025, 5, 1, tzinfo=UTC)
    day = dt.timedelta(days=1)
    r = report_calc.responsiveness([
        (t0, t0 + day, t0 + 5 * day),            # in time, 24 h
        (t0, t0 + 7 * day, t0 + 5 * day),        # late, 168 h
        (t0, None, t0 + 5 * day),                # silent past its deadline: late
        (t0, None, t0 + 90 * day),               # not due yet: not late
    ], at=t0 + 30 * day)
    assert r.as_dict() == {"count": 4, "answered": 2, "late": 2, "median_hours": 96.0,
                           "mean_hours": 96.0}
    assert report_calc.on_time_share([r]) == 0.5
    assert report_calc.on_time_share([report_calc.Response()]) is None


def test_stale_needs_a_catalogued_resource() -> None:
    at = dt.datetime(2026, 1, 1, tzinfo=UTC)
    assert report_calc.is_stale(None, at - dt.timedelta(days=2), 86400, at)
    assert not report_calc.is_stale(None, at + dt.timedelta(days=2), 86400, at)
    assert not report_calc.is_stale(at - dt.timedelta(hours=1), None, 86400, at)


def test_metrics_port_is_checked() -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GOVBUS_METRICS_PORT", "ninety")
        with pytest.raises(ConfigError, match="GOVBUS_METRICS_PORT='ninety'"):
            metrics.metrics_port()
        mp.setenv("GOVBUS_METRICS_PORT", "70000")
        with pytest.raises(ConfigError, match="out of range"):
            metrics.metrics_port()
        mp.setenv("GOVBUS_METRICS_PORT", "")
        assert metrics.metrics_port() is None


def test_scrape_config_lists_every_target_with_its_component() -> None:
    config = json.loads(prom.scrape_config({"gate": 19400, "router": 19401}, 2))  # JSON is YAML
    assert config["global"]["scrape_interval"] == "2s"
    assert config["rule_files"] == [str(prom.ALERT_RULES)]
    assert config["scrape_configs"][0]["static_configs"] == [
        {"targets": ["127.0.0.1:19400"], "labels": {"component": "gate"}},
        {"targets": ["127.0.0.1:19401"], "labels": {"component": "router"}}]


def defined_metrics() -> set[str]:
    """Every series name govbus exposes: process metrics and the exporter's gauges."""
    names = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                names |= {s.name for s in family.samples} | {family.name}
                names |= {family.name + suffix for suffix in ("_total", "_bucket", "_sum",
                                                               "_count")}
    names |= {name for name, *_ in ops_exporter._DB_GAUGES.values()}
    names |= {name for name, *_ in staleness([], dt.datetime.now(UTC))}
    return names | {"govbus_ops_source_up", *ops_exporter.CONSUMER_GAUGES}


def referenced(expr: str) -> set[str]:
    return set(re.findall(r"\bgovbus_[a-z_]+\b", expr))


@pytest.mark.parametrize("dashboard", ["ops.json", "information-center.json"])
def test_dashboards_query_only_metrics_that_exist(dashboard: str) -> None:
    queries = prom.dashboard_queries(prom.DASHBOARDS / dashboard)
    assert len(queries) >= 10
    known = defined_metrics()
    for title, expr in queries:
        assert referenced(expr) <= known, (title, referenced(expr) - known)
    assert json.loads((prom.DASHBOARDS / dashboard).read_text())["uid"].startswith("govbus")


def test_alert_rules_refer_only_to_metrics_that_exist() -> None:
    text = prom.ALERT_RULES.read_text()  # promtool checks the syntax (make check-prometheus)
    assert text.count("- alert: ") >= 6
    assert referenced(text) - defined_metrics() == set()


def test_metric_names_follow_the_convention() -> None:
    for name in defined_metrics():
        assert re.fullmatch(r"govbus_[a-z]+(_[a-z]+)+", name), name


def test_chart_says_no_data_rather_than_zero() -> None:
    svg = report_render.bar_chart("T", [("tax", None), ("hrss", 95.0), ("ps", 50.0)])
    assert "no data" in svg and "#2e8b57" in svg and "#c0392b" in svg
    assert "<script" not in svg
