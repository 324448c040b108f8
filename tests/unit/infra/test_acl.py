"""The Kafka ACL plan, without a broker: each agency writes exactly its own ingest topics and
reads exactly the deliveries of its grants in force (Art. 8, 24) — nothing more, nothing less."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import ssl
import struct
import threading
from pathlib import Path
from typing import Any

import pytest

from govbus.core.catalogue import Catalogue, load_catalogue
from govbus.core.errors import BrokerError, ConfigError
from govbus.core.sharing import Grant
from govbus.infra.acl import (
    BUS_PRINCIPAL,
    AclEntry,
    AclError,
    ApplyResult,
    advertised_apis,
    apply,
    as_dict,
    diff,
    render_table,
    require_acl_apis,
    tls_context,
)
from govbus.infra.acl import plan as full_plan

NOW = dt.datetime(2025, 11, 25, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue()


def grant(gid: int, recipient: str, resource: str, *, valid_from: dt.datetime = NOW - DAY,
          valid_until: dt.datetime | None = None, revoked_at: dt.datetime | None = None
          ) -> Grant:
    return Grant(gid, recipient, resource, ("uscc", "name"), (), valid_from, valid_until,
                 revoked_at)


def is_notices(e: AclEntry) -> bool:
    """An agency's binding on its own notices (test_each_agency_reads_exactly_its_notices)."""
    return e.principal != BUS_PRINCIPAL and e.resource_name.startswith(
        ("notices.", "govbus-notices-"))


def plan(catalogue: Catalogue, grants: list[Grant], at: dt.datetime) -> list[AclEntry]:
    """The plan's bindings for the data: every one but the agencies' notices."""
    return [e for e in full_plan(catalogue, grants, at) if not is_notices(e)]


def acl_set(entries: list[AclEntry], principal: str, rtype: str, operation: str
            ) -> set[tuple[str, str]]:
    """(pattern, resource) the principal may perform ``operation`` on."""
    return {(e.pattern, e.resource_name) for e in entries
            if e.principal == principal and e.resource_type == rtype
            and e.operation == operation and e.permission == "ALLOW"}


def agency_entries(entries: list[AclEntry]) -> list[AclEntry]:
    return [e for e in entries if e.principal != BUS_PRINCIPAL]


def test_each_provider_writes_exactly_its_own_ingest_topics(catalogue: Catalogue) -> None:
    entries = plan(catalogue, [], NOW)
    for agency in catalogue.agencies:
        own = {("LITERAL", r.ingest_topic) for r in catalogue if r.agency == agency}
        assert own, agency
        assert acl_set(entries, f"User:{agency}", "TOPIC", "WRITE") == own  # Art. 8
        assert acl_set(entries, f"User:{agency}", "TOPIC", "DESCRIBE") == own
    # one WRITE per catalogued resource, all LITERAL, all on ingest topics
    writes = [e for e in agency_entries(entries) if e.operation == "WRITE"]
    assert sorted(e.resource_name for e in writes) == sorted(r.ingest_topic for r in catalogue)


def test_agency_without_grants_reads_nothing(catalogue: Catalogue) -> None:
    entries = plan(catalogue, [grant(1, "hrss", "tax.tax_registration")], NOW)
    assert not [e for e in agency_entries(entries) if e.operation == "READ"
                and e.principal != "User:hrss"]
    for agency in ("tax", "public_security", "market_regulation", "civil_affairs"):
        assert not acl_set(entries, f"User:{agency}", "TOPIC", "READ")
        assert not acl_set(entries, f"User:{agency}", "GROUP", "READ")
    newcomer = plan(catalogue, [], NOW)
    assert not [e for e in agency_entries(newcomer) if e.operation == "READ"]


