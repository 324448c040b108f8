"""The ops exporter: what PostgreSQL and the broker know, as Prometheus gauges at scrape time.

One process (``python -m govbus.stream_apps.ops_exporter``, started by ``govbus up``) with a custom
collector: every scrape reads the catalogue, the gate's durable counts, requests, cases and
objections, and the consumer groups' committed offsets, so the numbers are never older than
the scrape and the reconciler and control plane need no metrics code of their own.

- staleness per resource against its catalogued update period (Art. 14, 31);
- pending and overdue sharing requests per providing agency (Art. 18, 31);
- open and overdue reconciliation cases per owning agency (Art. 19-20);
- unanswered and overdue objections and complaints per agency they concern (Art. 29);
- consumer lag per group (committed offset vs high watermark; Tansu undercounts watermarks,
  see README), and the sums of each group's committed and end offsets: a group whose commits
  stop while its input grows is stuck (``GovbusConsumerStalled``).

Tables of a stage not deployed yet (``cases``, ``objections``) are reported as
``govbus_ops_source_up{source=...} 0`` and their gauges are absent, not zero.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

import psycopg2
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client.core import REGISTRY, GaugeMetricFamily
from prometheus_client.registry import Collector

from govbus.core import db, metrics
from govbus.core.config import Settings
from govbus.core.errors import GovbusError
from govbus.core.kafka import admin_config
from govbus.stream_apps.ops_queries import OPTIONAL_SOURCES, QUERIES, staleness

log = logging.getLogger("govbus.ops_exporter")


def _gauge(name: str, doc: str, labels: list[str],
           rows: list[tuple[Any, ...]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for *values, number in rows:
        family.add_metric([str(v) for v in values], float(number))
    return family


class OpsCollector(Collector):
    """Reads PostgreSQL and the broker on every scrape."""

    def __init__(self, settings: Settings, timeout: float = 5.0) -> None:
        self.settings, self.timeout = settings, timeout
        self._lock = threading.Lock()  # one scrape at a time: one connection, one admin

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            yield from self._database()
            yield from self._lag()

    def _database(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("govbus_ops_source_up",
                               "1 when the exporter could read the source", labels=["source"])
        try:
            conn = db.connect(self.settings.database_url, autocommit=True)
        except GovbusError as exc:
            log.warning("scrape without database: %s", exc)
            up.add_metric(["database"], 0)
            yield up
            return
        try:
            with conn.cursor() as cur:
                up.add_metric(["database"], 1)
                cur.execute("SELECT to_regclass('cases') IS NOT NULL, "
                            "to_regclass('objections') IS NOT NULL")
                present = dict(zip(OPTIONAL_SOURCES, cur.fetchone() or (), strict=True))
                for source in OPTIONAL_SOURCES:
                    up.add_metric([source], 1 if present.get(source) else 0)
                cur.execute(QUERIES["staleness"])
                stale = staleness(cur.fetchall(), dt.datetime.now(dt.UTC))
                for name, doc, labels, rows in stale:
                    yield _gauge(name, doc, labels, rows)
                for key, (metric, help_, needs) in _DB_GAUGES.items():
                    if needs and not present.get(needs):
                        continue
                    cur.execute(QUERIES[key])
                    yield _gauge(metric, help_, ["agency"], cur.fetchall())
        except psycopg2.Error as exc:
            log.warning("scrape query failed: %s", exc)
            up.add_metric(["query"], 0)
        finally:
            conn.close()
        yield up

    def _lag(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(CONSUMER_GAUGES[0],
                                   "Records not yet committed by a consumer group, summed over "
                                   "its partitions", labels=["group"])
        committed = GaugeMetricFamily(
            CONSUMER_GAUGES[1],
            "Sum of a consumer group's committed offsets: it stops moving when the group is "
            "stuck", labels=["group"])
        ends = GaugeMetricFamily(
            CONSUMER_GAUGES[2],
            "Sum of the end offsets of a consumer group's partitions: its input",
            labels=["group"])
        try:
            for group, (done, end) in consumer_offsets(self.settings, self.timeout).items():
                family.add_metric([group], max(0, end - done))
                committed.add_metric([group], done)
                ends.add_metric([group], end)
        except KafkaException as exc:
            log.warning("scrape without consumer lag: %s", exc)
        yield family
        yield committed
        yield ends


#: per consumer group: its lag, the sum of its committed offsets, the sum of its input's ends
CONSUMER_GAUGES = ("govbus_consumer_lag", "govbus_consumer_committed_offsets",
                   "govbus_consumer_input_offsets")
_DB_GAUGES = {  # query key: (metric, help, optional source)
    "requests_pending": ("govbus_requests_pending",
                         "Sharing requests awaiting the providing agency (Art. 18)", None),
    "requests_overdue": ("govbus_requests_overdue",
                         "Sharing requests past their working-day deadline (Art. 18, 31)", None),
    "cases_open": ("govbus_cases_open", "Open reconciliation cases by owning agency (Art. 19)",
                   "cases"),
    "cases_overdue": ("govbus_cases_overdue",
                      "Open reconciliation cases past their deadline (Art. 20)", "cases"),
    "objections_unanswered": ("govbus_objections_unanswered",
                              "Objections and complaints not answered yet (Art. 29)",
                              "objections"),
    "objections_overdue": ("govbus_objections_overdue",
                           "Objections and complaints past their deadline (Art. 29, 31)",
                           "objections"),
}


def watermark_config(settings: Settings) -> dict[str, Any]:
    """The config of the consumer that only reads high watermarks: it joins no group and
    commits nothing; the security settings are those of every client (``admin_config``)."""
    return admin_config(settings, **{"group.id": "govbus-ops-exporter",
                                     "enable.auto.commit": False})


def consumer_offsets(settings: Settings, timeout: float = 5.0) -> dict[str, tuple[int, int]]:
    """Per consumer group: (sum of its committed offsets, sum of those partitions' high
    watermarks). A group whose first stays while the second grows is stuck."""
    conf = admin_config(settings)  # the broker and the security settings of every client
    admin = AdminClient(conf)
    groups = admin.list_consumer_groups(request_timeout=timeout).result()
    names = sorted(g.group_id for g in groups.valid if g.group_id.startswith("govbus"))
    if not names:
        return {}
    watermarks = Consumer(watermark_config(settings))
    try:
        found: dict[str, tuple[int, int]] = {}
        for name in names:
            future = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(name)],
                                                       request_timeout=timeout)[name]
            done = end = 0
            for tp in future.result().topic_partitions or []:
                if tp.offset < 0:
                    continue
                _low, high = watermarks.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), timeout=timeout)
                done += tp.offset
                end += max(high, tp.offset)
            found[name] = (done, end)
        return found
    finally:
        watermarks.close()


def main() -> None:
    """``python -m govbus.stream_apps.ops_exporter``: serve the gauges until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s "
                        "%(message)s")
    try:
        settings = Settings.from_env()
        REGISTRY.register(OpsCollector(settings))
        port = metrics.serve()
    except GovbusError as exc:
        log.error("ops exporter not started: %s", exc)
        raise SystemExit(1) from exc
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("ops exporter serving /metrics on port %s", port)
    stop.wait()
    log.info("ops exporter stopped")


if __name__ == "__main__":
    main()
