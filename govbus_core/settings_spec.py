"""Every setting govbus reads, declared once: its environment variable, type, range, default and
what it is for. ``docs/configuration.md`` is generated from these declarations
(:mod:`govbus.core.settings_docs`; ``govbus config --markdown docs/configuration.md``).

The settings are grouped in sections, one frozen dataclass each, whose fields are the
declarations (:func:`declare`). A component reads the section it needs (``Retention.from_env()``)
or takes it from the :class:`govbus.core.config.Settings` of its process, which has every
section's fields. :func:`read_env` reads and checks every declared variable — neither broker nor
database needed — and refuses a ``GOVBUS_*`` variable that is not declared, naming it and the
closest declared name: a misspelt setting would otherwise be ignored and its default used. An
empty value counts as unset.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from govbus.core.errors import ConfigError
from govbus.core.identifiers import check_division_code

PREFIX = "GOVBUS_"
DOCS = "docs/configuration.md"
_META = "govbus.setting"
SECRET, URL = "secret", "url"  # how a value is masked when shown: whole, or its password

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
_RETENTION_MS: dict[str, Any] = {
    "low": 3600 * 1000, "high": 3650 * DAY_MS,
    "rule": "integer, [3600000, 315360000000] (1 hour to 3650 days)"}
_DAYS: dict[str, Any] = {"low": 1, "high": 365}


@dataclass(frozen=True)
class Declaration:
    """One setting: its variable, what it is for, its default and the rule its value obeys;
    ``attr``, ``section`` and ``kind`` come from the section field that declares it."""

    env: str
    default: Any
    doc: str
    factory: Callable[[], Any] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the range excludes ``low``
    check: Callable[[str], str | None] | None = None  # a text value's rule: why not, or None
    rule: str = ""  # the rule in words, for the docs
    shown: str = ""  # the default in words, when not the value itself
    mask: str = ""  # SECRET or URL: how `govbus config` shows the value
    attr: str = ""
    section: str = ""
    kind: type = str

    def default_value(self) -> Any:
        return self.factory() if self.factory else self.default

    def parse(self, raw: str | None) -> Any:
        """The value of ``raw`` (None or empty: the default); ConfigError naming the variable,
        the value and the rule."""
        if raw is None or raw == "":
            return self.default_value()
        if self.kind is int:
            value: Any = _number(self.env, raw, int, "an integer")
        elif self.kind is float:
            value = _number(self.env, raw, float, "a number")
        elif self.kind is Path:
            value = Path(raw).expanduser()
        elif self.kind is tuple:
            value = tuple(raw.split())
        else:
            value = raw
        if self.check is not None:
            why = self.check(raw)
            if why:
                raise ConfigError(f"{self.env}={raw!r}: {why}")
        if (self.low is not None and (value < self.low or self.low_open and value == self.low)
                or self.high is not None and value > self.high):
            raise ConfigError(f"{self.env}={value} is out of range {self.range()}")
        return value

    def range(self) -> str:
        return f"{'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}]"

    def rule_text(self) -> str:
        """The type and range of the value, in words."""
        if self.rule:
            return self.rule
        kind = {int: "integer", float: "number", Path: "path"}.get(self.kind, "text")
        return f"{kind}, {self.range()}" if self.low is not None else kind

    def default_text(self) -> str:
        if self.shown:
            return self.shown
        value = self.default_value()
        if isinstance(value, int) and self.env.endswith("_MS") and value >= 60_000:
            unit, size = ("days", DAY_MS) if value % DAY_MS == 0 else ("minutes", 60_000)
            return f"{value} ({value // size} {unit})"
        return "unset" if value is None else f"`{value}`" if isinstance(value, str) else str(value)


def _number(env: str, raw: str, kind: type, what: str) -> Any:
    try:
        value = kind(raw)
    except ValueError as exc:
        raise ConfigError(f"{env}={raw!r} is not {what}") from exc
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{env}={raw!r} is not {what}")
    return value


def _num(bound: float | None) -> str:
    return str(int(bound)) if bound is not None and float(bound).is_integer() else str(bound)


def declare(env: str, default: Any, doc: str, *, required: bool = False,
            factory: Callable[[], Any] | None = None, **rule: Any) -> Any:
    """A section field declaring the setting read from ``env``; ``required``: the field has no
    default in the dataclass (the process cannot run without it), though ``read_env`` gives
    ``default`` when the variable is unset."""
    meta = {_META: Declaration(env, default, doc, factory, **rule)}
    if required:
        return field(metadata=meta)
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta, repr=rule.get("mask") != SECRET)


def _shipped_schemas() -> Path:
    from govbus.core.catalogue import default_schemas_dir

    return default_schemas_dir()


def _default_state_dir() -> Path:
    """``GOVBUS_STATE_DIR``, else ``~/.govbus``: also the default of a :class:`Settings` made
    in code, so that it finds the embedded runtime's keys where the environment says."""
    return Path(os.environ.get("GOVBUS_STATE_DIR") or Path.home() / ".govbus").expanduser()


