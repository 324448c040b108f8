"""Kafka ACLs that follow the catalogue and the grants in force (Art. 8, 24).

:func:`plan` is pure: from the catalogue, the grants and a moment it derives every ACL the
bus needs, and nothing more —

- each provider agency (``User:<agency>``) may WRITE and DESCRIBE exactly its own
  ``ingest.<agency>.<resource>`` topics, one LITERAL binding per catalogued resource (Art. 8:
  one datum, one source);
- each agency may READ and DESCRIBE exactly ``deliver.<agency>.<resource>`` for each grant in
  force, and READ its consumer group ``govbus-subscriber-<agency>`` (Art. 24: shared data is
  used only by the agencies entitled to it); an agency without a grant in force reads no data;
- each agency of the catalogue or of a grant, and the information center and the municipal
  office, may READ and DESCRIBE its own ``notices.<agency>`` (what the duties app tells it) and
  READ its group ``govbus-notices-<agency>``; nobody reads another's notices;
- the bus's own service principal ``User:govbus`` gets what the stream apps need, with
  PREFIXED bindings (read ingest, write validated/dlq/deliver, the delivery records); it is
  never given READ on ``deliver.*``: the operator routes deliveries, it does not consume them.

:func:`apply` makes a broker match a plan: it creates the missing bindings and deletes the
ones in the bus's namespace (topics ``ingest.``, ``validated.``, ``dlq.``, ``deliver.``,
``govbus.``, ``govbus-``, ``reconcile.``; groups ``govbus-``) that the plan no longer has — a
revoked or expired grant loses its READ. Bindings outside that namespace are left alone.

The embedded Tansu broker neither enforces ACLs nor implements the ACL admin API fully (it
does not advertise DeleteAcls, and librdkafka aborts the process on its CreateAcls answer), so
:func:`apply` asks the broker which APIs it speaks before it sends anything, and refuses with
a :class:`BrokerError` that says so.

``govbus acl apply`` connects as every other client does, with the security settings of
``govbus.core.kafka.kafka_security`` (docs/deployment.md, "Authenticated clients"), and asks
that question on every protocol: with ``SSL`` or ``SASL_SSL`` the probe's socket is wrapped in
TLS with the same CA, client certificate and key (the broker's name verified, as librdkafka
does); on a SASL listener no authentication is needed, as Kafka answers ApiVersions before the
SASL handshake (KIP-43). So a broker that lacks the ACL APIs is refused clearly whatever its
listener, and a TLS or certificate problem is reported before the admin client starts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import socket
import ssl
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from govbus.core import topics
from govbus.core.catalogue import Catalogue
from govbus.core.errors import BrokerError, ConfigError, GovbusError
from govbus.core.sharing import Grant

NAME = re.compile(r"^[a-z0-9_]+$")
BUS_PRINCIPAL = "User:govbus"
MANAGED_TOPIC_PREFIXES = (topics.INGEST_PREFIX, topics.VALIDATED_PREFIX, topics.DLQ_PREFIX,
                          topics.DELIVER_PREFIX, topics.BUS_PREFIX, "govbus-",
                          topics.RECONCILE_PREFIX, topics.NOTICES_PREFIX)
OVERSEERS = ("information_center", "municipal_office")  # told of what is overdue (Art. 31)
MANAGED_GROUP_PREFIXES = ("govbus-",)
ACL_APIS = {29: "DescribeAcls", 30: "CreateAcls", 31: "DeleteAcls"}

# What the stream apps need (type, prefix, operations, why); PREFIXED, for User:govbus only.
_BUS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("TOPIC", topics.INGEST_PREFIX, ("READ", "DESCRIBE", "CREATE"),
     "the hot path reads every ingest topic; `govbus up` creates them"),
    ("TOPIC", topics.VALIDATED_PREFIX, ("WRITE", "DESCRIBE", "CREATE"),
     "the hot path writes accepted events, for audit and taps"),
    ("TOPIC", topics.DLQ_PREFIX, ("WRITE", "DESCRIBE", "CREATE"),
     "the hot path rejects with reasons"),
    ("TOPIC", topics.DELIVER_PREFIX, ("WRITE", "DESCRIBE", "CREATE"),
     "the hot path delivers per grant; the bus never reads an agency's deliveries (Art. 24)"),
    ("TOPIC", topics.BUS_PREFIX, ("READ", "WRITE", "DESCRIBE", "CREATE"),
     "the bus's own topics (control-plane events, log checkpoints)"),
    ("TOPIC", topics.RECONCILE_PREFIX, ("READ", "WRITE", "DESCRIBE", "CREATE"),
     "reconciliation cases (Art. 19-20)"),
    ("TOPIC", topics.NOTICES_PREFIX, ("WRITE", "DESCRIBE", "CREATE"),
     "the duties app tells each agency; the bus never reads an agency's notices"),
    ("TOPIC", "govbus-duties-", ("READ", "WRITE", "DESCRIBE", "CREATE"),
     "the duties app's own faust topic (its leader election, for its timers)"),
    ("GROUP", "govbus-", ("READ",), "consumer groups of the stream apps"),
)


class AclError(GovbusError):
    """A plan cannot be made: a name that would widen an ACL, a naive timestamp."""


def subscriber_group(agency: str) -> str:
    """The consumer group of an agency's subscriber (``govbus.consumers.subscriber``)."""
    return f"govbus-subscriber-{agency}"


