"""Retention: what ``govbus purge`` deletes, and what it never does (Art. 25; docs/retention.md).

Three kinds of rows hold personal data longer than their purpose needs unless purged:

- ``govbus_outbox.events`` (in the *agency's* database): **published** rows whose
  ``published_at`` is older than ``GOVBUS_OUTBOX_RETENTION_DAYS``. A row not published (waiting,
  or refused with ``rejected_at``) is never purged: it is a change the bus has not carried.
- ``reconcile_state``: entities whose state was last written (``last_seen``) before
  ``GOVBUS_RECONCILE_STATE_RETENTION_DAYS``. Kept whatever its age: an entity with an open case,
  in its state (``"o"``) or in the ``cases`` table (Art. 20: the case stays open until its owner
  or newer values close it). An entity whose state remembers the key of a closed case (``"r"``)
  is not deleted but *reduced* to those keys, without any value: the key makes a disagreement
  that comes back open a new case (generation ``.1``, ``.2``) instead of the closed one, which
  the cases sink would refuse to reopen (the case would be lost).
- ``quarantine``: payloads set aside before ``GOVBUS_QUARANTINE_RETENTION_DAYS``.
- ``accepted_events``: ids (and digests, no values) of events accepted before
  ``GOVBUS_ACCEPTED_EVENTS_RETENTION_DAYS``; an id older than that is no longer recognised
  when it is reused for another record (Art. 19).

The delivery log (``deliveries``) is never purged here: it is the record of who received what.

Every table is purged in batches (``BATCH`` rows per transaction, keyset over the primary key,
``FOR UPDATE SKIP LOCKED``): no lock is held for long, a row another transaction is writing is
left for the next run, and an interrupted purge has committed whole batches only. A dry run
counts with the same queries and decisions and writes nothing.

The cut-off and the decision on a reconciler state are pure functions (unit-tested); every
statement is in this module.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import orjson
import psycopg2
import psycopg2.errors
import psycopg2.extras

from govbus.core import db
from govbus.core.errors import DatabaseError, GovbusError

BATCH = 10_000
MAX_DAYS = 36500
TABLES = ("outbox", "reconcile_state", "quarantine", "accepted_events")
SETTINGS = {"outbox": "GOVBUS_OUTBOX_RETENTION_DAYS",
            "reconcile_state": "GOVBUS_RECONCILE_STATE_RETENTION_DAYS",
            "quarantine": "GOVBUS_QUARANTINE_RETENTION_DAYS",
            "accepted_events": "GOVBUS_ACCEPTED_EVENTS_RETENTION_DAYS"}

Progress = Callable[[str, int], None]  # (table, rows handled so far)


class RetentionError(GovbusError):
    """A retention or a cut-off that cannot be applied."""


# --- date arithmetic ---------------------------------------------------------------------

def check_days(setting: str, days: object) -> int:
    """``days`` as a retention of ``setting``: an integer from 1 to 36500 (100 years)."""
    if isinstance(days, bool) or not isinstance(days, int):
        raise RetentionError(f"{setting}={days!r} is not a whole number of days")
    if not 1 <= days <= MAX_DAYS:
        raise RetentionError(f"{setting}={days} is out of range [1, {MAX_DAYS}]: a retention "
                             "of 0 would purge what was just written (Art. 25 asks for no "
                             "longer than needed, not for nothing)")
    return days


def cutoff(now: dt.datetime, days: int, setting: str = "retention") -> dt.datetime:
    """The instant before which rows are purged: ``days`` whole days of 24 h before ``now``
    (an aware time; in UTC). A row exactly at the cut-off is kept."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise RetentionError("the purge's clock must be an aware time (UTC), not a naive one")
    return (now - dt.timedelta(days=check_days(setting, days))).astimezone(dt.UTC)


# --- the reconciler's state ----------------------------------------------------------------

KEEP, DELETE, REDUCE = "keep", "delete", "reduce"


