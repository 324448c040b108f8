"""The duties app: a faust-streaming app whose agents tell agencies what concerns them and
whose timers act on the statutory deadlines (docs/operations.md, "Duties"; ADR 0012).

Read top to bottom: the app, its topics, the agent, the timers.

- ``relay_ledger`` (a timer, on the leader): the audit ledger's sealed rows after the relay's
  position become control events on ``govbus.control`` (:mod:`.work`).
- ``tell_agencies`` (the agent, over ``govbus.control``): each control event's notices
  (:func:`.notices.notices_for`) kept in the inbox and produced to ``notices.<agency>``, keyed
  by notice id. The event's offset is committed by faust after the agent has done both, so a
  ``kill -9`` before the commit replays it, and the replay keeps and sends the same ids.
- ``check_deadlines`` and ``check_yearly_duties`` (crontabs, Asia/Shanghai, on the leader):
  the facts of time (:mod:`.timers`) published to ``govbus.control`` once each.

On the embedded broker (Tansu) faust works over its ``kafka://`` transport, with a 6 s session
and a 0.5 s heartbeat (a first join in ~4 s rather than ~23 s); faust's web server is off,
the metrics are served by prometheus-client on ``GOVBUS_METRICS_PORT`` like every stage's.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import faust
from aiokafka.errors import KafkaError

from govbus.core import metrics, topics
from govbus.core.catalogue import load_catalogue
from govbus.core.config import Settings
from govbus.core.errors import BrokerError, DatabaseError, GovbusError
from govbus.core.kafka import ensure_topics, kafka_security
from govbus.stream_apps.duties import timers
from govbus.stream_apps.duties.events import ControlEvent
from govbus.stream_apps.duties.metrics import NOTICES, SKIPPED
from govbus.stream_apps.duties.notices import CENTER, OFFICE, Notice, notices_for
from govbus.stream_apps.duties.work import Clock, Work, utc_now

log = logging.getLogger("govbus.duties")
APP_ID = "govbus-duties"  # also its consumer group (the ACL plan's govbus- groups)
RELAY_S = 0.5  # how often the relay looks at the ledger: a notice within seconds (Art. 18)
DEADLINES_CRON = "*/5 * * * *"  # deadlines approaching and passed, every five minutes
YEARLY_CRON = "7 * * * *"  # reviews, staleness, expiries, the yearly reports: hourly
RETRY_S = 2.0  # after a PostgreSQL or broker failure, the event is tried again


def credentials(settings: Settings) -> Any:
    """faust's credentials for the security settings every govbus client uses (None:
    PLAINTEXT)."""
    conf = kafka_security(settings)
    protocol = conf.get("security.protocol", "PLAINTEXT")
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=conf.get("ssl.ca.location"))
        if conf.get("ssl.certificate.location"):
            context.load_cert_chain(conf["ssl.certificate.location"],
                                    conf.get("ssl.key.location"),
                                    conf.get("ssl.key.password"))
    if protocol.startswith("SASL_"):
        return faust.SASLCredentials(username=conf.get("sasl.username"),
                                     password=conf.get("sasl.password"),
                                     mechanism=conf.get("sasl.mechanism", "PLAIN"),
                                     ssl_context=context)
    return faust.SSLCredentials(context) if context else None


def broker_urls(bootstrap: str) -> str:
    """``h1:9092,h2:9092`` as faust names brokers: ``kafka://h1:9092;kafka://h2:9092``."""
    return ";".join(f"kafka://{h.strip()}" for h in bootstrap.split(",") if h.strip())


def make_app(settings: Settings) -> faust.App:
    """The faust app on the broker of ``settings``, nothing registered on it yet."""
    return faust.App(
        APP_ID, broker=broker_urls(settings.bootstrap_servers), store="memory://",
        broker_credentials=credentials(settings),
        broker_session_timeout=6.0, broker_heartbeat_interval=0.5,
        consumer_auto_offset_reset="earliest", topic_partitions=settings.partitions,
        web_enabled=False, datadir=str(settings.state_dir / "duties"),
        timezone=timers.SHANGHAI, producer_acks=-1)


async def tell(work: Work, send: Any, event: ControlEvent) -> list[Notice]:
    """Keep and send every notice of ``event``; the notices."""
    told = notices_for(event)
    for notice in told:
        inbox_id = await asyncio.to_thread(work.keep, notice)
        await send(notice, inbox_id)
        NOTICES.labels(kind=event.kind).inc()
    return told