def notices_group(agency: str) -> str:
    """The consumer group an agency's system reads its ``notices.<agency>`` with."""
    return f"govbus-notices-{agency}"


@dataclass(frozen=True, order=True)
class AclEntry:
    """One ALLOW binding; ``reason`` explains it and takes no part in comparisons."""

    principal: str
    resource_type: str      # TOPIC | GROUP
    resource_name: str
    pattern: str            # LITERAL | PREFIXED
    operation: str          # READ | WRITE | DESCRIBE | CREATE
    permission: str = "ALLOW"
    host: str = "*"
    reason: str = field(default="", compare=False)

    def as_dict(self) -> dict[str, str]:
        return {"principal": self.principal, "resource_type": self.resource_type,
                "resource_name": self.resource_name, "pattern": self.pattern,
                "operation": self.operation, "permission": self.permission, "host": self.host,
                "reason": self.reason}

    def binding(self) -> AclBinding:
        return AclBinding(ResourceType[self.resource_type], self.resource_name,
                          ResourcePatternType[self.pattern], self.principal, self.host,
                          AclOperation[self.operation], AclPermissionType[self.permission])

    @classmethod
    def from_binding(cls, b: AclBinding) -> AclEntry:
        # librdkafka hands back enums; the constructor's signature also admits str/int
        def name(value: Any) -> str:
            return str(getattr(value, "name", value))

        return cls(b.principal, name(b.restype), b.name, name(b.resource_pattern_type),
                   name(b.operation), name(b.permission_type), b.host)

    @property
    def managed(self) -> bool:
        """In the bus's namespace, so :func:`apply` owns it."""
        prefixes = {"TOPIC": MANAGED_TOPIC_PREFIXES, "GROUP": MANAGED_GROUP_PREFIXES}
        return self.resource_name.startswith(prefixes.get(self.resource_type, ()))


def _name(kind: str, value: str | None) -> str:
    # "User:*" or a LITERAL "*" would be Kafka's wildcard: refuse anything but plain names.
    if not value or not NAME.match(value):
        raise AclError(f"{kind} {value!r} is not a plain name ([a-z0-9_]+); an ACL for it "
                       "could match more than intended (Art. 24)")
    return value


