"""Settings: one object per process, read from the environment and checked at start-up.

Every setting is declared once, in :mod:`govbus.core.settings_spec` (variable, type, range,
default, what it is for; docs/configuration.md is generated from it). :class:`Settings` has the
fields of every section there; :func:`read_env` reads them all without broker or database, for
the commands that need neither (``purge``'s retention, ``calendar check``, the catalogue).

``KAFKA_BOOTSTRAP_SERVERS`` and ``DATABASE_URL`` name external services. When they are not
set, the embedded runtime started by ``govbus up`` is used: it records where its broker and
database listen in ``<state dir>/runtime.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from govbus.core.errors import ConfigError
from govbus.core.settings_docs import shown
from govbus.core.settings_spec import (
    BY_ENV,
    DAY_MS,
    DECLARATIONS,
    MESSAGE_MAX_BYTES,
    RETENTION_DEFAULTS_DAYS,
    RETENTION_DEFAULTS_MS,
    Access,
    Deadlines,
    Evidence,
    KafkaSecurity,
    Metrics,
    Publishing,
    Retention,
    Runtime,
    Service,
    Services,
    Signing,
    Streams,
    Topics,
    env_value,
    read_env,
)
from govbus.core.workdays import use_holidays_file

__all__ = ["DAY_MS", "MESSAGE_MAX_BYTES", "RETENTION_DEFAULTS_DAYS", "RETENTION_DEFAULTS_MS",
           "Access", "Deadlines", "Evidence", "KafkaSecurity", "Metrics", "Publishing",
           "Retention", "Runtime", "Services", "Settings", "Signing", "Streams", "Topics",
           "database_url",
           "effective_settings", "env_value", "kafka_security_settings", "read_env",
           "read_runtime", "require_database_url", "retention_settings", "runtime_file",
           "state_dir", "topic_settings"]

ENV_KEYS = tuple(BY_ENV)  # every variable govbus reads


def state_dir() -> Path:
    """Where the embedded runtime keeps its data, logs and pid files (GOVBUS_STATE_DIR)."""
    return Path(env_value("GOVBUS_STATE_DIR"))


def runtime_file(base: Path | None = None) -> Path:
    return (base or state_dir()) / "runtime.json"


def read_runtime(base: Path | None = None) -> dict[str, Any]:
    """What ``govbus up`` recorded (in ``base``, default the state dir), or ``{}`` when nothing
    runs."""
    path = runtime_file(base)
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is unreadable: {exc}; remove it and run "
                          "`govbus up` again") from exc


@dataclass(frozen=True)
class Settings(Runtime, Metrics, Evidence, Signing, Service, Access, Publishing, Deadlines,
               Retention, Streams, Topics, KafkaSecurity, Services):
    """The settings of one process: where the broker, the database and the catalogue are
    (the three positional fields), then every section's fields, in the order of
    ``SECTIONS`` (docs/configuration.md)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *,
                 database: bool = True) -> Settings:
        """Read and check the environment; fall back to the running embedded runtime for the
        broker and the database; read and check the holiday file. ``database=False``: a
        process that calls the HTTP service instead (``database_url`` may then be empty)."""
        values = read_env(environ)
        runtime = read_runtime(values["state_dir"])
        for attr in ("bootstrap_servers", "database_url"):
            values[attr] = values[attr] or runtime.get(attr)
        if not database:
            values["database_url"] = values["database_url"] or ""
        missing = [n for n, a in (("KAFKA_BOOTSTRAP_SERVERS", "bootstrap_servers"),
                                  ("DATABASE_URL", "database_url"))
                   if not values[a] and (database or a != "database_url")]
        if missing:
            raise ConfigError(f"{' and '.join(missing)} not set and no embedded runtime is "
                              f"running (no {runtime_file(values['state_dir'])}): run `govbus "
                              "up` first, or set the variables to your services")
        values["holidays_file"] = use_holidays_file(values["holidays_file"])
        return cls(**values)


def topic_settings() -> dict[str, Any]:
    """The topic settings of the environment (see docs/deployment.md): replication factor
    (unset: the broker's default), retention per kind of topic, the record size limit."""
    topics = dataclasses.asdict(Topics.from_env())
    topics.pop("partitions")  # `govbus up --partitions` and the callers say how many
    return topics


def kafka_security_settings(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``KafkaSecurity`` fields of the environment (checked, as every setting), by
    attribute name: for a :class:`Settings` made in code for the broker this process talks to
    (``Settings(bootstrap, ..., **kafka_security_settings())``), whose clients must then
    authenticate as the process's do. Their combination is checked when a client is built
    (``govbus.core.kafka.kafka_security``)."""
    return dataclasses.asdict(KafkaSecurity.from_env(environ))


def retention_settings() -> dict[str, Any]:
    """The retention of `govbus purge`, in days (1 to 100 years): GOVBUS_OUTBOX_RETENTION_DAYS,
    GOVBUS_RECONCILE_STATE_RETENTION_DAYS, GOVBUS_QUARANTINE_RETENTION_DAYS,
    GOVBUS_ACCEPTED_EVENTS_RETENTION_DAYS. Needs no broker or database, so the purge reads it
    without either."""
    retention = Retention.from_env()
    return {f"{kind}_retention_days": getattr(retention, f"{kind}_retention_days")
            for kind in RETENTION_DEFAULTS_DAYS}


def database_url() -> str | None:
    """``DATABASE_URL``, else the embedded runtime's; None when neither: for the commands that
    need only PostgreSQL. Every setting is checked."""
    values = read_env()
    return values["database_url"] or read_runtime(values["state_dir"]).get("database_url")


def require_database_url() -> str:
    """:func:`database_url`, or ConfigError saying how to get one."""
    url = database_url()
    if not url:
        raise ConfigError("DATABASE_URL not set and no embedded runtime is running: run "
                          "`govbus up` first, or set DATABASE_URL")
    return str(url)


def effective_settings(environ: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Each setting's variable, effective value (secrets masked) and where it comes from:
    ``environment``, ``embedded runtime`` (runtime.json), ``default`` or ``unset``."""
    env = os.environ if environ is None else environ
    values = read_env(env)
    runtime = read_runtime(values["state_dir"])
    rows = []
    for d in DECLARATIONS:
        value, source = values[d.attr], "environment" if env.get(d.env) else "default"
        if value is None and runtime.get(d.attr):
            value, source = runtime[d.attr], "embedded runtime"
        elif value in (None, ()):
            source = "unset"
        rows.append({"variable": d.env, "section": d.section, "value": shown(d, value),
                     "source": source})
    return rows
