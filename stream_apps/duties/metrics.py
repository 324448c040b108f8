"""The duties app's metrics, ``govbus_duties_*``; labels bounded by the notice rules' kinds."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CONTROL_EVENTS = Counter(
    "govbus_duties_control_events_total", "Control events published to govbus.control, by "
    "origin (ledger: the relay; timer: a fact of time) and kind", ["origin", "kind"])
TIMER_EVENTS = Counter(
    "govbus_duties_timer_events_total", "Facts of time the timers published, by kind",
    ["kind"])
NOTICES = Counter(
    "govbus_duties_notices_total", "Notices sent to notices.<agency> and kept in the inbox, by "
    "kind (a replay counts again; the inbox and the topic's key keep one)", ["kind"])
SKIPPED = Counter(
    "govbus_duties_skipped_total", "Records of govbus.control that are no control event",
    [])
RELAY_POSITION = Gauge(
    "govbus_duties_relay_position", "The last audit-ledger seq relayed to govbus.control")