def plan(catalogue: Catalogue, grants: Iterable[Grant], at: dt.datetime) -> list[AclEntry]:
    """Every ACL the bus needs at ``at``, sorted; duplicates collapsed.

    Grants of resources the catalogue does not hold, or holds as not shared (Art. 15), give
    nothing: the router never delivers them.
    """
    if at.tzinfo is None:
        raise AclError("plan(at=...) needs a timezone-aware time (grants are stored in UTC)")
    entries: dict[AclEntry, AclEntry] = {}

    def add(principal: str, rtype: str, name: str, pattern: str, ops: Iterable[str],
            reason: str) -> None:
        for op in ops:
            entry = AclEntry(principal, rtype, name, pattern, op, reason=reason)
            entries.setdefault(entry, entry)

    for rtype, prefix, ops, why in _BUS:
        add(BUS_PRINCIPAL, rtype, prefix, "PREFIXED", ops, why)
    for res in catalogue:
        provider = _name("provider", res.provider)
        if provider != res.agency:
            raise AclError(f"{res.id}: provider {provider} is not the agency folder "
                           f"{res.agency}; run `govbus catalogue check`")
        _name("resource", res.name)
        add(f"User:{provider}", "TOPIC", res.ingest_topic, "LITERAL", ("WRITE", "DESCRIBE"),
            f"provider of {res.id} (Art. 8)")
    grants = sorted(grants, key=lambda g: g.grant_id)
    told = {*catalogue.agencies, *OVERSEERS, *(g.recipient for g in grants)}
    for agency in sorted(_name("agency", a) for a in told):
        add(f"User:{agency}", "TOPIC", topics.notices(agency), "LITERAL", ("READ", "DESCRIBE"),
            "its notices (the duties app)")
        add(f"User:{agency}", "GROUP", notices_group(agency), "LITERAL", ("READ",),
            "the consumer group of its notices")
    for grant in grants:
        res = catalogue.resources.get(grant.resource_id)
        if res is None or res.share_class == "not_shared" or not grant.in_force(at):
            continue
        agency = _name("recipient", grant.recipient)
        add(f"User:{agency}", "TOPIC", topics.deliver(agency, res.id), "LITERAL",
            ("READ", "DESCRIBE"), f"grant {grant.grant_id} on {res.id} in force (Art. 24)")
        add(f"User:{agency}", "GROUP", subscriber_group(agency), "LITERAL", ("READ",),
            "its subscriber's consumer group")
    return sorted(entries)


def as_dict(entries: Iterable[AclEntry], at: dt.datetime | None = None) -> dict[str, Any]:
    """The plan as JSON-ready data (``govbus acl plan --json``)."""
    acls = [e.as_dict() for e in entries]
    return {"at": at.isoformat() if at else None, "count": len(acls), "acls": acls}


def render_table(entries: Iterable[AclEntry]) -> str:
    """One line per principal and resource, operations together; for people."""
    rows: dict[tuple[str, str, str, str], tuple[list[str], str]] = {}
    for e in entries:
        ops, _ = rows.setdefault((e.principal, e.resource_type, e.pattern, e.resource_name),
                                 ([], e.reason))
        ops.append(e.operation if e.permission == "ALLOW" else f"{e.permission} {e.operation}")
    head = ("principal", "type", "pattern", "resource", "operations", "why")
    lines = [head] + [(*k, ",".join(ops), why) for k, (ops, why) in rows.items()]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=False))
                     + "  " + line[-1] for line in lines)


@dataclass(frozen=True)
class ApplyResult:
    """What :func:`apply` created and deleted (or would, with ``dry_run``)."""

    created: list[AclEntry]
    deleted: list[AclEntry]
    unchanged: int
    dry_run: bool

    def as_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "unchanged": self.unchanged,
                "created": [e.as_dict() for e in self.created],
                "deleted": [e.as_dict() for e in self.deleted]}


def apply(entries: Iterable[AclEntry], bootstrap: str, dry_run: bool = False, *,
          admin_config: dict[str, Any] | None = None, timeout: float = 15.0) -> ApplyResult:
    """Create what the plan has and the broker lacks; delete managed bindings it no longer has.

    ``admin_config`` adds librdkafka's security settings for a secured cluster
    (``govbus.core.kafka.kafka_security``: ``security.protocol``, SASL, TLS files); the
    ApiVersions probe uses the same TLS settings (:func:`tls_context`). Raises
    :class:`BrokerError` when the broker does not support ACLs.
    """
    conf = client_config(bootstrap, admin_config)
    require_acl_apis(bootstrap, timeout, tls=tls_context(conf))
    client = AdminClient(conf)
    create, delete, unchanged = diff(entries, _describe(client, bootstrap, timeout))
    if not dry_run:
        _create(client, create, timeout)
        _delete(client, delete, timeout)
    return ApplyResult(create, delete, unchanged, dry_run)