def test_each_agency_reads_exactly_its_granted_deliveries(catalogue: Catalogue) -> None:
    grants = [grant(1, "tax", "public_security.population_register"),
              grant(2, "tax", "market_regulation.legal_entity_register"),
              grant(3, "hrss", "public_security.population_register"),
              grant(4, "market_regulation", "tax.tax_registration")]
    entries = plan(catalogue, grants, NOW)
    expected = {
        "tax": {"deliver.tax.population_register", "deliver.tax.legal_entity_register"},
        "hrss": {"deliver.hrss.population_register"},
        "market_regulation": {"deliver.market_regulation.tax_registration"},
    }
    for agency, topics in expected.items():
        literal = {("LITERAL", t) for t in topics}
        assert acl_set(entries, f"User:{agency}", "TOPIC", "READ") == literal
        assert acl_set(entries, f"User:{agency}", "TOPIC", "DESCRIBE") >= literal
        assert acl_set(entries, f"User:{agency}", "GROUP", "READ") == {
            ("LITERAL", f"govbus-subscriber-{agency}")}
    # nothing prefixed, nothing on another agency's topics, for any agency
    assert {e.pattern for e in agency_entries(entries)} == {"LITERAL"}
    for e in agency_entries(entries):
        agency = e.principal.removeprefix("User:")
        if e.resource_type == "TOPIC":
            assert e.resource_name.split(".")[1] == agency, e
        assert e.operation in ("READ", "WRITE", "DESCRIBE")
        assert e.permission == "ALLOW" and e.host == "*"


@pytest.mark.parametrize("ended", [
    {"revoked_at": NOW - dt.timedelta(minutes=1)},
    {"valid_until": NOW - dt.timedelta(seconds=1)},
    {"valid_until": NOW},                       # valid_until is exclusive
    {"valid_from": NOW + DAY},                  # not yet in force
], ids=["revoked", "expired", "expires-now", "future"])
def test_grant_not_in_force_gives_no_read(catalogue: Catalogue, ended: dict) -> None:
    live = grant(1, "tax", "public_security.population_register")
    gone = grant(2, "tax", "market_regulation.legal_entity_register", **ended)
    reads = acl_set(plan(catalogue, [live, gone], NOW), "User:tax", "TOPIC", "READ")
    assert reads == {("LITERAL", "deliver.tax.population_register")}
    only_gone = plan(catalogue, [gone], NOW)
    assert not acl_set(only_gone, "User:tax", "TOPIC", "READ")
    assert not acl_set(only_gone, "User:tax", "GROUP", "READ")


def test_revocation_is_a_difference_of_exactly_the_read(catalogue: Catalogue) -> None:
    before = [grant(1, "tax", "public_security.population_register"),
              grant(2, "tax", "market_regulation.legal_entity_register")]
    after = [before[0], grant(2, "tax", "market_regulation.legal_entity_register",
                              revoked_at=NOW - DAY / 2)]
    removed = set(plan(catalogue, before, NOW)) - set(plan(catalogue, after, NOW))
    assert {(e.operation, e.resource_name) for e in removed} == {
        ("READ", "deliver.tax.legal_entity_register"),
        ("DESCRIBE", "deliver.tax.legal_entity_register")}
    assert set(plan(catalogue, after, NOW)) <= set(plan(catalogue, before, NOW))


def test_not_shared_and_uncatalogued_grants_give_nothing(catalogue: Catalogue) -> None:
    entries = plan(catalogue, [grant(1, "tax", "civil_affairs.adoption_register"),  # Art. 15
                               grant(2, "tax", "tax.no_such_resource")], NOW)
    assert not acl_set(entries, "User:tax", "TOPIC", "READ")


def test_duplicate_grants_collapse(catalogue: Catalogue) -> None:
    grants = [grant(1, "tax", "public_security.population_register"),
              grant(2, "tax", "public_security.population_register")]
    entries = plan(catalogue, grants, NOW)
    assert len(entries) == len(set(entries))
    assert entries == sorted(entries)


def test_bus_principal_never_reads_deliveries(catalogue: Catalogue) -> None:
    entries = plan(catalogue, [grant(1, "tax", "public_security.population_register")], NOW)
    bus_reads = acl_set(entries, BUS_PRINCIPAL, "TOPIC", "READ")
    assert ("PREFIXED", "ingest.") in bus_reads
    assert not [n for _, n in bus_reads if n.startswith("deliver")]
    writes = acl_set(entries, BUS_PRINCIPAL, "TOPIC", "WRITE")
    assert {("PREFIXED", p) for p in ("validated.", "dlq.", "deliver.", "govbus.")} <= writes
    assert not [n for _, n in writes if n.startswith("ingest")]


@pytest.mark.parametrize("recipient", ["*", "a.b", "Tax", "tax*", "", "x y"])
def test_names_that_could_widen_an_acl_are_refused(catalogue: Catalogue,
                                                    recipient: str) -> None:
    with pytest.raises(AclError, match="plain name"):
        plan(catalogue, [grant(1, recipient, "public_security.population_register")], NOW)


def test_naive_time_refused(catalogue: Catalogue) -> None:
    with pytest.raises(AclError, match="timezone"):
        plan(catalogue, [], dt.datetime(2025, 1, 1))


def test_renderings(catalogue: Catalogue) -> None:
    entries = plan(catalogue, [grant(7, "tax", "public_security.population_register")], NOW)
    doc = json.loads(json.dumps(as_dict(entries, NOW)))
    assert doc["count"] == len(entries) == len(doc["acls"])
    assert {"principal": "User:tax", "resource_type": "TOPIC",
            "resource_name": "deliver.tax.population_register", "pattern": "LITERAL",
            "operation": "READ", "permission": "ALLOW", "host": "*",
            "reason": "grant 7 on public_security.population_register in force (Art. 24)"
            } in doc["acls"]
    table = render_table(entries).splitlines()
    assert table[0].split()[:5] == ["principal", "type", "pattern", "resource", "operations"]
    row = next(line for line in table if "deliver.tax.population_register" in line)
    assert "DESCRIBE,READ" in row and "User:tax" in row
    result = ApplyResult(entries[:1], [], 3, True).as_dict()
    assert result["dry_run"] and result["created"][0] == entries[0].as_dict()


def test_binding_round_trip(catalogue: Catalogue) -> None:
    for entry in plan(catalogue, [grant(1, "tax", "public_security.population_register")],
                      NOW):
        back = AclEntry.from_binding(entry.binding())
        assert back == entry
        assert back.managed


def test_diff_after_a_revocation_deletes_exactly_the_read(catalogue: Catalogue) -> None:
    before = plan(catalogue, [grant(1, "tax", "public_security.population_register"),
                              grant(2, "tax", "market_regulation.legal_entity_register")],
                  NOW)
    after = plan(catalogue, [grant(1, "tax", "public_security.population_register"),
                             grant(2, "tax", "market_regulation.legal_entity_register",
                                   revoked_at=NOW - DAY)], NOW)
    foreign = [AclEntry("User:kafka_connect", "TOPIC", "connect-offsets", "LITERAL", "READ"),
               AclEntry("User:ops", "GROUP", "ops-tools", "PREFIXED", "READ")]
    stray = AclEntry("User:tax", "TOPIC", "deliver.", "PREFIXED", "READ")  # too wide
    create, delete, unchanged = diff(after, before + foreign + [stray])
    assert create == []
    assert {(e.principal, e.operation, e.resource_name) for e in delete} == {
        ("User:tax", "READ", "deliver.tax.legal_entity_register"),
        ("User:tax", "DESCRIBE", "deliver.tax.legal_entity_register"),
        ("User:tax", "READ", "deliver.")}
    assert unchanged == len(after)
    create, delete, unchanged = diff(before, after)
    assert {(e.operation, e.resource_name) for e in create} == {
        ("READ", "deliver.tax.legal_entity_register"),
        ("DESCRIBE", "deliver.tax.legal_entity_register")}
    assert delete == [] and unchanged == len(after)


def test_each_agency_reads_exactly_its_notices(catalogue: Catalogue) -> None:
    """Every agency of the catalogue or of a grant, and the two overseers, read their own
    notices.<agency> with their own group, LITERAL; the bus writes them and reads none."""
    entries = full_plan(catalogue, [grant(1, "newcomer", "public_security.population_register",
                                          revoked_at=NOW - DAY)], NOW)
    told = {*catalogue.agencies, "information_center", "municipal_office", "newcomer"}
    for agency in told:
        assert acl_set(entries, f"User:{agency}", "TOPIC", "READ") >= {
            ("LITERAL", f"notices.{agency}")}
        assert ("LITERAL", f"govbus-notices-{agency}") in acl_set(
            entries, f"User:{agency}", "GROUP", "READ")
    notices = [e for e in entries if is_notices(e)]
    assert {e.principal.removeprefix("User:") for e in notices} == told
    for e in notices:
        assert e.resource_name.endswith(e.principal.removeprefix("User:")), e
        assert e.pattern == "LITERAL" and e.operation in ("READ", "DESCRIBE")
    assert ("PREFIXED", "notices.") in acl_set(entries, BUS_PRINCIPAL, "TOPIC", "WRITE")
    assert ("PREFIXED", "notices.") not in acl_set(entries, BUS_PRINCIPAL, "TOPIC", "READ")


def test_whole_plan_equals_the_grants_exactly(catalogue: Catalogue) -> None:
    """From a known set of grants the plan is exactly this set of (principal,
    operation, resource) — written out by hand, not derived the way plan() derives it."""
    grants = [grant(1, "tax", "public_security.population_register"),
              grant(2, "hrss", "tax.tax_registration"),
              grant(3, "hrss", "market_regulation.legal_entity_register",
                    revoked_at=NOW - DAY / 2),                       # revoked: nothing
              grant(4, "tax", "civil_affairs.adoption_register"),    # not shared: nothing
              grant(5, "civil_affairs", "hrss.social_insurance_enrolment",
                    valid_from=NOW + DAY)]                            # not yet: nothing
    expected = {
        ("User:public_security", "WRITE", "ingest.public_security.population_register"),
        ("User:market_regulation", "WRITE", "ingest.market_regulation.legal_entity_register"),
        ("User:tax", "WRITE", "ingest.tax.tax_registration"),
        ("User:hrss", "WRITE", "ingest.hrss.social_insurance_enrolment"),
        ("User:civil_affairs", "WRITE", "ingest.civil_affairs.marriage_register"),
        ("User:civil_affairs", "WRITE", "ingest.civil_affairs.adoption_register"),
        ("User:tax", "READ", "deliver.tax.population_register"),
        ("User:tax", "READ", "govbus-subscriber-tax"),
        ("User:hrss", "READ", "deliver.hrss.tax_registration"),
        ("User:hrss", "READ", "govbus-subscriber-hrss"),
    }
    expected |= {(p, "DESCRIBE", r) for p, op, r in expected if r.startswith(("ingest.",
                                                                              "deliver."))}
    got = {(e.principal, e.operation, e.resource_name)
           for e in plan(catalogue, grants, NOW) if e.principal != BUS_PRINCIPAL}
    assert got - expected == set(), "more than the grants allow"
    assert expected - got == set(), "less than the grants need"


# --- the ApiVersions probe over TLS, against a stand-in broker --------------------------------

KEY_PASSWORD = "key-pa55"
ACL_KEYS = (18, 29, 30, 31)  # ApiVersions, DescribeAcls, CreateAcls, DeleteAcls


def _pem_pair(tmp: Path, name: str, cn: str, issuer: tuple[Any, Any] | None = None, *,
              ca: bool = False, password: str | None = None) -> tuple[Any, Any]:
    """A key and a certificate for ``cn`` (issued by ``issuer``, else self-signed), written to
    ``<name>.pem`` and ``<name>.key`` (encrypted with ``password`` when given)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    signer_key, signer = issuer or (key, None)
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(signer.subject if signer else subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - DAY).not_valid_after(now + DAY)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    cert = builder.sign(signer_key, hashes.SHA256())
    encryption = (serialization.BestAvailableEncryption(password.encode()) if password
                  else serialization.NoEncryption())
    (tmp / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    return key, cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, the broker's certificate (127.0.0.1, localhost) and an agency's client
    certificate, its key encrypted; and a CA nobody trusts."""
    pytest.importorskip("cryptography")  # only to make the certificates
    tmp = tmp_path_factory.mktemp("pki")
    ca = _pem_pair(tmp, "ca", "govbus test CA", ca=True)
    _pem_pair(tmp, "broker", "kafka-1", ca)
    _pem_pair(tmp, "client", "public_security", ca, password=KEY_PASSWORD)
    _pem_pair(tmp, "other-ca", "someone else's CA", ca=True)
    (tmp / "key.password").write_text(KEY_PASSWORD + "\n")
    return tmp


class TlsBroker:
    """Answers one ApiVersions v0 request over TLS, asking for a client certificate; records
    the client certificate's common name."""

    def __init__(self, pki: Path, apis: tuple[int, ...] = ACL_KEYS) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(pki / "broker.pem", pki / "broker.key")
        self.context.load_verify_locations(pki / "ca.pem")
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.apis = apis
        self.client: str | None = None
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.bootstrap = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError), self.listener:
            raw, _ = self.listener.accept()
            with self.context.wrap_socket(raw, server_side=True) as sock:
                cert: Any = sock.getpeercert() or {}
                names = [rdn[0] for rdn in cert.get("subject", ())]
                self.client = dict(names).get("commonName")
                (size,) = struct.unpack(">i", sock.recv(4))
                _key, _version, correlation = struct.unpack(">hhi", sock.recv(size)[:8])
                body = struct.pack(">ihi", correlation, 0, len(self.apis)) + b"".join(
                    struct.pack(">hhh", key, 0, 3) for key in self.apis)
                sock.sendall(struct.pack(">i", len(body)) + body)


def mtls_config(pki: Path, ca: str = "ca.pem") -> dict[str, Any]:
    """What ``kafka_security`` gives an agency's SASL_SSL client with mutual TLS."""
    return {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "public_security", "sasl.password": "pw",
            "ssl.ca.location": str(pki / ca),
            "ssl.certificate.location": str(pki / "client.pem"),
            "ssl.key.location": str(pki / "client.key"), "ssl.key.password": KEY_PASSWORD}


def test_the_probe_speaks_tls_with_the_client_certificate(pki: Path) -> None:
    broker = TlsBroker(pki)
    tls = tls_context(mtls_config(pki))
    assert tls is not None and tls.check_hostname and tls.verify_mode == ssl.CERT_REQUIRED
    assert require_acl_apis(broker.bootstrap, 5, tls=tls) == set(ACL_KEYS)
    broker.thread.join(5)
    assert broker.client == "public_security"  # mutual TLS: the agency's certificate shown


def test_the_probe_refuses_a_broker_whose_certificate_is_not_trusted(pki: Path) -> None:
    broker = TlsBroker(pki)
    with pytest.raises(BrokerError, match=r"unreachable: 127\.0\.0\.1:\d+: its TLS certificate "
                                          r"is not trusted \(KAFKA_SSL_CA_LOCATION\)"):
        advertised_apis(broker.bootstrap, 5, tls=tls_context(mtls_config(pki, "other-ca.pem")))


def test_the_probe_over_tls_still_refuses_a_broker_without_the_acl_apis(pki: Path) -> None:
    broker = TlsBroker(pki, apis=(0, 1, 18, 29, 30))
    with pytest.raises(BrokerError, match=r"does not support ACLs: it does not offer "
                                          r"DeleteAcls \(API 31\)"):
        require_acl_apis(broker.bootstrap, 5, tls=tls_context(mtls_config(pki)))


def test_apply_probes_over_tls_before_the_admin_client(pki: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    broker = TlsBroker(pki, apis=(18,))
    made: list[dict[str, Any]] = []
    monkeypatch.setattr("govbus.infra.acl.AdminClient", lambda conf: made.append(conf))
    with pytest.raises(BrokerError, match="does not support ACLs"):
        apply([], broker.bootstrap, admin_config=mtls_config(pki), timeout=5)
    assert made == [], "no admin client for a broker that cannot take ACLs"


@pytest.mark.parametrize("protocol", [None, "PLAINTEXT", "SASL_PLAINTEXT"])
def test_no_tls_for_the_probe_without_a_tls_protocol(protocol: str | None) -> None:
    conf = {} if protocol is None else {"security.protocol": protocol}
    assert tls_context(conf) is None


def test_tls_files_the_probe_cannot_load_are_named(pki: Path) -> None:
    with pytest.raises(ConfigError, match=r"^KAFKA_SSL_CA_LOCATION=.*key\.password: not a CA "
                                          r"certificate file \(PEM\)"):
        tls_context(mtls_config(pki, "key.password"))
    with pytest.raises(ConfigError, match=r"KAFKA_SSL_CERTIFICATE_LOCATION=.*client\.pem and "
                                          r"KAFKA_SSL_KEY_LOCATION=.*client\.key \(password "
                                          r"from KAFKA_SSL_KEY_PASSWORD_FILE\)"):
        tls_context(mtls_config(pki) | {"ssl.key.password": "wrong"})
    with pytest.raises(ConfigError, match="KAFKA_SSL_CERTIFICATE_LOCATION and "
                                          "KAFKA_SSL_KEY_LOCATION go together"):
        tls_context({"security.protocol": "SSL", "ssl.key.location": str(pki / "client.key")})