def _group_id(value: str) -> str | None:
    """A consumer group id also names rows of ``reconcile_state``: no spaces, bounded."""
    if value.isprintable() and " " not in value and len(value) <= 200:
        return None
    return "must be 1 to 200 printable characters without spaces"


#: librdkafka's ``security.protocol`` values; the broker's listener decides which one applies
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
#: the SASL mechanisms a govbus client may use; OAUTHBEARER is not supported: it needs a token
#: endpoint and a refresh callback govbus does not have
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


def _security_protocol(value: str) -> str | None:
    """A ``security.protocol`` librdkafka knows, spelt as Kafka spells it."""
    if value in SECURITY_PROTOCOLS:
        return None
    return f"must be one of {', '.join(SECURITY_PROTOCOLS)}"


def _sasl_mechanism(value: str) -> str | None:
    """A SASL mechanism govbus supports (not OAUTHBEARER)."""
    if value in SASL_MECHANISMS:
        return None
    why = f"must be one of {', '.join(SASL_MECHANISMS)}"
    return why + ("; OAUTHBEARER is not supported" if value.upper() == "OAUTHBEARER" else "")


def _http_url(value: str) -> str | None:
    if re.match(r"^https?://[^\s/]+(/\S*)?$", value):
        return None
    return "must be an http:// or https:// URL (`http://127.0.0.1:8480`)"


def _rate(value: str) -> str | None:
    if re.match(r"^[1-9][0-9]{0,8}/(second|minute|hour|day)$", value):
        return None
    return "must be N/second, N/minute, N/hour or N/day with N ≥ 1 (`120/minute`)"