def client_config(bootstrap: str, admin_config: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """The admin client's config: ``bootstrap``, then ``admin_config`` (the security
    settings)."""
    return {"bootstrap.servers": bootstrap} | (admin_config or {})


#: the librdkafka TLS settings the probe uses, and the variable each comes from
_TLS_KEYS = {"ssl.ca.location": "KAFKA_SSL_CA_LOCATION",
             "ssl.certificate.location": "KAFKA_SSL_CERTIFICATE_LOCATION",
             "ssl.key.location": "KAFKA_SSL_KEY_LOCATION",
             "ssl.key.password": "KAFKA_SSL_KEY_PASSWORD_FILE"}


def tls_context(conf: dict[str, Any]) -> ssl.SSLContext | None:
    """The TLS context a raw connection to the broker needs under client config ``conf``, or
    None when its ``security.protocol`` (default PLAINTEXT) is not ``SSL`` or ``SASL_SSL``.

    As librdkafka: the broker's certificate verified against ``ssl.ca.location`` (unset: the
    system's CAs) and its host name checked; ``ssl.certificate.location`` and
    ``ssl.key.location`` (with ``ssl.key.password``) presented for mutual TLS. A file the
    context cannot load is a ConfigError naming its variable."""
    if str(conf.get("security.protocol", "PLAINTEXT")).upper() not in ("SSL", "SASL_SSL"):
        return None
    ca = conf.get("ssl.ca.location")
    try:
        context = ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{_TLS_KEYS['ssl.ca.location']}={ca}: not a CA certificate "
                          f"file (PEM): {exc}") from exc
    certificate, key = conf.get("ssl.certificate.location"), conf.get("ssl.key.location")
    if certificate or key:
        if not (certificate and key):
            raise ConfigError(f"{_TLS_KEYS['ssl.certificate.location']} and "
                              f"{_TLS_KEYS['ssl.key.location']} go together: mutual TLS needs "
                              "the client's certificate and its private key")
        try:
            context.load_cert_chain(str(certificate), str(key), conf.get("ssl.key.password"))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"{_TLS_KEYS['ssl.certificate.location']}={certificate} and "
                f"{_TLS_KEYS['ssl.key.location']}={key} (password from "
                f"{_TLS_KEYS['ssl.key.password']}): not a certificate and its key (PEM): "
                f"{exc}") from exc
    return context


def diff(wanted: Iterable[AclEntry], existing: Iterable[AclEntry]
         ) -> tuple[list[AclEntry], list[AclEntry], int]:
    """(to create, to delete, unchanged): deletes only bindings in the bus's namespace."""
    want, have = set(wanted), set(existing)
    return (sorted(want - have), sorted(e for e in have - want if e.managed),
            len(want & have))


def _describe(client: AdminClient, bootstrap: str, timeout: float) -> set[AclEntry]:
    anything: Any = None  # a filter's None matches every name, principal and host
    every = AclBindingFilter(ResourceType.ANY, anything, ResourcePatternType.ANY, anything,
                             anything, AclOperation.ANY, AclPermissionType.ANY)
    try:
        found = client.describe_acls(every, request_timeout=timeout).result()
    except KafkaException as exc:
        if exc.args[0].code() == KafkaError.SECURITY_DISABLED:
            raise BrokerError(f"the broker at {bootstrap} does not support ACLs: no "
                              f"authorizer is configured ({exc})") from exc
        raise BrokerError(f"cannot describe the ACLs of {bootstrap}: {exc}") from exc
    return {AclEntry.from_binding(b) for b in found}


def _create(client: AdminClient, entries: list[AclEntry], timeout: float) -> None:
    if not entries:
        return
    futures = client.create_acls([e.binding() for e in entries], request_timeout=timeout)
    failed = []
    for binding, fut in futures.items():
        try:
            fut.result()
        except KafkaException as exc:
            failed.append(f"{binding}: {exc}")
    if failed:
        raise BrokerError(f"{len(failed)} ACL(s) not created: {'; '.join(failed[:5])}")


def _delete(client: AdminClient, entries: list[AclEntry], timeout: float) -> None:
    if not entries:
        return
    filters = [AclBindingFilter(ResourceType[e.resource_type], e.resource_name,
                                ResourcePatternType[e.pattern], e.principal, e.host,
                                AclOperation[e.operation], AclPermissionType[e.permission])
               for e in entries]
    failed = []
    for filt, fut in client.delete_acls(filters, request_timeout=timeout).items():
        try:
            fut.result()
        except KafkaException as exc:
            failed.append(f"{filt}: {exc}")
    if failed:
        raise BrokerError(f"{len(failed)} ACL(s) not deleted: {'; '.join(failed[:5])}")


