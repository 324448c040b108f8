"""The duties app's blocking work, run in threads off faust's event loop: the relay from the
audit ledger to ``govbus.control``, the timers' sweeps, and keeping a notice.

- **The relay** (:meth:`Work.relay`) seals the audit ledger, reads the sealed rows after its
  position, publishes the control events they mean keyed by event id, waits for the broker's
  acknowledgement, and only then moves its position (``duty_relay_position``). Killed in
  between, it publishes the same events again under the same keys: nothing is lost and no
  notice is repeated (each notice's id derives from its event's).
- **The timers** (:meth:`Work.timers`) publish the facts of time not published before
  (``duty_timer_events``), then record them: a timer that fires twice publishes once.
- **A notice** (:meth:`Work.keep`) is kept in its agency's inbox once (``notice_id``) and its
  topic made sure of; the agent then produces it to ``notices.<agency>``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaException, Producer

from govbus.core import db, topics
from govbus.core.config import Settings
from govbus.core.errors import BrokerError
from govbus.core.kafka import KnownTopics, producer_config
from govbus.delivery_log import audit
from govbus.stream_apps.duties import store, timers
from govbus.stream_apps.duties.events import ControlEvent, from_change
from govbus.stream_apps.duties.metrics import CONTROL_EVENTS, RELAY_POSITION, TIMER_EVENTS
from govbus.stream_apps.duties.notices import Notice

log = logging.getLogger("govbus.duties")
RELAY_BATCH = 500  # ledger rows per round: a burst of decisions is relayed in a few rounds
Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Work:
    """The duties app's PostgreSQL and relay work, for one process."""

    def __init__(self, settings: Settings, drafter: timers.Drafter | None = None,
                 clock: Clock = utc_now) -> None:
        self.settings, self.dsn = settings, settings.database_url
        self.drafter, self.clock = drafter, clock
        self.db = db.Reused(self.dsn)
        self.inbox_db = db.Reused(self.dsn)  # the agent's, so it never waits for the relay
        self.producer = Producer(producer_config(settings))
        self.topics = KnownTopics(settings)
        self.stats: Counter[str] = Counter()

    def publish(self, events: Sequence[ControlEvent], origin: str) -> None:
        """Produce ``events`` to ``govbus.control``, keyed by id; return once acknowledged."""
        if not events:
            return
        errors: list[str] = []

        def answered(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        try:
            for event in events:
                self.producer.produce(topics.CONTROL, key=event.event_id.encode(),
                                      value=event.to_bytes(), on_delivery=answered)
                self.producer.poll(0)
        except (KafkaException, BufferError) as exc:
            raise BrokerError(f"cannot produce control events: {exc}") from exc
        if self.producer.flush(30) or errors:
            raise BrokerError(f"control events not acknowledged: {errors[:2]}")
        for event in events:
            CONTROL_EVENTS.labels(origin=origin, kind=event.kind).inc()
        self.stats[f"{origin}_events"] += len(events)

    def relay(self) -> int:
        """One round of the relay; the number of ledger rows passed."""
        with self.db.use("cannot read the audit ledger") as conn:
            audit.seal(conn)
            changes = store.changes_after(conn, store.position(conn), RELAY_BATCH)
        if not changes:
            return 0
        self.publish([e for change, actor in changes for e in from_change(change, actor)],
                     "ledger")
        last = changes[-1][0].seq
        with self.db.use("cannot record the relay's position") as conn:
            store.advance(conn, last)
        RELAY_POSITION.set(last)
        return len(changes)

    def timers(self, now: dt.datetime | None = None, yearly: bool = True) -> list[str]:
        """The facts of time at ``now`` (default: the clock's) published once; their ids.
        ``yearly``: the reviews, staleness, expiries and yearly reports too, not only the
        deadlines."""
        now = now or self.clock()
        with self.db.use("cannot read the deadlines") as conn:
            found = {e.event_id: e for e in timers.sweep(
                conn, self.dsn, now, self.drafter if yearly else None, upkeep=yearly)}
            fresh = store.unpublished(conn, list(found))
        events = [e for i, e in found.items() if i in fresh]
        self.publish(events, "timer")
        with self.db.use("cannot record the timers' events") as conn:
            store.mark_published(conn, [e.event_id for e in events])
        for event in events:
            TIMER_EVENTS.labels(kind=event.kind).inc()
        return [e.event_id for e in events]

    def keep(self, notice: Notice) -> int:
        """``notice`` in its agency's inbox (once) and its topic there; the inbox row's id."""
        self.topics.ensure([topics.notices(notice.agency)])
        with self.inbox_db.use("cannot keep a notice") as conn:
            return store.to_inbox(conn, notice)

    def close(self) -> None:
        self.producer.flush(10)
        self.db.close()
        self.inbox_db.close()
