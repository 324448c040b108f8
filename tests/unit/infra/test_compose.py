"""infra/docker-compose.yml and its Prometheus config, checked by parsing them (there is no
Docker engine on the build machines): every service a service, a scrape target or a connection
string names exists, in every profile in which it is needed; the brokers take SASL_SSL with
SCRAM-SHA-512 behind an authorizer, every client authenticates, no password is in the file
(docs/deployment.md)."""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from govbus.cli import build_parser
from govbus.core.config import Settings
from govbus.core.kafka import kafka_security
from govbus.infra import acl

INFRA = Path(__file__).resolve().parents[3] / "infra"
COMPOSE: dict[str, Any] = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
PROMETHEUS: dict[str, Any] = yaml.safe_load(
    (INFRA / "prometheus" / "prometheus-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
DEFAULT = "(default)"  # a service without profiles runs in every profile


def profiles(service: str) -> set[str]:
    return set(SERVICES[service].get("profiles") or [])


def runs_in(service: str, profile: str) -> bool:
    """Whether ``docker compose [--profile profile] up`` starts ``service``."""
    if profile == DEFAULT:
        return not profiles(service)
    return not profiles(service) or profile in profiles(service)


def every_profile() -> set[str]:
    return {DEFAULT} | {p for s in SERVICES for p in profiles(s)}


def env(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in (SERVICES[service].get("environment") or {}).items()}


def depends_on(service: str) -> dict[str, dict[str, Any]]:
    deps = SERVICES[service].get("depends_on") or {}
    return {d: {} for d in deps} if isinstance(deps, list) else dict(deps)


def long_running(service: str) -> bool:
    """Restarted when it stops: a one-shot service has no restart policy, or ``"no"``."""
    return str(SERVICES[service].get("restart", "no")) not in ("no", "False")


def long_running_govbus() -> list[str]:
    """The govbus processes: they serve /metrics (GOVBUS_METRICS_PORT) and are restarted."""
    return [s for s in SERVICES if "GOVBUS_METRICS_PORT" in env(s) and long_running(s)]


def static_targets() -> list[tuple[str, str, str]]:
    return [(job["job_name"], *target.rsplit(":", 1))
            for job in PROMETHEUS["scrape_configs"]
            for group in job.get("static_configs", []) for target in group["targets"]]


def dns_targets() -> list[tuple[str, str, int]]:
    return [(job["job_name"], name, sd["port"])
            for job in PROMETHEUS["scrape_configs"]
            for sd in job.get("dns_sd_configs", []) for name in sd["names"]]


def healthcheck_text(service: str) -> str:
    test = SERVICES[service]["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def test_the_files_parse_and_name_services() -> None:
    assert {"kafka-1", "kafka-2", "kafka-3", "postgres", "govbus-init", "hotpath",
            "kafka-exporter", "postgres-exporter", "prometheus", "grafana"} <= set(SERVICES)
    assert long_running_govbus(), "the govbus processes are recognised"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_dependency_exists_wherever_the_service_runs(service: str) -> None:
    for dep, how in depends_on(service).items():
        assert dep in SERVICES, f"{service} depends on {dep}, which is not a service"
        for profile in every_profile():
            if runs_in(service, profile):
                assert runs_in(dep, profile), \
                    f"{service} runs in profile {profile} but its dependency {dep} does not"
        if how.get("condition") == "service_healthy":
            assert "healthcheck" in SERVICES[dep], f"{service} waits for {dep} to be healthy"
        if how.get("condition") == "service_completed_successfully":
            assert not long_running(dep), f"{dep} is one-shot: it must not restart"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_long_running_service_has_a_health_check(service: str) -> None:
    if long_running(service):
        assert "healthcheck" in SERVICES[service], service


def test_static_scrape_targets_are_services_of_the_default_profile() -> None:
    """A static target that a default deployment does not run would be down for good and
    fire GovbusProcessDown."""
    assert static_targets()
    for job, host, port in static_targets():
        if host == "localhost":
            assert job == "prometheus" and port == "9090"
            continue
        assert host in SERVICES, f"job {job} scrapes {host}, which is not a service"
        assert not profiles(host), f"job {job} scrapes {host}, which runs only in " \
                                   f"profile(s) {sorted(profiles(host))}: use dns_sd_configs"
        assert f":{port}/" in healthcheck_text(host), \
            f"{host}'s health check probes another port than the scraped {port}"
        if "GOVBUS_METRICS_PORT" in env(host):
            assert env(host)["GOVBUS_METRICS_PORT"] == port


def test_dns_discovered_targets_are_services_of_a_profile() -> None:
    assert dns_targets()
    for job, name, port in dns_targets():
        assert name in SERVICES, f"job {job} looks up {name}, which is not a service"
        assert profiles(name), f"{name} runs by default: scrape it statically (down alert)"
        assert env(name)["GOVBUS_METRICS_PORT"] == str(port)


def test_every_govbus_process_is_scraped_where_it_runs() -> None:
    static = {host for _, host, _ in static_targets()}
    by_dns = {name for _, name, _ in dns_targets()}
    for service in long_running_govbus():
        assert service in (by_dns if profiles(service) else static), \
            f"{service} serves /metrics but Prometheus does not scrape it"
        assert env(service)["GOVBUS_METRICS_ADDR"] == "0.0.0.0", "reachable from Prometheus"


def test_every_govbus_command_names_a_module_that_exists() -> None:
    for service in long_running_govbus():
        command = " ".join(SERVICES[service]["command"])
        match = re.search(r"python -m (\S+)", command)
        assert match, f"{service}: {command}"
        module = match.group(1)
        assert module.startswith("govbus."), f"{module}: the installed namespace, not the checkout"
        assert importlib.util.find_spec(module) is not None, module


def hosts(value: str) -> list[str]:
    if "://" in value:
        return [urlsplit(value).hostname or ""]
    return [part.rsplit(":", 1)[0] for part in value.split(",")]


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_connection_names_a_service_that_runs_alongside(service: str) -> None:
    """Broker lists, database URLs (the agencies profile's database included) and the
    exporters' targets."""
    named = [h for key, value in env(service).items()
             if key in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "AGENCY_DSN",
                        "DATA_SOURCE_NAME") for h in hosts(value)]
    named += [arg.split("=", 1)[1].rsplit(":", 1)[0]
              for arg in SERVICES[service].get("command") or [] if arg.startswith("--kafka.")]
    for host in named:
        assert host in SERVICES, f"{service} connects to {host}, which is not a service"
        for profile in every_profile():
            if runs_in(service, profile):
                assert runs_in(host, profile), \
                    f"{service} (profile {profile}) connects to {host}, not in that profile"


def test_agency_adapters_have_their_database_in_their_profile() -> None:
    adapters = [s for s in SERVICES if "AGENCY_DSN" in env(s)]
    assert adapters
    for service in adapters:
        db = hosts(env(service)["AGENCY_DSN"])[0]
        assert profiles(db) == profiles(service) == {"agencies"}
        assert depends_on(service)[db] == {"condition": "service_healthy"}


def volume_mounts(service: str) -> dict[str, str]:
    """Named volume -> path in the container."""
    mounts = {}
    for entry in SERVICES[service].get("volumes") or []:
        source, target = str(entry).split(":")[:2]
        if not source.startswith("."):
            mounts[source] = target
    return mounts


def test_data_lives_on_declared_volumes() -> None:
    declared = set(COMPOSE["volumes"])
    for service in SERVICES:
        assert set(volume_mounts(service)) <= declared, service
    kafka = [s for s in SERVICES if s.startswith("kafka-") and s[6:].isdigit()]
    for broker in kafka:  # the partitions, not the image's /tmp/kraft-combined-logs
        assert env(broker)["KAFKA_LOG_DIRS"] in volume_mounts(broker).values(), broker
    for db in [s for s in SERVICES if "PGDATA" in env(s)]:
        (mount,) = volume_mounts(db).values()
        assert env(db)["PGDATA"].startswith(mount + "/"), db
    assert "/prometheus" in volume_mounts("prometheus").values()
    assert "--storage.tsdb.path=/prometheus" in SERVICES["prometheus"]["command"]
    assert "/var/lib/grafana" in volume_mounts("grafana").values()
    state = env("govbus-init").get("GOVBUS_STATE_DIR", "/var/lib/govbus")  # the image's
    assert state in volume_mounts("govbus-init").values(), "the admin token survives"
    assert "GOVBUS_STATE_DIR=/var/lib/govbus" in (INFRA / "Dockerfile").read_text()


def test_replication_defaults_let_one_broker_be_down(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    """3 brokers, default replication 3, min ISR 2: an acks=all produce survives one broker
    down; govbus's topic settings parse and leave the replication factor to the brokers."""
    kafka = [s for s in SERVICES if "KAFKA_NODE_ID" in env(s)]
    assert len(kafka) == 3
    for broker in kafka:
        e = env(broker)
        assert int(e["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == len(kafka)
        assert int(e["KAFKA_MIN_INSYNC_REPLICAS"]) == len(kafka) - 1
        assert e["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    for service in long_running_govbus() + ["govbus-init"]:
        for key, value in env(service).items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("GOVBUS_STATE_DIR", str(tmp_path))
        settings = Settings.from_env()  # every topic variable in range
        rf = settings.replication_factor
        assert rf is None or int(env(kafka[0])["KAFKA_MIN_INSYNC_REPLICAS"]) < rf <= len(kafka)
        assert settings.retention_dlq_ms <= settings.retention_ingest_ms


def test_the_init_script_compiles_and_its_imports_exist() -> None:
    command = SERVICES["govbus-init"]["command"]
    assert command[:2] == ["python", "-c"]
    script = command[2]
    compile(script, "govbus-init", "exec")
    imports = re.findall(r"^from (\S+) import (.+)$", script, re.MULTILINE)
    assert imports
    for module, names in imports:
        loaded = importlib.import_module(module)
        for name in names.split(","):
            assert hasattr(loaded, name.strip()), f"{module}.{name.strip()}"
    assert "Settings.from_env()" in script, "topics from the environment's topic settings"


# --- security: SASL_SSL with SCRAM-SHA-512, an authorizer, ACLs from the plan ---------------

TEXT = (INFRA / "docker-compose.yml").read_text()
BROKERS = [s for s in SERVICES if "KAFKA_NODE_ID" in env(s)]
SECRETS: dict[str, dict[str, str]] = COMPOSE.get("secrets") or {}
#: what every govbus client needs to authenticate (docs/deployment.md)
CLIENT_SECURITY = ("KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME",
                   "KAFKA_SASL_PASSWORD_FILE", "KAFKA_SSL_CA_LOCATION")


def listeners(broker: str) -> dict[str, str]:
    """Listener name -> security protocol."""
    e = env(broker)
    protocols = dict(p.split(":", 1) for p in e["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    names = [entry.split("://", 1)[0] for entry in e["KAFKA_LISTENERS"].split(",")]
    return {name: protocols[name] for name in names}


def script(service: str) -> str:
    """The shell script a service runs (``bash -c <script>``)."""
    command = SERVICES[service]["command"]
    assert command[:2] == ["bash", "-c"], service
    return str(command[2])


def secrets_of(service: str) -> set[str]:
    return {s if isinstance(s, str) else s["source"] for s in SERVICES[service].get("secrets")
            or []}


def govbus_clients() -> list[str]:
    """Every service that runs govbus code: the processes and the one-shot inits."""
    return [s for s in SERVICES if SERVICES[s].get("build")]


def test_brokers_take_sasl_ssl_with_scram_for_clients_and_among_themselves() -> None:
    assert len(BROKERS) == 3
    for broker in BROKERS:
        e, named = env(broker), listeners(broker)
        controller = e["KAFKA_CONTROLLER_LISTENER_NAMES"]
        assert {p for n, p in named.items() if n != controller} == {"SASL_SSL"}, broker
        assert named[e["KAFKA_INTER_BROKER_LISTENER_NAME"]] == "SASL_SSL"
        assert all(a.startswith("SASL_SSL://") for a in e["KAFKA_ADVERTISED_LISTENERS"].split(","))
        assert e["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
        assert e["KAFKA_SASL_MECHANISM_INTER_BROKER_PROTOCOL"] == "SCRAM-SHA-512"
        # the controllers speak TLS and take only certificates of the CA, mapped to a principal
        assert named[controller] == "SSL"
        assert e[f"KAFKA_LISTENER_NAME_{controller}_SSL_CLIENT_AUTH"] == "required"
        assert "/kafka-broker/" in e["KAFKA_SSL_PRINCIPAL_MAPPING_RULES"]
        assert "--command-config" in healthcheck_text(broker), "the health check authenticates"


def test_an_authorizer_denies_what_no_acl_allows() -> None:
    for broker in BROKERS:
        e = env(broker)
        assert e["KAFKA_AUTHORIZER_CLASS_NAME"] == \
            "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
        assert e["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
        assert set(e["KAFKA_SUPER_USERS"].split(";")) == {"User:govbus", "User:kafka-broker"}


def test_the_scram_users_are_created_at_format_with_passwords_from_secrets() -> None:
    """The image's entrypoint formats without SCRAM credentials: the command formats first,
    with the bus's and the brokers' users, then hands over to the entrypoint."""
    for broker in BROKERS:
        text = script(broker)
        format_at = text.index("kafka-storage.sh format --ignore-formatted")
        assert text.rstrip().endswith("exec /etc/kafka/docker/run") and format_at > 0
        for user, variable in (("govbus", "govbus_pw"), ("kafka-broker", "broker_pw")):
            assert f"SCRAM-SHA-512=[name={user},password=$${variable}]" in text
        assert {"kafka_govbus_password", "kafka_broker_password"} <= secrets_of(broker)
        assert 'username=\\"kafka-broker\\"' in text, "the brokers log in as User:kafka-broker"
        assert "java.security.auth.login.config" in text


@pytest.mark.parametrize("service", [s for s in SERVICES if (SERVICES[s].get("command") or
                                                               [None])[0] == "bash"])
def test_every_shell_script_parses(service: str) -> None:
    unescaped = script(service).replace("$$", "$")  # what compose hands to bash
    done = subprocess.run(["bash", "-n"], input=unescaped, text=True, capture_output=True,
                          check=False)
    assert done.returncode == 0, done.stderr


def test_every_dollar_is_for_the_container_not_for_compose() -> None:
    """Compose substitutes ``$NAME`` from the host's environment; every ``$`` of the file is
    doubled, so that each reaches the container's shell (or the broker) as it is written."""
    assert "$" not in TEXT.replace("$$", ""), "a `$` compose would substitute"


def test_no_kafka_password_is_written_in_the_file() -> None:
    assert not re.findall(r'password=(?!\\?"?\$\$)', TEXT), "a password literal"
    assert "KAFKA_SASL_PASSWORD:" not in TEXT, "passwords come from files (_FILE)"
    for name, secret in SECRETS.items():
        assert secret["file"].startswith("./secrets/"), name
    for service in SERVICES:
        assert secrets_of(service) <= set(SECRETS), f"{service} uses an undeclared secret"
    exporter = " ".join(SERVICES["kafka-exporter"]["entrypoint"])
    assert '--sasl.password="$$(cat /run/secrets/kafka_govbus_password)"' in exporter


def test_the_brokers_tls_stores_are_mounted_from_the_secrets_folder() -> None:
    keystores = set()
    for broker in BROKERS:
        assert "./secrets/kafka:/etc/kafka/secrets:ro" in SERVICES[broker]["volumes"]
        keystores.add(env(broker)["KAFKA_SSL_KEYSTORE_FILENAME"])
        for key in ("KAFKA_SSL_KEY_CREDENTIALS", "KAFKA_SSL_KEYSTORE_CREDENTIALS",
                    "KAFKA_SSL_TRUSTSTORE_FILENAME", "KAFKA_SSL_TRUSTSTORE_CREDENTIALS"):
            assert "/" not in env(broker)[key], "a file name in /etc/kafka/secrets"
        # the image's entrypoint reads the truststore only when client certificates are asked
        assert env(broker)["KAFKA_SSL_CLIENT_AUTH"] in ("requested", "required")
    assert keystores == {f"{b}.keystore.p12" for b in BROKERS}, "one keystore per broker"


@pytest.mark.parametrize("service", govbus_clients())
def test_every_govbus_service_authenticates_with_sasl_ssl(
        service: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    e = env(service)
    assert e["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL" and e["KAFKA_SASL_MECHANISM"] == \
        "SCRAM-SHA-512"
    command = " ".join(map(str, SERVICES[service]["command"]))
    # an adapter publishes as its agency; a control-plane command about an agency (`keys
    # register --agency A`) runs as the bus
    agency = re.search(r"--agency (\S+)", command) if "outbox" in command else None
    user = e["KAFKA_SASL_USERNAME"]
    assert user == (agency.group(1) if agency else "govbus"), "an adapter acts as its agency"
    if user != "govbus":  # its SCRAM user is created by a one-shot of its profile
        creator = f"kafka-user-{user.replace('_', '-')}"
        assert f"--entity-name {user}" in script(creator) and profiles(creator) == \
            profiles(service)
        assert depends_on(service)[creator] == {"condition": "service_completed_successfully"}
    for key in ("KAFKA_SASL_PASSWORD_FILE", "KAFKA_SSL_CA_LOCATION"):
        folder, _, name = e[key].rpartition("/")
        assert folder == "/run/secrets" and name in secrets_of(service), (service, key)
    # the process's settings pass the rules of kafka_security, the secrets as files here
    files = {}
    for key in ("KAFKA_SASL_PASSWORD_FILE", "KAFKA_SSL_CA_LOCATION"):
        files[key] = tmp_path / key
        files[key].write_text("pa55\n")
    for key, value in (e | {k: str(v) for k, v in files.items()}).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GOVBUS_STATE_DIR", str(tmp_path))
    assert kafka_security(Settings.from_env()) == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": user, "sasl.password": "pa55",
        "ssl.ca.location": str(files["KAFKA_SSL_CA_LOCATION"])}


def test_acl_apply_runs_after_the_topics_and_before_the_stream_processes() -> None:
    service = SERVICES["acl-apply"]
    args = build_parser().parse_args(service["command"][1:])
    assert service["command"][0] == "govbus" and args.handler is acl.run
    assert args.acl_action == "apply" and not args.dry_run
    assert not long_running("acl-apply"), "one-shot: the stream processes wait for it to end"
    assert depends_on("acl-apply")["govbus-init"] == \
        {"condition": "service_completed_successfully"}
    for process in long_running_govbus():
        assert depends_on(process)["acl-apply"] == \
            {"condition": "service_completed_successfully"}, process


def test_the_kafka_exporter_authenticates_as_the_bus_over_tls() -> None:
    flags = SERVICES["kafka-exporter"]["command"]
    assert {"--sasl.enabled", "--sasl.mechanism=scram-sha512", "--sasl.username=govbus",
            "--tls.enabled", "--tls.ca-file=/run/secrets/kafka_ca"} <= set(flags)
    assert {"kafka_ca", "kafka_govbus_password"} <= secrets_of("kafka-exporter")
    entrypoint = SERVICES["kafka-exporter"]["entrypoint"]
    assert entrypoint[:2] == ["/bin/sh", "-c"] and '"$$@"' in entrypoint[2], "flags passed on"


def test_the_hot_path_signs_with_the_bus_key_and_the_adapter_with_its_agencys() -> None:
    """Each private key reaches exactly the process that signs with it (docs/security.md):
    the bus's the hot path, an agency's its own adapter, the information center's the
    checkpointer; no other service holds any. The service holds the bus's too: a backfill
    it sends is signed as the hot path's deliveries are."""
    holders: dict[str, set[str]] = {}
    for name in SERVICES:
        for secret in secrets_of(name):
            holders.setdefault(secret, set()).add(name)
    assert env("hotpath")["GOVBUS_BUS_KEY_FILE"] == "/run/secrets/govbus_bus_key"
    assert holders["govbus_bus_key"] == {"hotpath", "api"}
    assert env("api")["GOVBUS_BUS_KEY_FILE"] == "/run/secrets/govbus_bus_key"
    adapter = env("outbox-public-security")
    assert adapter["GOVBUS_SIGNING_KEY_FILE"] == "/run/secrets/public_security_signing_key"
    assert holders["public_security_signing_key"] == {"outbox-public-security"}
    assert env("checkpointer")["GOVBUS_CHECKPOINT_KEY_FILE"] == "/run/secrets/checkpoint_key"
    assert holders["checkpoint_key"] == {"checkpointer"}
    signing = {"GOVBUS_BUS_KEY_FILE", "GOVBUS_SIGNING_KEY_FILE", "GOVBUS_CHECKPOINT_KEY_FILE"}
    for name in SERVICES:
        if name not in ("hotpath", "api", "outbox-public-security", "checkpointer"):
            assert not signing & set(env(name)), name
    for secret in ("govbus_bus_key", "public_security_signing_key",
                   "public_security_public_key"):
        assert COMPOSE["secrets"][secret]["file"].startswith("./secrets/")


def test_the_agencys_public_key_is_registered_before_its_adapter_publishes() -> None:
    service = SERVICES["keys-public-security"]
    args = build_parser().parse_args(service["command"][1:])
    assert service["command"][0] == "govbus" and args.keys == "register"
    assert args.agency == "public_security" and not long_running("keys-public-security")
    assert args.public_key == "/run/secrets/public_security_public_key"
    assert profiles("keys-public-security") == profiles("outbox-public-security")
    assert depends_on("outbox-public-security")["keys-public-security"] == \
        {"condition": "service_completed_successfully"}
    token = env("keys-public-security")["GOVBUS_TOKEN_FILE"]
    assert any(v.startswith("govbus-state:") and token.startswith(v.split(":")[1])
               for v in service["volumes"]), "the information center's token, read-only"


def test_the_image_holds_every_package_the_govbus_namespace_links_to() -> None:
    """``govbus/<name>`` are links to top-level folders: the image must copy each folder, or
    the link dangles and ``govbus.<name>`` fails to import in every container."""
    root = INFRA.parent
    copied = {line.split()[1] for line in (INFRA / "Dockerfile").read_text().splitlines()
              if line.startswith("COPY ")}
    links = {p.resolve().relative_to(root).parts[0] for p in (root / "govbus").iterdir()
             if p.is_symlink()}
    assert links and links <= copied, f"not copied into the image: {sorted(links - copied)}"