def require_acl_apis(bootstrap: str, timeout: float = 10.0, *,
                     tls: ssl.SSLContext | None = None) -> set[int]:
    """Ask the broker (ApiVersions) whether it speaks Describe/Create/DeleteAcls; over TLS
    with ``tls`` (:func:`tls_context`).

    librdkafka trusts a broker that advertises an API; Tansu advertises CreateAcls but answers
    it in a form that aborts the client process, so the question is asked first, directly.
    """
    apis = advertised_apis(bootstrap, timeout, tls=tls)
    missing = [f"{name} (API {key})" for key, name in ACL_APIS.items() if key not in apis]
    if missing:
        raise BrokerError(f"the broker at {bootstrap} does not support ACLs: it does not "
                          f"offer {', '.join(missing)}. ACLs are applied to Apache Kafka "
                          "(infra/docker-compose.yml); the embedded Tansu broker neither "
                          "stores nor enforces them")
    return apis


def advertised_apis(bootstrap: str, timeout: float = 10.0, *,
                    tls: ssl.SSLContext | None = None) -> set[int]:
    """The API keys the first reachable bootstrap server advertises (ApiVersions v0), asked
    over TLS with ``tls`` when given (the server's name checked against its certificate).
    Needs no SASL authentication: a Kafka broker answers ApiVersions before the handshake."""
    client_id = b"govbus-acl"
    request = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    errors = []
    for server in bootstrap.split(","):
        host, _, port = server.strip().split("://")[-1].rpartition(":")
        host = host.strip("[]")
        try:
            with socket.create_connection((host, int(port)), timeout) as raw, \
                    (tls.wrap_socket(raw, server_hostname=host) if tls else raw) as sock:
                sock.sendall(struct.pack(">i", len(request)) + request)
                (size,) = struct.unpack(">i", _recv(sock, 4))
                body = _recv(sock, size)
        except ssl.SSLCertVerificationError as exc:
            errors.append(f"{server}: its TLS certificate is not trusted "
                          f"(KAFKA_SSL_CA_LOCATION): {exc.verify_message or exc}")
            continue
        except (OSError, ValueError, struct.error) as exc:
            errors.append(f"{server}: {exc}")
            continue
        _corr, error, count = struct.unpack(">ihi", body[:10])
        if error:
            raise BrokerError(f"{server} answered ApiVersions with error code {error}")
        return {struct.unpack(">h", body[10 + 6 * i:12 + 6 * i])[0] for i in range(count)}
    raise BrokerError(f"broker {bootstrap} unreachable: {'; '.join(errors)}")


def _recv(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("connection closed by the broker")
        data += chunk
    return data


DESCRIPTION = ("Kafka ACLs from the catalogue and the grants in force (Art. 24). Broker and "
               "database from KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL or the embedded runtime.")


def main(argv: list[str] | None = None) -> int:
    """``python -m govbus.infra.acl plan [--json]`` / ``... apply [--dry-run] [--json]``."""
    parser = argparse.ArgumentParser(prog="python -m govbus.infra.acl", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``plan [--json]`` and ``apply [--dry-run] [--json]``, each with its own help."""
    sub = parser.add_subparsers(dest="acl_action", required=True, metavar="ACTION")
    for name, help_ in (("plan", "print the ACLs the bus needs now"),
                        ("apply", "make the broker's ACLs match the plan")):
        p = sub.add_parser(name, help=help_, description=help_)
        if name == "apply":
            p.add_argument("--dry-run", action="store_true", help="say what would change, "
                           "change nothing")
        p.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    """Plan or apply as ``args`` say (``govbus acl`` calls this)."""
    from govbus.core.catalogue import load_catalogue
    from govbus.core.config import Settings
    from govbus.core.kafka import kafka_security
    from govbus.core.sharing_store import load_grants

    try:
        settings = Settings.from_env()
        at = dt.datetime.now(dt.UTC)
        entries = plan(load_catalogue(settings.schemas_dir), load_grants(settings.database_url),
                       at)
        if args.acl_action == "plan":
            print(json.dumps(as_dict(entries, at), ensure_ascii=False, indent=2) if args.json
                  else render_table(entries))
            return 0
        result = apply(entries, settings.bootstrap_servers, dry_run=args.dry_run,
                       admin_config=kafka_security(settings))
    except GovbusError as exc:
        print(f"govbus acl: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.as_dict(), ensure_ascii=False, indent=2))
    else:
        verb = "would be " if result.dry_run else ""
        print(f"{len(result.created)} ACL(s) {verb}created, {len(result.deleted)} {verb}"
              f"deleted, {result.unchanged} unchanged")
        for tag, group in (("+", result.created), ("-", result.deleted)):
            for e in group:
                print(f"  {tag} {e.principal} {e.operation} {e.resource_type} "
                      f"{e.pattern} {e.resource_name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