def state_decision(state: Any) -> tuple[str, dict[str, Any] | None]:
    """What the purge does with one old entity state (``{attribute: {"v", "o", "c", "r"}}``,
    see :mod:`govbus.stream_apps.reconcile_rules`): ``(KEEP, None)`` when an attribute has an
    open case, when it is only closed-case keys already, or when it cannot be read (fail
    closed); ``(REDUCE, state)`` with only the closed-case keys (``"r"``) when it has any;
    else ``(DELETE, None)``."""
    if not isinstance(state, dict) or not all(isinstance(s, dict) for s in state.values()):
        return KEEP, None
    if any(s.get("o") for s in state.values()):
        return KEEP, None
    reduced = {attr: {"r": s["r"]} for attr, s in state.items() if s.get("r")}
    if not reduced:
        return DELETE, None
    if reduced == state:
        return KEEP, None
    return REDUCE, reduced


# --- results -------------------------------------------------------------------------------

@dataclass
class Result:
    """What one purge did (or, in a dry run, would do) to one table."""

    table: str
    database: str                 # redacted DSN
    setting: str
    days: int
    cutoff: str                   # ISO 8601, UTC
    dry_run: bool
    deleted: int = 0
    reduced: int = 0              # reconcile_state: values dropped, closed-case keys kept
    kept_open_case: int = 0       # reconcile_state: older than the cut-off, kept (Art. 20)
    skipped: str | None = None    # why the table was not purged

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- SQL: every statement of the purge -----------------------------------------------------

def _by_age(table: str, key: str, stamp: str) -> tuple[str, str]:
    """The count and the batched delete of ``table``'s rows whose ``stamp`` is before the
    cut-off, in ``key`` order after ``%(after)s``, skipping rows another transaction holds."""
    count = f"SELECT count(*) FROM {table} WHERE {stamp} < %(cutoff)s"
    delete = f"""
DELETE FROM {table} WHERE {key} IN (
    SELECT {key} FROM {table}
    WHERE {stamp} < %(cutoff)s AND {key} > %(after)s
    ORDER BY {key} LIMIT %(batch)s FOR UPDATE SKIP LOCKED)
RETURNING {key}
"""
    return count, delete


OUTBOX_COUNT, OUTBOX_DELETE = _by_age("govbus_outbox.events", "id", "published_at")
QUARANTINE_COUNT, QUARANTINE_DELETE = _by_age("quarantine", "id", "quarantined_at")
ACCEPTED_COUNT, ACCEPTED_DELETE = _by_age("accepted_events", "event_id", "accepted_at")
# the old states after a key, with whether the cases table has an open case of the entity
STATE_SELECT = """
SELECT rs.reconciler, rs.entity, rs.state,
       EXISTS (SELECT 1 FROM cases c WHERE c.entity_key = rs.entity AND c.status = 'open')
FROM reconcile_state rs
WHERE rs.last_seen < %(cutoff)s AND (rs.reconciler, rs.entity) > (%(r)s, %(e)s)
ORDER BY rs.reconciler, rs.entity LIMIT %(batch)s
"""
STATE_LOCK = " FOR UPDATE OF rs SKIP LOCKED"
STATE_DELETE = """
DELETE FROM reconcile_state rs USING unnest(%s::text[], %s::text[]) AS d(reconciler, entity)
WHERE rs.reconciler = d.reconciler AND rs.entity = d.entity
"""
STATE_REDUCE = """
UPDATE reconcile_state rs SET state = d.state
FROM (VALUES %s) AS d(reconciler, entity, state)
WHERE rs.reconciler = d.reconciler AND rs.entity = d.entity
"""


# --- purges --------------------------------------------------------------------------------

def _now(now: dt.datetime | None) -> dt.datetime:
    return now or dt.datetime.now(dt.UTC)


def _check_batch(batch: int) -> int:
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise RetentionError(f"batch size {batch!r}: at least 1 row per transaction")
    return batch


def _by_id(dsn: str, table: str, count_sql: str, delete_sql: str, result: Result,
           batch: int, progress: Progress | None, start: Any = 0) -> Result:
    """Delete the rows ``delete_sql`` selects, ``batch`` per transaction, in id order."""
    when = dt.datetime.fromisoformat(result.cutoff)
    if result.dry_run:
        with db.transaction(dsn) as conn, conn.cursor() as cur:
            cur.execute(count_sql, {"cutoff": when})
            result.deleted = int(cur.fetchone()[0])
        return result
    after = start
    while True:
        with db.transaction(dsn) as conn, conn.cursor() as cur:
            cur.execute(delete_sql, {"cutoff": when, "after": after, "batch": batch})
            ids = [row[0] for row in cur.fetchall()]
        result.deleted += len(ids)
        if ids and progress:
            progress(table, result.deleted)
        if len(ids) < batch:
            return result
        after = max(ids)


