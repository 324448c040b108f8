"""SQL of the ops exporter, and the staleness rule (pure, unit-tested).

Every per-agency query lists every agency of the catalogue, with 0 where nothing is pending,
so a dashboard shows an explicit 0 and an alert can tell "none" from "not measured".
"""

from __future__ import annotations

import datetime as dt
from typing import Any

OPTIONAL_SOURCES = ("cases", "objections")  # tables of the reconciler

_AGENCIES = "WITH agencies AS (SELECT DISTINCT provider AS agency FROM catalogue_resources) "


def _per_agency(sub: str) -> str:
    return _AGENCIES + f"SELECT a.agency, ({sub}) FROM agencies a ORDER BY a.agency"


QUERIES = {
    "staleness": """
        SELECT c.provider, c.resource_id, extract(epoch FROM c.update_period)::float8,
               (SELECT max(e.last_at) FROM event_counts e
                 WHERE e.resource_id = c.resource_id AND e.outcome = 'accepted'),
               (SELECT min(s.registered_at) FROM schema_versions s
                 WHERE s.resource_id = c.resource_id)
        FROM catalogue_resources c ORDER BY c.resource_id""",
    "requests_pending": _per_agency(
        "SELECT count(*) FROM sharing_requests r JOIN catalogue_resources c USING "
        "(resource_id) WHERE c.provider = a.agency AND r.status = 'pending'"),
    "requests_overdue": _per_agency(
        "SELECT count(*) FROM sharing_requests r JOIN catalogue_resources c USING "
        "(resource_id) WHERE c.provider = a.agency AND r.status = 'pending' "
        "AND r.due_at < now()"),
    "cases_open": _per_agency(
        "SELECT count(*) FROM cases k WHERE k.owner_agency = a.agency AND k.status = 'open'"),
    "cases_overdue": _per_agency(
        "SELECT count(*) FROM cases k WHERE k.owner_agency = a.agency AND k.status = 'open' "
        "AND k.deadline < now()"),
    "objections_unanswered": _per_agency(
        "SELECT count(*) FROM objections o WHERE o.against_agency = a.agency "
        "AND o.answered_at IS NULL"),
    "objections_overdue": _per_agency(
        "SELECT count(*) FROM objections o WHERE o.against_agency = a.agency "
        "AND o.answered_at IS NULL AND o.deadline < now()"),
}

Family = tuple[str, str, list[str], list[tuple[Any, ...]]]  # name, help, labels, rows


def staleness(rows: list[tuple[Any, ...]], now: dt.datetime) -> list[Family]:
    """Per resource: its update period, seconds since its last accepted change, stale or not.

    ``rows``: (provider, resource, period seconds, last accepted change or None, registered
    or None). A resource that never changed counts from its registration in the catalogue:
    the duty to update (Art. 14) starts when the resource is catalogued.
    """
    period, since, stale = [], [], []
    for provider, resource, period_s, last, registered in rows:
        start = last or registered or now
        age = max(0.0, (now - start).total_seconds())
        period.append((provider, resource, period_s))
        since.append((provider, resource, age))
        stale.append((provider, resource, 1 if age > float(period_s) else 0))
    labels = ["agency", "resource"]
    return [("govbus_resource_update_period_seconds",
             "The catalogued update period of the resource (Art. 7, 14)", labels, period),
            ("govbus_resource_seconds_since_update",
             "Seconds since the resource's last accepted change (or its registration)", labels,
             since),
            ("govbus_resource_stale",
             "1 when the resource has not changed within its update period (Art. 14, 31)",
             labels, stale)]
