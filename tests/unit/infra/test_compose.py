"""infra/docker-compose.yml and its Prometheus config, checked by parsing them (there is no
Docker engine on the build machines): every service a service, a scrape target or a connection
string names exists, in every profile in which it is needed (docs/deployment.md)."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from govbus.core.config import Settings

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