def _guarded(what: str, dsn: str, run: Callable[[], Result]) -> Result:
    try:
        return run()
    except psycopg2.Error as exc:
        hint = ("; run the migrations (`govbus catalogue sync` or `govbus up`)" if isinstance(
            exc, psycopg2.errors.UndefinedTable | psycopg2.errors.UndefinedColumn) else "")
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # not the SQL
        raise DatabaseError(f"cannot purge {what} at {db.redact(dsn)}: {first}{hint}") from exc


def purge_outbox(agency_dsn: str, days: int, *, now: dt.datetime | None = None,
                 dry_run: bool = False, batch: int = BATCH,
                 progress: Progress | None = None) -> Result:
    """Delete the agency's published outbox rows older than ``days``; unpublished rows stay."""
    setting = SETTINGS["outbox"]
    result = Result("govbus_outbox.events", db.redact(agency_dsn), setting, days,
                    cutoff(_now(now), days, setting).isoformat(), dry_run)
    _check_batch(batch)
    try:
        return _guarded("the outbox", agency_dsn, lambda: _by_id(
            agency_dsn, "govbus_outbox.events", OUTBOX_COUNT, OUTBOX_DELETE, result, batch,
            progress))
    except DatabaseError as exc:
        if isinstance(exc.__cause__, psycopg2.errors.UndefinedTable):
            raise RetentionError(f"no outbox at {db.redact(agency_dsn)} (govbus_outbox.events "
                                 "does not exist): --outbox-dsn names the agency database "
                                 "where `govbus outbox -- --install` ran") from exc
        raise


def purge_quarantine(dsn: str, days: int, *, now: dt.datetime | None = None,
                     dry_run: bool = False, batch: int = BATCH,
                     progress: Progress | None = None) -> Result:
    """Delete quarantined payloads filed before ``days`` ago."""
    setting = SETTINGS["quarantine"]
    result = Result("quarantine", db.redact(dsn), setting, days,
                    cutoff(_now(now), days, setting).isoformat(), dry_run)
    _check_batch(batch)
    return _guarded("the quarantine", dsn, lambda: _by_id(
        dsn, "quarantine", QUARANTINE_COUNT, QUARANTINE_DELETE, result, batch, progress))


def purge_accepted_events(dsn: str, days: int, *, now: dt.datetime | None = None,
                          dry_run: bool = False, batch: int = BATCH,
                          progress: Progress | None = None) -> Result:
    """Delete the ids of events accepted before ``days`` ago."""
    setting = SETTINGS["accepted_events"]
    result = Result("accepted_events", db.redact(dsn), setting, days,
                    cutoff(_now(now), days, setting).isoformat(), dry_run)
    _check_batch(batch)
    return _guarded("accepted_events", dsn, lambda: _by_id(
        dsn, "accepted_events", ACCEPTED_COUNT, ACCEPTED_DELETE, result, batch, progress, ""))


def _state_batch(cur: Any, result: Result, when: dt.datetime, key: tuple[str, str],
                 batch: int) -> tuple[int, tuple[str, str]]:
    """Decide on (and unless a dry run, apply to) one batch of old states; returns how many
    rows were read and the last key."""
    sql = STATE_SELECT + ("" if result.dry_run else STATE_LOCK)
    cur.execute(sql, {"cutoff": when, "r": key[0], "e": key[1], "batch": batch})
    rows = cur.fetchall()
    gone: list[tuple[str, str]] = []
    reduced: list[tuple[str, str, str]] = []
    for reconciler, entity, raw, open_case in rows:
        try:
            state = orjson.loads(raw)
        except orjson.JSONDecodeError:
            state = None  # unreadable: kept (state_decision fails closed)
        decision, smaller = (KEEP, None) if open_case else state_decision(state)
        if decision == DELETE:
            gone.append((reconciler, entity))
        elif decision == REDUCE and smaller is not None:
            reduced.append((reconciler, entity, orjson.dumps(smaller).decode()))
        elif open_case or (isinstance(state, dict)
                           and any(isinstance(s, dict) and s.get("o") for s in state.values())):
            result.kept_open_case += 1
    if not result.dry_run:
        if gone:
            cur.execute(STATE_DELETE, ([g[0] for g in gone], [g[1] for g in gone]))
        if reduced:
            psycopg2.extras.execute_values(cur, STATE_REDUCE, reduced, page_size=1000)
    result.deleted += len(gone)
    result.reduced += len(reduced)
    return len(rows), ((rows[-1][0], rows[-1][1]) if rows else key)