class Section:
    """A group of settings that one component reads."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """This section, from the environment; every declared setting is checked (read_env)."""
        values = read_env(environ)
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)})  # type: ignore


# --- the sections ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Services:
    """Where the broker, the database and the catalogue are."""

    bootstrap_servers: str = declare(
        "KAFKA_BOOTSTRAP_SERVERS", None, "an existing Kafka-protocol broker, `host:port,...`; "
        "`govbus up` then starts none", required=True, rule="`host:port`, comma-separated",
        shown="the embedded runtime's (Tansu, started by `govbus up`)")
    database_url: str = declare(
        "DATABASE_URL", None, "an existing PostgreSQL; `govbus up` then starts none",
        required=True, rule="text (a libpq URL or DSN)", mask=URL,
        shown="the embedded runtime's (PostgreSQL, started by `govbus up`)")
    schemas_dir: Path = declare(
        "GOVBUS_SCHEMAS_DIR", None, "the catalogue folder every command reads (`--schemas DIR` "
        "sets it for one command)", required=True, factory=_shipped_schemas,
        shown="`schemas/` of the installation")


@dataclass(frozen=True)
class KafkaSecurity(Section):
    """How every client authenticates to the broker (docs/deployment.md, "Authenticated
    clients"): librdkafka's security settings, the same for every producer, consumer and admin
    client of the process; their combination is checked when a client is built
    (``govbus.core.kafka.kafka_security``)."""

    kafka_security_protocol: str = declare(
        "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", "librdkafka's `security.protocol`: the "
        "listener's protocol; `SASL_SSL` in production (infra/docker-compose.yml)",
        check=_security_protocol, rule="one of " + ", ".join(SECURITY_PROTOCOLS))
    kafka_sasl_mechanism: str | None = declare(
        "KAFKA_SASL_MECHANISM", None, "`sasl.mechanism`, with a `SASL_*` protocol only",
        check=_sasl_mechanism,
        rule="one of " + ", ".join(SASL_MECHANISMS) + " (OAUTHBEARER is not supported)")
    kafka_sasl_username: str | None = declare(
        "KAFKA_SASL_USERNAME", None, "`sasl.username`: the principal `User:<name>` the ACLs "
        "grant (`govbus` for the bus, the agency's name for its clients)")
    kafka_sasl_password: str | None = declare(
        "KAFKA_SASL_PASSWORD", None, "`sasl.password`; `KAFKA_SASL_PASSWORD_FILE` wins over "
        "it; never printed", mask=SECRET)
    kafka_sasl_password_file: Path | None = declare(
        "KAFKA_SASL_PASSWORD_FILE", None, "a file holding the SASL password (its trailing "
        "newline stripped), read when a client is built; wins over `KAFKA_SASL_PASSWORD`",
        rule="path of a readable file")
    kafka_ssl_ca_location: Path | None = declare(
        "KAFKA_SSL_CA_LOCATION", None, "`ssl.ca.location`: the CA certificate(s) (PEM) the "
        "broker's certificate is verified with; `SSL`/`SASL_SSL` only",
        rule="path of a readable file", shown="unset: the system's CAs")
    kafka_ssl_certificate_location: Path | None = declare(
        "KAFKA_SSL_CERTIFICATE_LOCATION", None, "`ssl.certificate.location`: the client's "
        "certificate (PEM) for mutual TLS, with `KAFKA_SSL_KEY_LOCATION`",
        rule="path of a readable file")
    kafka_ssl_key_location: Path | None = declare(
        "KAFKA_SSL_KEY_LOCATION", None, "`ssl.key.location`: the client's private key (PEM) "
        "for mutual TLS, with `KAFKA_SSL_CERTIFICATE_LOCATION`", rule="path of a readable file")
    kafka_ssl_key_password_file: Path | None = declare(
        "KAFKA_SSL_KEY_PASSWORD_FILE", None, "a file holding the password of an encrypted "
        "`KAFKA_SSL_KEY_LOCATION` (`ssl.key.password`, trailing newline stripped)",
        rule="path of a readable file", shown="unset: the key is not encrypted")


@dataclass(frozen=True)
class Topics(Section):
    """The topics `govbus up` and the stream apps create (docs/deployment.md)."""

    partitions: int = declare("GOVBUS_PARTITIONS", 3, "partitions per topic created", low=1,
                              high=1024)
    #: topics created get the broker's default replication factor when None (KIP-464)
    replication_factor: int | None = declare(
        "GOVBUS_REPLICATION_FACTOR", None, "replication factor of the topics created "
        "(docs/deployment.md)", low=1, high=16, shown="unset: the broker's default")
    retention_ingest_ms: int = declare(
        "GOVBUS_RETENTION_INGEST_MS", RETENTION_DEFAULTS_MS["ingest"],
        "retention of `ingest.*` topics", **_RETENTION_MS)
    retention_validated_ms: int = declare(
        "GOVBUS_RETENTION_VALIDATED_MS", RETENTION_DEFAULTS_MS["validated"],
        "retention of `validated.*` and `reconcile.values`", **_RETENTION_MS)
    retention_deliver_ms: int = declare(
        "GOVBUS_RETENTION_DELIVER_MS", RETENTION_DEFAULTS_MS["deliver"],
        "retention of `deliver.*` and `notices.*`", **_RETENTION_MS)
    #: short: a DLQ record holds a prefix of personal data; the payload is in quarantine
    retention_dlq_ms: int = declare(
        "GOVBUS_RETENTION_DLQ_MS", RETENTION_DEFAULTS_MS["dlq"], "retention of `dlq.*`: short, "
        "a DLQ record holds a prefix of personal data (Art. 25)", **_RETENTION_MS)
    #: at least 256 KiB: every DLQ record (at most 128 KiB) fits with its key; at most 64 MiB,
    #: under the clients' receive.message.max.bytes (100 MB)
    message_max_bytes: int = declare(
        "GOVBUS_MESSAGE_MAX_BYTES", MESSAGE_MAX_BYTES, "producers' `message.max.bytes`; every "
        "topic's `max.message.bytes` is this + 1024", low=256 * 1024, high=64 * 1024 * 1024,
        shown="1048576 (1 MiB)", rule="integer, [262144, 67108864] (256 KiB to 64 MiB)")


@dataclass(frozen=True)
class Streams(Section):
    """The stream apps: consumer groups, the gate's clock rule, the grants' refresh."""

    session_timeout_ms: int = declare(
        "GOVBUS_KAFKA_SESSION_TIMEOUT_MS", 6000, "consumer-group session timeout", low=1000,
        high=300_000)
    #: how far ahead of the gate's clock an event's occurred_ms may be (README, "The gate")
    max_clock_skew_ms: int = declare(
        "GOVBUS_MAX_CLOCK_SKEW_MS", 300_000, "how far ahead of the gate's clock an event's "
        "`occurred_ms` may be; beyond it the event goes to the DLQ (`envelope.occurred_in_future`,"
        " Art. 19)", low=0, high=86_400_000)
    grant_refresh_s: float = declare(
        "GOVBUS_GRANT_REFRESH_S", 1.0, "seconds between the hot path's loads of the grants and "
        "catalogue metadata: how stale the grants it routes on may get; a grant or a revocation "
        "takes effect within it, without a restart (Art. 15, 18)",
        low=0, low_open=True, high=3600)
    reconciler_id: str = declare(
        "GOVBUS_RECONCILER_ID", "govbus-reconciler", "the reconciler's consumer group, and the "
        "name its state is kept under in `reconcile_state`", check=_group_id,
        rule="text, 1 to 200 printable characters, no spaces")


@dataclass(frozen=True)
class Publishing(Section):
    """What the publishing library and the outbox relay add to the records they send."""

    locality: str = declare(
        "GOVBUS_LOCALITY", "360502", "locality for records that don't state one (Art. 12)",
        check=check_division_code, rule="a county or prefecture code (GB/T 2260, 6 digits)",
        shown="`360502` (Yushui District, Xinyu)")


@dataclass(frozen=True)
class Deadlines(Section):
    """Deadlines in working days on the official calendar (docs/calendar.md)."""

    #: the State Council's holiday notices the library does not know (docs/calendar.md);
    #: Settings.from_env reads and checks the file at start-up
    holidays_file: Path | None = declare(
        "GOVBUS_HOLIDAYS_FILE", None, "the State Council's holiday notices as JSON "
        "(`infra/holidays.example.json`): decides the working days of the years it lists; check "
        "with `govbus calendar check --year Y` (docs/calendar.md)", rule="path of a JSON file",
        shown="unset: `chinese-calendar` (to 2026), then Monday–Friday, alerted")
    case_deadline_days: int = declare(
        "GOVBUS_CASE_DEADLINE_DAYS", 5, "working days the source of record has to verify a "
        "reconciliation case (Art. 20)", **_DAYS)
    provide_deadline_days: int = declare(
        "GOVBUS_PROVIDE_DEADLINE_DAYS", 1, "working days to provide unconditional data once "
        "requested (State Council regulation on government data sharing, 2025; Art. 18)",
        **_DAYS)
    request_deadline_days: int = declare(
        "GOVBUS_REQUEST_DEADLINE_DAYS", 10, "working days the provider has to answer a sharing "
        "request on application (Art. 18; the 2025 regulation; a delay is a fault, Art. 31)",
        **_DAYS)
    completion_deadline_days: int = declare(
        "GOVBUS_COMPLETION_DEADLINE_DAYS", 20, "working days to complete sharing once the "
        "provider consented: the first delivery or backfill (the 2025 regulation; Art. 31)",
        **_DAYS)
    objection_deadline_days: int = declare(
        "GOVBUS_OBJECTION_DEADLINE_DAYS", 5, "working days to answer an objection to shared "
        "data (Art. 19)", **_DAYS)
    complaint_deadline_days: int = declare(
        "GOVBUS_COMPLAINT_DEADLINE_DAYS", 10, "working days the municipal office has to answer "
        "a complaint (Art. 29)", **_DAYS)


@dataclass(frozen=True)
class Retention(Section):
    """What `govbus purge` deletes, and where (docs/retention.md; Art. 25)."""

    #: days kept before `govbus purge` deletes (docs/retention.md; Art. 25)
    outbox_retention_days: int = declare(
        "GOVBUS_OUTBOX_RETENTION_DAYS", RETENTION_DEFAULTS_DAYS["outbox"], "`govbus purge`: days "
        "a *published* outbox row is kept in the agency database; unpublished rows never go",
        low=1, high=36500)
    reconcile_state_retention_days: int = declare(
        "GOVBUS_RECONCILE_STATE_RETENTION_DAYS", RETENTION_DEFAULTS_DAYS["reconcile_state"],
        "`govbus purge`: days the reconciler's state of an entity not seen is kept; an entity "
        "with an open case keeps it (Art. 20)", low=1, high=36500)
    quarantine_retention_days: int = declare(
        "GOVBUS_QUARANTINE_RETENTION_DAYS", RETENTION_DEFAULTS_DAYS["quarantine"],
        "`govbus purge`: days a quarantined payload is kept for its provider (Art. 19, 25)",
        low=1, high=36500)
    accepted_events_retention_days: int = declare(
        "GOVBUS_ACCEPTED_EVENTS_RETENTION_DAYS", RETENTION_DEFAULTS_DAYS["accepted_events"],
        "days the ids of accepted events are kept: the window in which an id reused for another "
        "record is refused (Art. 19)", low=1, high=36500)
    outbox_dsns: tuple[str, ...] = declare(
        "GOVBUS_OUTBOX_DSNS", (), "`govbus purge`: the agency databases holding outboxes (also "
        "`--outbox-dsn`)", rule="libpq URLs separated by spaces", mask=URL,
        shown="none: outboxes skipped")


@dataclass(frozen=True)
class Access(Section):
    """The credential of the agency a command acts as (Art. 24; docs/security.md)."""

    token_file: Path | None = declare(
        "GOVBUS_TOKEN_FILE", None, "a file holding the agency's token, readable by its owner "
        "only; before `GOVBUS_TOKEN` (Art. 24)", rule="path (mode 600)")
    token: str | None = declare(
        "GOVBUS_TOKEN", None, "the token of the agency a command acts as (Art. 24); never "
        "printed", mask=SECRET)


@dataclass(frozen=True)
class Service(Section):
    """The HTTP service (`govbus serve`) agencies call instead of the central database, and
    where the command line finds it (docs/integrating.md; Art. 15, 17, 24)."""

    api_url: str | None = declare(
        "GOVBUS_API_URL", None, "the HTTP service the command line acts through; set: the "
        "agencies' commands need no database address", rule="an http(s) URL",
        check=_http_url, shown="unset: the embedded runtime's, else the database directly")
    api_host: str = declare(
        "GOVBUS_API_HOST", "127.0.0.1", "the interface `govbus serve` listens on (`0.0.0.0` "
        "in containers)", rule="an address or host name")
    api_port: int = declare(
        "GOVBUS_API_PORT", 8480, "the port `govbus serve` listens on (`govbus up` picks a free "
        "one)", low=1, high=65535)
    api_tls_cert_file: Path | None = declare(
        "GOVBUS_API_TLS_CERT_FILE", None, "the service's TLS certificate (PEM); with "
        "`GOVBUS_API_TLS_KEY_FILE`, the service speaks HTTPS", rule="path")
    api_tls_key_file: Path | None = declare(
        "GOVBUS_API_TLS_KEY_FILE", None, "the private key of `GOVBUS_API_TLS_CERT_FILE`",
        rule="path (mode 600)")
    api_client_ca_file: Path | None = declare(
        "GOVBUS_API_CLIENT_CA_FILE", None, "mutual TLS: the CA that signs the agencies' client "
        "certificates; set, a client without such a certificate is refused before HTTP",
        rule="path")
    api_ca_file: Path | None = declare(
        "GOVBUS_API_CA_FILE", None, "the command line's trust anchor for an https "
        "`GOVBUS_API_URL`", rule="path", shown="unset: the system's")
    api_client_cert_file: Path | None = declare(
        "GOVBUS_API_CLIENT_CERT_FILE", None, "the command line's client certificate and key "
        "(one PEM) when the service requires mutual TLS", rule="path (mode 600)")
    query_rate: str = declare(
        "GOVBUS_QUERY_RATE", "120/minute", "online queries (Art. 17) an agency may make, per "
        "agency, through the service; over it: 429 with Retry-After", check=_rate,
        rule="`N/second`, `N/minute`, `N/hour` or `N/day`")
    api_max_body_bytes: int = declare(
        "GOVBUS_API_MAX_BODY_BYTES", 1_048_576, "the largest request body the service reads; "
        "larger: 413 (a proposed contract is the largest body)", low=1024, high=67_108_864)


@dataclass(frozen=True)
class Signing(Section):
    """The Ed25519 keys of docs/security.md: the agency's, that its events are signed with, and
    the bus's, that deliveries are signed with and verified against."""

    signing_key_file: Path | None = declare(
        "GOVBUS_SIGNING_KEY_FILE", None, "the agency's Ed25519 private key (PEM, mode 600) the "
        "publisher and the outbox relay sign with (`govbus keys generate`); unset under "
        "`govbus up`: the sample agencies' keys in the state folder", rule="path")
    bus_key_file: Path | None = declare(
        "GOVBUS_BUS_KEY_FILE", None, "the bus's Ed25519 private key the hot path and backfills "
        "sign deliveries with; unset under `govbus up`: the one in the state folder",
        rule="path")
    bus_public_key_file: Path | None = declare(
        "GOVBUS_BUS_PUBLIC_KEY_FILE", None, "the bus's public key(s) (PEM, `govbus keys show "
        "--bus`) a subscriber verifies deliveries with; several during a rotation", rule="path")


@dataclass(frozen=True)
class Evidence(Section):
    """The signed checkpoints of the delivery log and the audit ledger (docs/security.md;
    Art. 24, 26, 31): how often, and with which key."""

    checkpoint_key_file: Path | None = declare(
        "GOVBUS_CHECKPOINT_KEY_FILE", None, "the information center's Ed25519 private key the "
        "checkpointer signs checkpoints with, kept apart from the database's credentials; unset "
        "under `govbus up`: the one in the state folder", rule="path (mode 600)")
    checkpoint_public_key_file: Path | None = declare(
        "GOVBUS_CHECKPOINT_PUBLIC_KEY_FILE", None, "the information center's public key(s) an "
        "agency verifies checkpoints with (`govbus keys show --agency information_center`); "
        "unset: the keys registered in the bus's database", rule="path")
    checkpoint_interval_s: float = declare(
        "GOVBUS_CHECKPOINT_INTERVAL_S", 10.0, "seconds between checkpoints while the log or "
        "the ledger grows", low=0, low_open=True, high=86_400)
    checkpoint_rows: int = declare(
        "GOVBUS_CHECKPOINT_ROWS", 10_000, "a checkpoint as soon as this many rows were logged "
        "since the last, before the interval ends", low=1, high=100_000_000)


@dataclass(frozen=True)
class Metrics(Section):
    """Where each process serves its Prometheus metrics (docs/operations.md)."""

    metrics_port: int | None = declare(
        "GOVBUS_METRICS_PORT", None, "the port each process serves `/metrics` on (`govbus up` "
        "sets one per stream app)", low=1, high=65535, shown="unset: not served")
    metrics_addr: str = declare(
        "GOVBUS_METRICS_ADDR", "127.0.0.1", "the interface `/metrics` listens on (`0.0.0.0` in "
        "containers)", rule="an address or host name")


@dataclass(frozen=True)
class Runtime(Section):
    """The embedded runtime of `govbus up`, and the demo."""

    state_dir: Path = declare(
        "GOVBUS_STATE_DIR", None, "data, logs, pids and `runtime.json` of the embedded runtime; "
        "the information center's token", factory=_default_state_dir,
        shown="`~/.govbus`")
    supervised: Path | None = declare(
        "GOVBUS_SUPERVISED", None, "set by `govbus up` for each process supervisord runs: the "
        "state directory it belongs to, by which `up` and `down` find what a killed supervisord "
        "left running; not to be set by hand")
    demo_timeout_s: float = declare(
        "GOVBUS_DEMO_TIMEOUT", 90.0, "`govbus demo`: seconds to wait for each stage's results",
        low=0, low_open=True, high=3600)


SECTIONS: tuple[type, ...] = (Services, KafkaSecurity, Topics, Streams, Publishing, Deadlines,
                              Retention, Access, Service, Signing, Evidence, Metrics, Runtime)


def _declarations() -> tuple[Declaration, ...]:
    found = []
    for section in SECTIONS:
        hints = typing.get_type_hints(section)
        for f in dataclasses.fields(section):
            hint = hints[f.name]
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            kind = typing.get_origin(hint) or hint
            if kind in (typing.Union, types.UnionType):  # X | None: the type of X
                kind = args[0]
            found.append(dataclasses.replace(f.metadata[_META], attr=f.name,
                                             section=section.__name__, kind=kind))
    return tuple(found)


DECLARATIONS = _declarations()
BY_ENV = {d.env: d for d in DECLARATIONS}


# --- reading ---------------------------------------------------------------------------------

def unknown(environ: Mapping[str, str]) -> list[str]:
    """Why each ``GOVBUS_*`` variable of ``environ`` that is not declared is refused. Its value
    is not repeated: a misspelt token would be printed."""
    declared = [name[len(PREFIX):] for name in BY_ENV if name.startswith(PREFIX)]
    problems = []
    for name in sorted(n for n in environ if n.startswith(PREFIX) and n not in BY_ENV):
        close = difflib.get_close_matches(name[len(PREFIX):], declared, n=1)  # past the prefix
        hint = f"did you mean {PREFIX}{close[0]}?" if close else "no declared setting is close"
        problems.append(f"{name} is not a govbus setting ({hint}); `govbus config --markdown` "
                        f"and {DOCS} list them")
    return problems


def read_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every declared setting of ``environ`` (default: this process's), by attribute name, each
    checked; ConfigError naming every variable refused (unknown, malformed, out of range).
    Needs neither broker nor database: the service variables are None when unset."""
    env = os.environ if environ is None else environ
    problems = unknown(env)
    values: dict[str, Any] = {}
    for d in DECLARATIONS:
        try:
            values[d.attr] = d.parse(env.get(d.env))
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("\n".join(problems))
    return values


def env_value(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """The one declared setting ``name``, checked; for a read on every call (the calendar)."""
    return BY_ENV[name].parse((os.environ if environ is None else environ).get(name))