class Duties:
    """The app, its topics, agent and timers; ``clock`` is the timers' (a test's)."""

    def __init__(self, settings: Settings, drafter: timers.Drafter | None = None,
                 clock: Clock = utc_now, app: faust.App | None = None,
                 work: Work | None = None) -> None:
        self.settings = settings
        self.app = app or make_app(settings)
        self.work = work or Work(settings, drafter, clock)
        self.control_topic = self.app.topic(topics.CONTROL, key_type=bytes, value_type=bytes,
                                            key_serializer="raw", value_serializer="raw")
        self.notice_topics: dict[str, Any] = {}
        self.tell_agencies = self.app.agent(self.control_topic, name="tell_agencies")(
            self._tell_agencies)
        self.app.timer(RELAY_S, on_leader=True, name="relay_ledger")(self.relay_ledger)
        self.app.crontab(DEADLINES_CRON, timezone=timers.SHANGHAI, on_leader=True)(
            self.check_deadlines)
        self.app.crontab(YEARLY_CRON, timezone=timers.SHANGHAI, on_leader=True)(
            self.check_yearly_duties)

    def notices_topic(self, agency: str) -> Any:
        name = topics.notices(agency)
        if name not in self.notice_topics:
            self.notice_topics[name] = self.app.topic(
                name, key_type=bytes, value_type=bytes, key_serializer="raw",
                value_serializer="raw")
        return self.notice_topics[name]

    async def send(self, notice: Notice, inbox_id: int) -> None:
        """Produce ``notice`` to ``notices.<agency>``, keyed by its id; return once
        acknowledged."""
        fut = await self.notices_topic(notice.agency).send(
            key=notice.notice_id.encode(), value=notice.to_bytes(inbox_id))
        await fut

    async def _tell_agencies(self, stream: Any) -> AsyncIterator[int]:
        async for raw in stream:
            try:
                event = ControlEvent.from_bytes(raw)
            except ValueError as exc:
                SKIPPED.inc()
                log.warning("skipped a record of %s: %s", topics.CONTROL, exc)
                yield 0
                continue
            while True:
                try:
                    told = await tell(self.work, self.send, event)
                    break
                except (DatabaseError, BrokerError, KafkaError) as exc:
                    log.warning("notices of %s not kept, will retry: %s", event.event_id, exc)
                    await asyncio.sleep(RETRY_S)
            yield len(told)

    async def relay_ledger(self) -> None:
        try:
            await asyncio.to_thread(self.work.relay)
        except (DatabaseError, BrokerError) as exc:
            log.warning("relay deferred: %s", exc)

    async def check_deadlines(self) -> None:
        await self._timers(yearly=False)

    async def check_yearly_duties(self) -> None:
        await self._timers(yearly=True)

    async def _timers(self, yearly: bool) -> None:
        try:
            published = await asyncio.to_thread(self.work.timers, None, yearly)
            if published:
                log.info("timers published %d control events", len(published))
        except (DatabaseError, BrokerError) as exc:
            log.warning("timers deferred: %s", exc)


def prepare(settings: Settings, agencies: list[str]) -> None:
    """The topics the app reads and writes, with their configs (compacted, keyed by id)."""
    ensure_topics(settings, [topics.CONTROL, *(topics.notices(a) for a in
                                               sorted({*agencies, CENTER, OFFICE}))])


def serve(make: Callable[[Settings], Duties]) -> None:
    """A duties app's ``python -m`` entry point: built from the environment, its topics
    made sure of, its metrics served, run by a faust worker until SIGTERM or SIGINT. A
    configuration or connection error at start exits 1 with one line saying why."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        settings = Settings.from_env()
        duties = make(settings)
        prepare(settings, sorted(load_catalogue(settings.schemas_dir).agencies))
        metrics.serve()  # on the port `govbus up` assigned (GOVBUS_METRICS_PORT), if any
    except GovbusError as exc:
        log.error("duties not started: %s", exc)
        raise SystemExit(1) from exc
    log.info("duties started: agent over %s, relay every %g s, timers %r and %r (%s)",
             topics.CONTROL, RELAY_S, DEADLINES_CRON, YEARLY_CRON, timers.SHANGHAI)
    worker = faust.Worker(duties.app, loglevel="INFO", redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    finally:
        duties.work.close()