def purge_reconcile_state(dsn: str, days: int, *, now: dt.datetime | None = None,
                          dry_run: bool = False, batch: int = BATCH,
                          progress: Progress | None = None) -> Result:
    """Delete (or reduce to closed-case keys) the states of entities not seen for ``days``;
    an entity with an open case keeps its state."""
    setting = SETTINGS["reconcile_state"]
    when = cutoff(_now(now), days, setting)
    result = Result("reconcile_state", db.redact(dsn), setting, days, when.isoformat(),
                    dry_run)
    _check_batch(batch)

    def run() -> Result:
        key = ("", "")
        while True:
            with db.transaction(dsn) as conn, conn.cursor() as cur:
                read, key = _state_batch(cur, result, when, key, batch)
            if read and progress:
                progress("reconcile_state", result.deleted + result.reduced)
            if read < batch:
                return result

    return _guarded("reconcile_state", dsn, run)


def quarantine_present(dsn: str) -> bool:
    """Is the ``quarantine`` table there (its migration applied)?"""
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('quarantine') IS NOT NULL")
        return bool(cur.fetchone()[0])


def purge(dsn: str, retention: dict[str, int], *, outbox_dsns: list[str] | tuple[str, ...] = (),
          only: list[str] | tuple[str, ...] = TABLES, now: dt.datetime | None = None,
          dry_run: bool = False, batch: int = BATCH,
          progress: Progress | None = None) -> list[Result]:
    """Apply every retention of ``retention`` (``{"outbox": days, ...}``, see
    :func:`govbus.core.config.retention_settings`) to the bus's database ``dsn`` and to each
    agency database in ``outbox_dsns``; ``only`` limits it to some of :data:`TABLES`."""
    unknown = sorted(set(only) - set(TABLES))
    if unknown:
        raise RetentionError(f"unknown table(s) {', '.join(unknown)}: one of "
                             f"{', '.join(TABLES)}")
    missing = sorted(set(only) - set(retention))
    if missing:
        raise RetentionError(f"no retention given for {', '.join(missing)}")
    days = {t: check_days(SETTINGS[t], retention[t]) for t in TABLES if t in retention}
    when = _now(now)
    kw: dict[str, Any] = {"now": when, "dry_run": dry_run, "batch": _check_batch(batch),
                          "progress": progress}
    results: list[Result] = []
    if "outbox" in only:
        for agency_dsn in outbox_dsns:
            results.append(purge_outbox(agency_dsn, days["outbox"], **kw))
        if not outbox_dsns:
            results.append(Result("govbus_outbox.events", "", SETTINGS["outbox"],
                                  days["outbox"],
                                  cutoff(when, days["outbox"]).isoformat(), dry_run,
                                  skipped="in the agencies' databases: name each with "
                                          "--outbox-dsn"))
    if "reconcile_state" in only:
        results.append(purge_reconcile_state(dsn, days["reconcile_state"], **kw))
    if "quarantine" in only:
        try:
            present = quarantine_present(dsn)
        except psycopg2.Error as exc:
            raise DatabaseError(f"cannot purge the quarantine at {db.redact(dsn)}: "
                                f"{str(exc).strip()}") from exc
        if present:
            results.append(purge_quarantine(dsn, days["quarantine"], **kw))
        else:
            results.append(Result("quarantine", db.redact(dsn), SETTINGS["quarantine"],
                                  days["quarantine"],
                                  cutoff(when, days["quarantine"]).isoformat(), dry_run,
                                  skipped="no quarantine table: run the migrations "
                                          "(`govbus catalogue sync` or `govbus up`)"))
    if "accepted_events" in only:
        results.append(purge_accepted_events(dsn, days["accepted_events"], **kw))
    return results
