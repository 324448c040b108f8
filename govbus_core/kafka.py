"""Client configuration and topic administration, in one place.

Producers are idempotent with ``acks=all`` (DESIGN: production runs replication 3, min ISR 2).
Consumers commit manually, after their output is acknowledged, so a crash replays rather
than loses. Short group timeouts: with librdkafka defaults a first join takes ~23 s on Tansu.

Every client the project makes — producers, consumers, admin clients, the ops exporter's and
``govbus acl``'s — takes librdkafka's security settings from :func:`kafka_security`, that is
from the one settings object (section ``KafkaSecurity``, docs/deployment.md "Authenticated
clients"); nothing else builds a client config by hand.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from govbus.core.config import Settings
from govbus.core.errors import BrokerError, ConfigError
from govbus.core.topics import kind as topic_kind

# --- security: how a client authenticates to the broker -------------------------------------

#: librdkafka's SSL file settings and the variable each comes from
_SSL_FILES = (("ssl.ca.location", "kafka_ssl_ca_location", "KAFKA_SSL_CA_LOCATION"),
              ("ssl.certificate.location", "kafka_ssl_certificate_location",
               "KAFKA_SSL_CERTIFICATE_LOCATION"),
              ("ssl.key.location", "kafka_ssl_key_location", "KAFKA_SSL_KEY_LOCATION"),
              ("ssl.key.password", "kafka_ssl_key_password_file", "KAFKA_SSL_KEY_PASSWORD_FILE"))


def _readable(env: str, path: Path) -> str | None:
    """Why ``path`` (the value of ``env``) is not a readable file, or None."""
    try:
        with path.open("rb"):
            pass
    except IsADirectoryError:
        return f"{env}={path} is a directory, not a file"
    except OSError as exc:
        return f"{env}={path} cannot be read: {exc.strerror or exc}"
    return None if path.is_file() else f"{env}={path} is not a regular file"


def _secret_file(env: str, path: Path) -> str:
    """The secret held in ``path`` (the value of ``env``), its trailing line break stripped;
    ConfigError naming ``env`` when the file is missing, unreadable, not text or empty."""
    why = _readable(env, path)
    if why:
        raise ConfigError(why)
    try:
        secret = path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{env}={path} cannot be read as UTF-8 text: {exc}") from exc
    if not secret:
        raise ConfigError(f"{env}={path} is empty")
    return secret


def kafka_security(settings: Settings) -> dict[str, str]:
    """librdkafka's security settings of ``settings`` (section ``KafkaSecurity``): only the
    keys set, among ``security.protocol``, ``sasl.mechanism``, ``sasl.username``,
    ``sasl.password``, ``ssl.ca.location``, ``ssl.certificate.location``, ``ssl.key.location``
    and ``ssl.key.password``. PLAINTEXT with nothing else set gives ``{}``: the config of the
    embedded runtime is the one librdkafka's defaults make.

    The combination is checked here, every rule at once, ConfigError naming the variables:

    - a ``SASL_*`` protocol needs ``KAFKA_SASL_MECHANISM``, ``KAFKA_SASL_USERNAME`` and a
      password, ``KAFKA_SASL_PASSWORD_FILE`` or ``KAFKA_SASL_PASSWORD``; any SASL setting
      without a ``SASL_*`` protocol is refused;
    - ``KAFKA_SSL_CERTIFICATE_LOCATION`` and ``KAFKA_SSL_KEY_LOCATION`` go together (mutual
      TLS), ``KAFKA_SSL_KEY_PASSWORD_FILE`` with the key only; SSL files need ``SSL`` or
      ``SASL_SSL``, and each must be a readable file.

    The password files are read now, at each call, so a client built after a rotation of the
    file gets the new password; the file wins over ``KAFKA_SASL_PASSWORD``, and its trailing
    line break is stripped.
    """
    protocol = settings.kafka_security_protocol
    sasl, tls = protocol.startswith("SASL_"), protocol in ("SSL", "SASL_SSL")
    problems: list[str] = []
    given = {"KAFKA_SASL_MECHANISM": settings.kafka_sasl_mechanism,
             "KAFKA_SASL_USERNAME": settings.kafka_sasl_username,
             "KAFKA_SASL_PASSWORD": settings.kafka_sasl_password,
             "KAFKA_SASL_PASSWORD_FILE": settings.kafka_sasl_password_file}
    if sasl:
        missing = [env for env in ("KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME")
                   if not given[env]]
        if not (settings.kafka_sasl_password or settings.kafka_sasl_password_file):
            missing.append("KAFKA_SASL_PASSWORD_FILE (or KAFKA_SASL_PASSWORD)")
        if missing:
            problems.append(f"KAFKA_SECURITY_PROTOCOL={protocol} needs {', '.join(missing)}")
    else:
        stray = [env for env, value in given.items() if value]
        if stray:
            problems.append(f"{', '.join(stray)} set, but KAFKA_SECURITY_PROTOCOL={protocol} "
                            "does not authenticate with SASL: use SASL_SSL (or SASL_PLAINTEXT)"
                            f", or unset {'it' if len(stray) == 1 else 'them'}")
    files = {key: (env, getattr(settings, attr)) for key, attr, env in _SSL_FILES}
    set_files = [env for env, path in files.values() if path is not None]
    certificate, key = (files[k][1] for k in ("ssl.certificate.location", "ssl.key.location"))
    if (certificate is None) != (key is None):
        have, lacks = (("KAFKA_SSL_CERTIFICATE_LOCATION", "KAFKA_SSL_KEY_LOCATION")
                       if key is None else
                       ("KAFKA_SSL_KEY_LOCATION", "KAFKA_SSL_CERTIFICATE_LOCATION"))
        problems.append(f"{have} is set without {lacks}: mutual TLS needs the client's "
                        "certificate and its private key")
    if settings.kafka_ssl_key_password_file is not None and key is None:
        problems.append("KAFKA_SSL_KEY_PASSWORD_FILE is set without KAFKA_SSL_KEY_LOCATION")
    if set_files and not tls:
        problems.append(f"{', '.join(set_files)} set, but KAFKA_SECURITY_PROTOCOL={protocol} "
                        "does not use TLS: use SSL or SASL_SSL, or unset "
                        f"{'it' if len(set_files) == 1 else 'them'}")
    for env, path in files.values():
        why = _readable(env, path) if path is not None else None
        if why:
            problems.append(why)
    if settings.kafka_sasl_password_file is not None:
        why = _readable("KAFKA_SASL_PASSWORD_FILE", settings.kafka_sasl_password_file)
        if why:
            problems.append(why)
    if problems:
        raise ConfigError("\n".join(problems))
    conf: dict[str, str] = {}
    if protocol != "PLAINTEXT":
        conf["security.protocol"] = protocol
    if sasl:
        conf["sasl.mechanism"] = str(settings.kafka_sasl_mechanism)
        conf["sasl.username"] = str(settings.kafka_sasl_username)
        conf["sasl.password"] = (
            _secret_file("KAFKA_SASL_PASSWORD_FILE", settings.kafka_sasl_password_file)
            if settings.kafka_sasl_password_file is not None
            else str(settings.kafka_sasl_password))
    for name, (env, path) in files.items():
        if path is not None:
            conf[name] = _secret_file(env, path) if name == "ssl.key.password" else str(path)
    return conf


def admin_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """The config of an admin client (or of a consumer that only reads watermarks): the
    broker and :func:`kafka_security`, then ``extra``."""
    conf: dict[str, Any] = {"bootstrap.servers": settings.bootstrap_servers}
    conf.update(kafka_security(settings))
    conf.update(extra)
    return conf


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """Idempotent, ``acks=all``; ``message.max.bytes`` from ``GOVBUS_MESSAGE_MAX_BYTES``, the
    limit every topic's ``max.message.bytes`` is derived from (:func:`topic_spec`); the
    security settings of :func:`kafka_security`; then ``extra``."""
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "message.max.bytes": settings.message_max_bytes,
        "linger.ms": 5,
        "message.timeout.ms": 30000,
        "socket.keepalive.enable": True,
        "log.connection.close": False,
    }
    conf.update(kafka_security(settings))
    conf.update(extra)
    return conf


def consumer_config(settings: Settings, group: str, **extra: Any) -> dict[str, Any]:
    """Of group ``group``, committing by hand; the security settings of
    :func:`kafka_security`; then ``extra``."""
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": max(100, settings.session_timeout_ms // 12),
        "topic.metadata.refresh.interval.ms": 3000,
        "max.poll.interval.ms": 300000,
        # a fetch returns after at most 20 ms even when Tansu holds it for fetch.min.bytes:
        # with the default 500 ms every stage added up to half a second of latency (bench)
        "fetch.wait.max.ms": 20,
        # round robin over every topic-partition the pattern matches: range (topic by topic)
        # gives the first of two workers partitions 0 and 1 of every topic of 3, that is 2/3
        # of the work, so a second worker could add at most half; range stays second so that
        # members of an older release still agree on a protocol
        "partition.assignment.strategy": "roundrobin,range",
        "log.connection.close": False,
    }
    conf.update(kafka_security(settings))
    conf.update(extra)
    return conf


def admin(settings: Settings) -> AdminClient:
    """An admin client of :func:`admin_config`."""
    return AdminClient(admin_config(settings))


#: what a topic's ``max.message.bytes`` allows over the producers' ``message.max.bytes``.
#: librdkafka refuses a record whose largest wire size (key, value, headers and the record's
#: varint framing) exceeds ``message.max.bytes``, and fills a produce request (request header,
#: batch header, records) up to that size, but puts a first record in its batch whatever its
#: size: a batch the broker checks against ``max.message.bytes`` is then at most that record
#: plus the 61-byte batch header. Compression never enlarges a batch (librdkafka sends a batch
#: uncompressed when compressing would enlarge it). 1024 bytes cover this with room to spare.
TOPIC_FRAMING_HEADROOM = 1024

@dataclass(frozen=True)
class TopicSpec:
    """How :func:`ensure_topics` creates a topic: its kind, its replication factor (-1: the
    broker's ``default.replication.factor``, KIP-464) and its topic configs."""

    name: str
    kind: str
    replication_factor: int
    configs: Mapping[str, str]


def topic_spec(settings: Settings, name: str) -> TopicSpec:
    """The replication factor and configs of topic ``name``, from its name alone (the hot path
    creates ``deliver.*`` and ``dlq.*`` topics as it first needs them) and the settings.

    - ingest, validated, deliver, DLQ: ``delete`` after ``GOVBUS_RETENTION_<KIND>_MS``;
      ``notices.*`` kept as deliver topics and compacted too (keyed by notice id, so a notice
      sent again replaces itself), ``reconcile.values`` as validated ones (its values come from
      validated events; the reconciler's state is in PostgreSQL);
    - ``reconcile.cases`` and ``govbus.control``: ``compact``, the latest snapshot per key
      (case, subject) is the state a sink rebuilt from the start needs;
    - ``govbus.log.checkpoints``: kept (``retention.ms=-1``), the signed checkpoints are
      what agencies check the log against;
    - every topic: ``max.message.bytes`` = ``GOVBUS_MESSAGE_MAX_BYTES`` +
      :data:`TOPIC_FRAMING_HEADROOM`, so a record a govbus producer accepts is never refused.
    """
    kind = topic_kind(name)
    retention = {"ingest": settings.retention_ingest_ms,
                 "validated": settings.retention_validated_ms,
                 "reconcile_values": settings.retention_validated_ms,
                 "deliver": settings.retention_deliver_ms,
                 "notices": settings.retention_deliver_ms,
                 "deliveries": settings.retention_deliver_ms,
                 "dlq": settings.retention_dlq_ms,
                 "checkpoints": -1}
    configs = {"max.message.bytes": str(settings.message_max_bytes + TOPIC_FRAMING_HEADROOM)}
    if kind in retention:
        configs |= {"cleanup.policy": "delete", "retention.ms": str(retention[kind])}
    elif kind in ("reconcile_cases", "control"):
        configs |= {"cleanup.policy": "compact"}
    if kind == "notices":  # one record per notice id (its key), until the retention
        configs["cleanup.policy"] = "compact,delete"
    replication = settings.replication_factor
    return TopicSpec(name, kind, -1 if replication is None else replication, configs)


def ensure_topics(settings: Settings, names: Iterable[str], partitions: int | None = None,
                  timeout: float = 15.0) -> list[str]:
    """Create the topics that do not exist yet, with an explicit partition count and the
    replication factor and configs of :func:`topic_spec`. An existing topic is left as it is.

    Returns the names created. Explicit counts matter: auto-created topics get the broker's
    default, and the reconcile bundles are produced to the partition each entity hashes to.
    """
    client = admin(settings)
    try:
        existing = set(client.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise BrokerError(f"broker {settings.bootstrap_servers} unreachable: {exc}") from exc
    wanted = sorted(set(names) - existing)
    if not wanted:
        return []
    count = partitions or settings.partitions
    specs = {n: topic_spec(settings, n) for n in wanted}
    futures = client.create_topics(
        [NewTopic(n, count, s.replication_factor, config=dict(s.configs))
         for n, s in specs.items()], operation_timeout=timeout)
    created = []
    for name, fut in futures.items():
        try:
            fut.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                spec = specs[name]
                factor = ("the broker's default" if spec.replication_factor == -1
                          else spec.replication_factor)
                raise BrokerError(
                    f"cannot create topic {name} ({count} partitions, replication factor "
                    f"{factor} (GOVBUS_REPLICATION_FACTOR), configs {dict(spec.configs)}): "
                    f"{exc}") from exc
    return created



class KnownTopics:
    """Topics this process has made sure exist: :meth:`ensure` asks the broker only for new
    ones (a delivery to a newly granted agency, the DLQ of an unknown agency)."""

    def __init__(self, settings: Settings, known: Iterable[str] = ()) -> None:
        self.settings = settings
        self.known: set[str] = set(known)

    def ensure(self, topics: Iterable[str]) -> None:
        missing = set(topics) - self.known
        if missing:
            ensure_topics(self.settings, missing)
            self.known |= missing


def take(consumer: Any, max_records: int, timeout: float) -> list[Any]:
    """The next batch: wait up to ``timeout`` s for one record, then add what the client has
    already fetched, up to ``max_records``, without waiting.

    ``Consumer.consume(n, timeout)`` waits until it has ``n`` records or the timeout passed, so
    at a low rate every batch would sit out the whole timeout in every stage (seconds of
    latency); this returns at once, and under load still yields full batches."""
    first = consumer.consume(1, timeout)
    if not first or max_records <= 1:
        return list(first)
    return [*first, *consumer.consume(max_records - 1, 0)]


def partition_count(settings: Settings, topic: str) -> int:
    """Partitions of an existing topic (to hash an entity to its partition of it)."""
    try:
        meta = admin(settings).list_topics(topic, timeout=15)
    except KafkaException as exc:
        raise BrokerError(f"broker {settings.bootstrap_servers} unreachable: {exc}") from exc
    found = meta.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise BrokerError(f"topic {topic} has no partitions: {found and found.error}")
    return len(found.partitions)


_WORDS = struct.Struct("<I")


def murmur2_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (Java clients; librdkafka's
    ``murmur2_random``) picks for a non-null ``key``: ``toPositive(murmur2(key)) % n``.

    For a producer that bundles records per partition itself and must land each key where a
    keyed producer would have."""
    m, length = 0x5BD1E995, len(key)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    whole = length - length % 4
    for (k,) in _WORDS.iter_unpack(key[:whole]):  # 2.97 -> 2.1 µs for an entity id
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    rest = length % 4
    if rest == 3:
        h ^= key[whole + 2] << 16
    if rest >= 2:
        h ^= key[whole + 1] << 8
    if rest >= 1:
        h ^= key[whole]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions
