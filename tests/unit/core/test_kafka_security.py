"""Every Kafka client takes librdkafka's security settings from the one settings object
(``govbus.core.kafka.kafka_security``): the configs each component builds — producers,
consumers, admin clients, the ops exporter's and ``govbus acl``'s — under PLAINTEXT (unchanged:
no security key) and under SASL_SSL with mutual TLS, and every rule on their combination, each
refused naming its variables. No broker: the clients are never started."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from govbus.core import kafka
from govbus.core.config import Settings, kafka_security_settings
from govbus.core.errors import ConfigError
from govbus.core.kafka import (
    admin_config,
    consumer_config,
    kafka_security,
    producer_config,
)
from govbus.infra import acl
from govbus.stream_apps import ops_exporter

SERVICES = {"KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9092", "DATABASE_URL": "postgresql://x/y"}
SECURITY_PREFIXES = ("security.", "sasl.", "ssl.")
PASSWORD = "scram-pa55word"


def security_keys(conf: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in conf.items() if k.startswith(SECURITY_PREFIXES)}


def settings_of(tmp_path: Path, **variables: str) -> Settings:
    """The settings of a process whose environment holds ``variables``."""
    return Settings.from_env(SERVICES | {"GOVBUS_STATE_DIR": str(tmp_path)} | variables)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """The credential files of an agency's client; contents only need to be readable here."""
    made = {}
    for name, text in (("ca.pem", "CA\n"), ("client.pem", "CERT\n"), ("client.key", "KEY\n"),
                       ("key.password", "key-pa55\n"), ("sasl.password", PASSWORD + "\n")):
        made[name] = tmp_path / name
        made[name].write_text(text)
    return made


@pytest.fixture
def secured(tmp_path: Path, files: dict[str, Path]) -> dict[str, str]:
    """SASL_SSL with SCRAM-SHA-512 and mutual TLS, the password in a file."""
    return {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": "public_security",
            "KAFKA_SASL_PASSWORD_FILE": str(files["sasl.password"]),
            "KAFKA_SSL_CA_LOCATION": str(files["ca.pem"]),
            "KAFKA_SSL_CERTIFICATE_LOCATION": str(files["client.pem"]),
            "KAFKA_SSL_KEY_LOCATION": str(files["client.key"]),
            "KAFKA_SSL_KEY_PASSWORD_FILE": str(files["key.password"])}


def expected(files: dict[str, Path]) -> dict[str, str]:
    return {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "public_security", "sasl.password": PASSWORD,
            "ssl.ca.location": str(files["ca.pem"]),
            "ssl.certificate.location": str(files["client.pem"]),
            "ssl.key.location": str(files["client.key"]), "ssl.key.password": "key-pa55"}


class Captured:
    """A stand-in for AdminClient that records its config and lists no consumer group."""

    configs: list[dict[str, Any]] = []

    def __init__(self, conf: dict[str, Any]) -> None:
        Captured.configs.append(dict(conf))

    def list_consumer_groups(self, **_: Any) -> Any:
        class Done:
            def result(self) -> Any:
                return argparse.Namespace(valid=[])
        return Done()


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    Captured.configs = []
    for module in (kafka, ops_exporter, acl):
        monkeypatch.setattr(module, "AdminClient", Captured)
    return Captured.configs


def every_config(settings: Settings, captured: list[dict[str, Any]],
                 monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    """The config of every kind of client the project builds from ``settings``."""
    kafka.admin(settings)
    ops_exporter.consumer_offsets(settings)
    probed: list[dict[str, Any]] = []  # the probe's TLS (tests/unit/infra/test_acl.py)
    monkeypatch.setattr(acl, "tls_context", lambda conf: probed.append(dict(conf)))
    monkeypatch.setattr(acl, "require_acl_apis", lambda *a, **k: set())
    monkeypatch.setattr(acl, "_describe", lambda *a: set())
    acl.apply([], settings.bootstrap_servers, dry_run=True,
              admin_config=kafka_security(settings))
    made_admin, exporter_admin, acl_admin = captured
    assert probed == [acl_admin], "the ApiVersions probe uses the admin client's TLS settings"
    return {"producer": producer_config(settings), "consumer": consumer_config(settings, "g"),
            "admin_config": admin_config(settings), "admin": made_admin,
            "ops exporter admin": exporter_admin,
            "ops exporter watermarks": ops_exporter.watermark_config(settings),
            "acl admin": acl_admin}


# --- what every client gets -------------------------------------------------------------------

def test_plaintext_adds_no_security_key_to_any_client(
        tmp_path: Path, captured: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_of(tmp_path)
    assert settings.kafka_security_protocol == "PLAINTEXT" and kafka_security(settings) == {}
    explicit = settings_of(tmp_path, KAFKA_SECURITY_PROTOCOL="PLAINTEXT")
    assert kafka_security(explicit) == {}
    direct = Settings("127.0.0.1:1", "postgresql://x/y", Path("s"))  # as `govbus up` builds it
    assert kafka_security(direct) == {}
    for client, conf in every_config(settings, captured, monkeypatch).items():
        assert security_keys(conf) == {}, client
        assert conf["bootstrap.servers"] == "kafka-1:9092", client


def test_sasl_ssl_with_mutual_tls_reaches_every_client(
        tmp_path: Path, files: dict[str, Path], secured: dict[str, str],
        captured: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_of(tmp_path, **secured)
    assert kafka_security(settings) == expected(files)
    configs = every_config(settings, captured, monkeypatch)
    for client, conf in configs.items():
        assert security_keys(conf) == expected(files), client
    # the clients' own settings are still there, next to the security ones
    assert configs["producer"]["enable.idempotence"] is True
    assert configs["consumer"]["group.id"] == "g"
    assert configs["ops exporter watermarks"]["group.id"] == "govbus-ops-exporter"
    assert configs["ops exporter watermarks"]["enable.auto.commit"] is False


def test_the_acl_command_connects_with_the_settings(
        tmp_path: Path, files: dict[str, Path], secured: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``govbus acl apply`` passes the settings' security to ``apply``."""
    for key, value in (SERVICES | secured | {"GOVBUS_STATE_DIR": str(tmp_path)}).items():
        monkeypatch.setenv(key, value)
    seen: dict[str, Any] = {}

    def apply(entries: Any, bootstrap: str, dry_run: bool = False, **kw: Any) -> Any:
        seen.update(bootstrap=bootstrap, **kw)
        return acl.ApplyResult([], [], 0, dry_run)

    monkeypatch.setattr("govbus.core.sharing_store.load_grants", lambda dsn: [])
    monkeypatch.setattr(acl, "apply", apply)
    assert acl.main(["apply", "--dry-run"]) == 0
    assert seen == {"bootstrap": "kafka-1:9092", "admin_config": expected(files)}


def test_sasl_plaintext_has_no_tls_and_a_password_variable_serves(tmp_path: Path) -> None:
    settings = settings_of(tmp_path, KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
                           KAFKA_SASL_MECHANISM="SCRAM-SHA-256", KAFKA_SASL_USERNAME="govbus",
                           KAFKA_SASL_PASSWORD="from-the-variable")
    assert kafka_security(settings) == {
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "govbus", "sasl.password": "from-the-variable"}


def test_the_password_file_wins_and_is_read_at_each_build(
        tmp_path: Path, files: dict[str, Path], secured: dict[str, str]) -> None:
    settings = settings_of(tmp_path, **secured, KAFKA_SASL_PASSWORD="the-variable-loses")
    assert producer_config(settings)["sasl.password"] == PASSWORD
    files["sasl.password"].write_text("rotated\r\n")  # a line break of any kind is stripped
    assert consumer_config(settings, "g")["sasl.password"] == "rotated"
    files["sasl.password"].write_text("  spaces kept  \n\n")
    assert kafka_security(settings)["sasl.password"] == "  spaces kept  "


def test_ssl_alone_server_verification_only(tmp_path: Path, files: dict[str, Path]) -> None:
    settings = settings_of(tmp_path, KAFKA_SECURITY_PROTOCOL="SSL",
                           KAFKA_SSL_CA_LOCATION=str(files["ca.pem"]))
    assert kafka_security(settings) == {"security.protocol": "SSL",
                                        "ssl.ca.location": str(files["ca.pem"])}
    system_cas = settings_of(tmp_path, KAFKA_SECURITY_PROTOCOL="SSL")
    assert kafka_security(system_cas) == {"security.protocol": "SSL"}


def test_extra_settings_of_a_client_come_last() -> None:
    settings = Settings("b:1", "d", Path("s"), kafka_security_protocol="SSL")
    assert producer_config(settings, **{"security.protocol": "SSL", "linger.ms": 20})[
        "linger.ms"] == 20


# --- the rules ---------------------------------------------------------------------------------

def refused(settings: Settings, *patterns: str) -> str:
    """The ConfigError of ``kafka_security(settings)``, also raised when a client config is
    built; each of ``patterns`` is in its message."""
    with pytest.raises(ConfigError) as error:
        kafka_security(settings)
    message = str(error.value)
    for pattern in patterns:
        assert re.search(pattern, message), (pattern, message)
    with pytest.raises(ConfigError):
        producer_config(settings)
    with pytest.raises(ConfigError):
        consumer_config(settings, "g")
    with pytest.raises(ConfigError):
        admin_config(settings)
    return message


def test_a_sasl_protocol_needs_mechanism_username_and_password(tmp_path: Path) -> None:
    message = refused(settings_of(tmp_path, KAFKA_SECURITY_PROTOCOL="SASL_SSL"),
                      r"KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_MECHANISM, "
                      r"KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD_FILE \(or KAFKA_SASL_PASSWORD\)")
    assert message.count("\n") == 0
    refused(settings_of(tmp_path, KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
                        KAFKA_SASL_MECHANISM="PLAIN", KAFKA_SASL_USERNAME="tax"),
            r"SASL_PLAINTEXT needs KAFKA_SASL_PASSWORD_FILE \(or KAFKA_SASL_PASSWORD\)$")
    refused(settings_of(tmp_path, KAFKA_SECURITY_PROTOCOL="SASL_SSL", KAFKA_SASL_USERNAME="tax",
                        KAFKA_SASL_PASSWORD="pw"),
            r"SASL_SSL needs KAFKA_SASL_MECHANISM$")


@pytest.mark.parametrize("variable", ["KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME",
                                      "KAFKA_SASL_PASSWORD", "KAFKA_SASL_PASSWORD_FILE"])
@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL"])
def test_a_sasl_setting_without_a_sasl_protocol_is_refused(
        tmp_path: Path, files: dict[str, Path], variable: str, protocol: str) -> None:
    value = {"KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
             "KAFKA_SASL_PASSWORD_FILE": str(files["sasl.password"])}.get(variable, "tax")
    message = refused(settings_of(tmp_path, KAFKA_SECURITY_PROTOCOL=protocol,
                                  **{variable: value}),
                      f"^{variable} set, but KAFKA_SECURITY_PROTOCOL={protocol} does not "
                      "authenticate with SASL: use SASL_SSL")
    assert PASSWORD not in message and "tax" not in message  # no value repeated


def test_certificate_and_key_go_together(tmp_path: Path, files: dict[str, Path]) -> None:
    tls = {"KAFKA_SECURITY_PROTOCOL": "SSL"}
    refused(settings_of(tmp_path, **tls, KAFKA_SSL_CERTIFICATE_LOCATION=str(files["client.pem"])),
            "KAFKA_SSL_CERTIFICATE_LOCATION is set without KAFKA_SSL_KEY_LOCATION: mutual TLS")
    refused(settings_of(tmp_path, **tls, KAFKA_SSL_KEY_LOCATION=str(files["client.key"])),
            "KAFKA_SSL_KEY_LOCATION is set without KAFKA_SSL_CERTIFICATE_LOCATION: mutual TLS")
    refused(settings_of(tmp_path, **tls, KAFKA_SSL_KEY_PASSWORD_FILE=str(files["key.password"])),
            "KAFKA_SSL_KEY_PASSWORD_FILE is set without KAFKA_SSL_KEY_LOCATION")


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT"])
def test_tls_files_without_a_tls_protocol_are_refused(
        tmp_path: Path, files: dict[str, Path], protocol: str) -> None:
    sasl = {"KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USERNAME": "tax",
            "KAFKA_SASL_PASSWORD": "pw"} if protocol.startswith("SASL_") else {}
    refused(settings_of(tmp_path, KAFKA_SECURITY_PROTOCOL=protocol, **sasl,
                        KAFKA_SSL_CA_LOCATION=str(files["ca.pem"])),
            f"^KAFKA_SSL_CA_LOCATION set, but KAFKA_SECURITY_PROTOCOL={protocol} does not use "
            "TLS: use SSL or SASL_SSL, or unset it$")
    refused(settings_of(tmp_path, KAFKA_SECURITY_PROTOCOL=protocol, **sasl,
                        KAFKA_SSL_CERTIFICATE_LOCATION=str(files["client.pem"]),
                        KAFKA_SSL_KEY_LOCATION=str(files["client.key"])),
            "KAFKA_SSL_CERTIFICATE_LOCATION, KAFKA_SSL_KEY_LOCATION set, but "
            f"KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS.*unset them")


@pytest.mark.parametrize("variable", ["KAFKA_SSL_CA_LOCATION", "KAFKA_SSL_CERTIFICATE_LOCATION",
                                      "KAFKA_SSL_KEY_LOCATION", "KAFKA_SSL_KEY_PASSWORD_FILE",
                                      "KAFKA_SASL_PASSWORD_FILE"])
def test_a_file_that_cannot_be_read_is_refused_naming_its_variable(
        tmp_path: Path, secured: dict[str, str], variable: str) -> None:
    missing = tmp_path / "nowhere" / "file.pem"
    refused(settings_of(tmp_path, **secured | {variable: str(missing)}),
            f"^{variable}={re.escape(str(missing))} cannot be read: No such file")
    refused(settings_of(tmp_path, **secured | {variable: str(tmp_path)}),
            f"^{variable}={re.escape(str(tmp_path))} is a directory, not a file$")


def test_an_empty_or_binary_password_file_is_refused(tmp_path: Path, files: dict[str, Path],
                                                     secured: dict[str, str]) -> None:
    settings = settings_of(tmp_path, **secured)
    files["sasl.password"].write_text("\n")
    refused(settings, f"^KAFKA_SASL_PASSWORD_FILE={re.escape(str(files['sasl.password']))} "
                      "is empty$")
    files["sasl.password"].write_bytes(b"\xff\xfe\n")
    refused(settings, "^KAFKA_SASL_PASSWORD_FILE=.* cannot be read as UTF-8 text")


def test_every_rule_broken_is_named_at_once(tmp_path: Path, files: dict[str, Path]) -> None:
    settings = settings_of(tmp_path, KAFKA_SASL_USERNAME="tax",
                           KAFKA_SSL_KEY_LOCATION=str(tmp_path / "missing.key"))
    message = refused(settings, "KAFKA_SASL_USERNAME set", "without "
                      "KAFKA_SSL_CERTIFICATE_LOCATION", "does not use TLS",
                      "missing.key cannot be read")
    assert len(message.split("\n")) == 4


def test_the_settings_object_alone_decides(tmp_path: Path, secured: dict[str, str]) -> None:
    """The configs follow the settings object, not the process's environment."""
    settings = settings_of(tmp_path, **secured)
    plain = dataclasses.replace(settings, kafka_security_protocol="PLAINTEXT",
                                kafka_sasl_mechanism=None, kafka_sasl_username=None,
                                kafka_sasl_password_file=None, kafka_ssl_ca_location=None,
                                kafka_ssl_certificate_location=None, kafka_ssl_key_location=None,
                                kafka_ssl_key_password_file=None)
    assert kafka_security(plain) == {} and kafka_security(settings)["sasl.username"] == \
        "public_security"


def test_a_settings_made_in_code_takes_the_environments_security(
        tmp_path: Path, files: dict[str, Path], secured: dict[str, str]) -> None:
    """``Settings(bootstrap, ..., **kafka_security_settings())``: for the code that makes its
    own Settings for the broker the process talks to (the topics `prepare` creates)."""
    made = Settings("kafka-1:9092", "postgresql://x/y", Path("s"),
                    **kafka_security_settings(secured))
    assert kafka_security(made) == expected(files)
    assert kafka_security(Settings("b:1", "d", Path("s"), **kafka_security_settings({}))) == {}
    with pytest.raises(ConfigError, match="KAFKA_SECURITY_PROTOCOL='TLS'"):
        kafka_security_settings({"KAFKA_SECURITY_PROTOCOL": "TLS"})
