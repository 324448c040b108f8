"""Settings: one object per process, read from the environment and checked at start-up.

``KAFKA_BOOTSTRAP_SERVERS`` and ``DATABASE_URL`` name external services. When they are not
set, the embedded runtime started by ``govbus up`` is used: it records where its broker and
database listen in ``<state dir>/runtime.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from govbus.core.catalogue import default_schemas_dir
from govbus.core.errors import ConfigError
from govbus.core.workdays import holidays_file_setting

ENV_KEYS = ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "GOVBUS_STATE_DIR", "GOVBUS_SCHEMAS_DIR",
            "GOVBUS_KAFKA_SESSION_TIMEOUT_MS", "GOVBUS_PARTITIONS")

DAY_MS = 24 * 3600 * 1000
#: topic retention by kind (docs/deployment.md): ingest and validated cover a week's outage of
#: the hot path, deliver a subscriber offline over the longest public holiday (Spring
#: Festival, 8-9 days); the DLQ three days, as a record holds a prefix of a rejected payload,
#: possibly personal data (Art. 25), whose whole copy is in the quarantine table
RETENTION_DEFAULTS_MS = {"ingest": 7 * DAY_MS, "validated": 7 * DAY_MS,
                         "deliver": 14 * DAY_MS, "dlq": 3 * DAY_MS}
MESSAGE_MAX_BYTES = 1024 * 1024
#: rows kept by `govbus purge` (docs/retention.md): published outbox rows a month (an objection
#: about what was sent, Art. 19, is raised within weeks), the reconciler's state of an entity
#: not seen for over a year (yearly updates still meet the values held), quarantined payloads
#: a month (the provider corrects its data, Art. 19; they are personal data, Art. 25), the
#: ids of accepted events (no values) a year and a month: the window in which an event id
#: reused for another record is recognised (Art. 19)
RETENTION_DEFAULTS_DAYS = {"outbox": 30, "reconcile_state": 400, "quarantine": 30,
                           "accepted_events": 400}


def state_dir() -> Path:
    """Where the embedded runtime keeps its data, logs and pid files."""
    return Path(os.environ.get("GOVBUS_STATE_DIR") or Path.home() / ".govbus").expanduser()


def runtime_file() -> Path:
    return state_dir() / "runtime.json"


def read_runtime() -> dict[str, Any]:
    """What ``govbus up`` recorded, or ``{}`` when nothing runs."""
    try:
        return json.loads(runtime_file().read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{runtime_file()} is unreadable: {exc}; remove it and run "
                          "`govbus up` again") from exc


def _int_env(name: str, default: int, low: int, high: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not an integer") from exc
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} is out of range [{low}, {high}]")
    return value


@dataclass(frozen=True)
class Settings:
    """Where the broker, the database and the catalogue are, and client tuning."""

    bootstrap_servers: str
    database_url: str
    schemas_dir: Path
    session_timeout_ms: int = 6000
    partitions: int = 3
    #: topics created get the broker's default replication factor when None (KIP-464)
    replication_factor: int | None = None
    retention_ingest_ms: int = RETENTION_DEFAULTS_MS["ingest"]
    retention_validated_ms: int = RETENTION_DEFAULTS_MS["validated"]
    retention_deliver_ms: int = RETENTION_DEFAULTS_MS["deliver"]
    #: short: a DLQ record holds a prefix of personal data; the payload is in quarantine
    retention_dlq_ms: int = RETENTION_DEFAULTS_MS["dlq"]
    #: the producers' message.max.bytes; topics allow this plus the batch framing
    message_max_bytes: int = MESSAGE_MAX_BYTES
    #: days kept before `govbus purge` deletes (docs/retention.md; Art. 25)
    outbox_retention_days: int = RETENTION_DEFAULTS_DAYS["outbox"]
    reconcile_state_retention_days: int = RETENTION_DEFAULTS_DAYS["reconcile_state"]
    quarantine_retention_days: int = RETENTION_DEFAULTS_DAYS["quarantine"]
    accepted_events_retention_days: int = RETENTION_DEFAULTS_DAYS["accepted_events"]
    #: GOVBUS_HOLIDAYS_FILE, the State Council's holiday notices the library does not know
    #: (docs/calendar.md); checked here, at start-up
    holidays_file: Path | None = None
    #: how far ahead of the gate's clock an event's occurred_ms may be (README, "The gate")
    max_clock_skew_ms: int = 300_000

    @classmethod
    def from_env(cls) -> Settings:
        """Read the environment; fall back to the running embedded runtime."""
        runtime = read_runtime()
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or runtime.get("bootstrap_servers")
        database = os.environ.get("DATABASE_URL") or runtime.get("database_url")
        missing = [n for n, v in (("KAFKA_BOOTSTRAP_SERVERS", bootstrap),
                                  ("DATABASE_URL", database)) if not v]
        if missing:
            raise ConfigError(f"{' and '.join(missing)} not set and no embedded runtime is "
                              f"running (no {runtime_file()}): run `govbus up` first, or set "
                              "the variables to your services")
        schemas = Path(os.environ.get("GOVBUS_SCHEMAS_DIR") or default_schemas_dir())
        return cls(bootstrap_servers=str(bootstrap), database_url=str(database),
                   schemas_dir=schemas,
                   session_timeout_ms=_int_env("GOVBUS_KAFKA_SESSION_TIMEOUT_MS", 6000, 1000,
                                               300000),
                   partitions=_int_env("GOVBUS_PARTITIONS", 3, 1, 1024),
                   holidays_file=holidays_file_setting(),
                   max_clock_skew_ms=_int_env("GOVBUS_MAX_CLOCK_SKEW_MS", 300_000, 0,
                                              86_400_000),
                   **topic_settings(), **retention_settings())


def topic_settings() -> dict[str, Any]:
    """The topic settings of the environment (see docs/deployment.md): replication factor
    (unset: the broker's default), retention per kind of topic, the record size limit."""
    raw_rf = os.environ.get("GOVBUS_REPLICATION_FACTOR")
    retention = {f"retention_{kind}_ms": _int_env(f"GOVBUS_RETENTION_{kind.upper()}_MS",
                                                  default, 3600 * 1000, 3650 * DAY_MS)
                 for kind, default in RETENTION_DEFAULTS_MS.items()}
    return {"replication_factor": None if raw_rf in (None, "") else
            _int_env("GOVBUS_REPLICATION_FACTOR", 3, 1, 16),
            # at least 256 KiB: every DLQ record (at most 128 KiB) fits with its key; at most
            # 64 MiB, under the clients' receive.message.max.bytes (100 MB)
            "message_max_bytes": _int_env("GOVBUS_MESSAGE_MAX_BYTES", MESSAGE_MAX_BYTES,
                                          256 * 1024, 64 * 1024 * 1024), **retention}


def retention_settings() -> dict[str, Any]:
    """The retention of `govbus purge`, in days (1 to 100 years): GOVBUS_OUTBOX_RETENTION_DAYS,
    GOVBUS_RECONCILE_STATE_RETENTION_DAYS, GOVBUS_QUARANTINE_RETENTION_DAYS. Needs no broker
    or database, so the purge reads it without either."""
    return {f"{kind}_retention_days": _int_env(f"GOVBUS_{kind.upper()}_RETENTION_DAYS", default,
                                               1, 36500)
            for kind, default in RETENTION_DEFAULTS_DAYS.items()}
