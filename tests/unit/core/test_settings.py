"""The settings: each declared once, checked at start-up, unknown names refused, the docs'
table generated from the declarations. No broker, no database: environments are dicts."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from govbus.cli import main
from govbus.core import settings_docs as docs
from govbus.core import settings_spec as spec
from govbus.core.config import (
    Retention,
    Settings,
    Topics,
    effective_settings,
    read_env,
    retention_settings,
    topic_settings,
)
from govbus.core.errors import ConfigError
from govbus.core.settings_docs import markdown_table
from govbus.core.settings_spec import BY_ENV, DECLARATIONS, SECTIONS
from govbus.producers.publisher import DEFAULT_LOCALITY

ROOT = Path(__file__).resolve().parents[3]
#: the product's source: every file of its packages (tests, bench and docs aside)
PRODUCT = ("govbus_core", "producers", "consumers", "stream_apps", "infra", "delivery_log")
SERVICES = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092", "DATABASE_URL": "postgresql://x/y"}


def product_files() -> list[Path]:
    files = [p for folder in PRODUCT for p in (ROOT / folder).rglob("*") if p.is_file()]
    files += [p for p in (ROOT / "govbus").glob("*") if p.is_file() and not p.is_symlink()]
    return [p for p in files if "__pycache__" not in p.parts and p.suffix not in (".pyc",)]


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment with the services set and a state dir without runtime.json."""
    return SERVICES | {"GOVBUS_STATE_DIR": str(tmp_path)} | extra


# --- one declaration per setting ------------------------------------------------------------

def test_every_govbus_name_in_the_product_is_declared() -> None:
    """A setting read anywhere is declared here: a new read cannot bypass the checks."""
    found: dict[str, set[str]] = {}
    for path in product_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for name in re.findall(r"GOVBUS_[A-Z_]+", text):
            found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    assert "GOVBUS_STATE_DIR" in found and "GOVBUS_SUPERVISED" in found  # the scan worked
    undeclared = {name: sorted(where) for name, where in found.items()
                  if name not in BY_ENV and not (  # a prefix, GOVBUS_RETENTION_<KIND>_MS
                      name.endswith("_") and any(d.startswith(name) for d in BY_ENV))}
    assert not undeclared, f"declare these in govbus_core/settings_spec.py: {undeclared}"


def test_the_environment_is_read_only_through_the_declarations() -> None:
    """Outside the settings modules, nothing reads the environment (writes for child processes
    are fine); the one read is ``--schemas``, which restores the variable it set."""
    reads = re.compile(r"os\.environ\.get\(|os\.getenv\(|os\.environ\[[^\]]+\](?!\s*=)")
    allowed = {"govbus_core/settings_spec.py", "govbus_core/config.py"}
    found = {str(p.relative_to(ROOT)): len(reads.findall(p.read_text(encoding="utf-8")))
             for p in product_files() if p.suffix == ".py"}
    found = {p: n for p, n in found.items() if n and p not in allowed}
    assert found == {"govbus/cli.py": 1}, found


def test_each_variable_is_declared_once_with_what_it_is_for() -> None:
    assert len(BY_ENV) == len(DECLARATIONS)
    attrs = [d.attr for d in DECLARATIONS]
    assert len(set(attrs)) == len(attrs)
    for d in DECLARATIONS:
        # librdkafka's security settings keep the KAFKA_ names of the clients' documentation
        assert d.env.startswith("GOVBUS_") or d.env in SERVICES or (
            d.section == "KafkaSecurity" and d.env.startswith("KAFKA_")), d.env
        assert d.doc.strip() and "\n" not in d.doc, d.env
        assert d.rule_text() and d.default_text(), d.env


def test_settings_has_every_sections_fields_and_keeps_its_names() -> None:
    names = [f.name for f in dataclasses.fields(Settings)]
    assert names[:3] == ["bootstrap_servers", "database_url", "schemas_dir"]  # positional
    assert set(names) == {d.attr for d in DECLARATIONS}
    for section in SECTIONS:
        assert issubclass(Settings, section)
    for kept in ("session_timeout_ms", "partitions", "replication_factor", "retention_ingest_ms",
                 "retention_validated_ms", "retention_deliver_ms", "retention_dlq_ms",
                 "message_max_bytes", "outbox_retention_days", "reconcile_state_retention_days",
                 "quarantine_retention_days", "accepted_events_retention_days", "holidays_file",
                 "max_clock_skew_ms", "grant_refresh_s"):
        assert kept in names


# --- defaults -------------------------------------------------------------------------------

def test_defaults_are_the_declared_ones(tmp_path: Path) -> None:
    values = read_env({})
    for d in DECLARATIONS:
        assert values[d.attr] == d.default_value(), d.env
    assert values["bootstrap_servers"] is None and values["database_url"] is None
    s = Settings.from_env(env(tmp_path))
    assert (s.partitions, s.session_timeout_ms, s.max_clock_skew_ms) == (3, 6000, 300_000)
    assert s.grant_refresh_s == 1.0 and s.replication_factor is None
    assert (s.locality, s.reconciler_id, s.case_deadline_days) == ("360502", "govbus-reconciler",
                                                                   5)
    assert (s.request_deadline_days, s.objection_deadline_days, s.complaint_deadline_days) == \
        (10, 5, 10)
    assert (s.provide_deadline_days, s.completion_deadline_days) == (1, 20)
    assert s.outbox_dsns == () and s.token is None and s.metrics_port is None
    assert s.demo_timeout_s == 90.0 and s.state_dir == tmp_path


def test_the_dataclass_defaults_are_the_declared_ones() -> None:
    direct = Settings("b", "d", Path("s"))
    for d in DECLARATIONS:
        if d.attr not in ("bootstrap_servers", "database_url", "schemas_dir"):
            assert getattr(direct, d.attr) == d.default_value(), d.env
    assert Settings.max_clock_skew_ms == 300_000  # a class attribute, as the hot path reads it
    assert DEFAULT_LOCALITY == "360502"  # the declared default, not read at import


def test_an_empty_value_counts_as_unset() -> None:
    values = read_env({d.env: "" for d in DECLARATIONS})
    assert values["partitions"] == 3 and values["replication_factor"] is None


def test_values_are_read_with_their_types(tmp_path: Path) -> None:
    s = Settings.from_env(env(tmp_path, GOVBUS_GRANT_REFRESH_S="0.25", GOVBUS_PARTITIONS="6",
                              GOVBUS_OUTBOX_DSNS=" postgresql://a/b  postgresql://c/d ",
                              GOVBUS_LOCALITY="110101", GOVBUS_TOKEN_FILE="~/t",
                              GOVBUS_SUPERVISED=str(tmp_path)))
    assert s.grant_refresh_s == 0.25 and s.partitions == 6
    assert s.outbox_dsns == ("postgresql://a/b", "postgresql://c/d")
    assert s.locality == "110101" and s.supervised == tmp_path
    assert s.token_file == Path("~/t").expanduser()


# --- checked at start-up --------------------------------------------------------------------

def test_an_unknown_govbus_variable_is_refused_with_the_closest_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"GOVBUS_PARTITION is not a govbus setting \(did you "
                                          r"mean GOVBUS_PARTITIONS\?\)"):
        Settings.from_env(env(tmp_path, GOVBUS_PARTITION="4"))
    with pytest.raises(ConfigError, match="did you mean GOVBUS_TOKEN_FILE") as refused:
        read_env({"GOVBUS_TOKENFILE": "/secret/path"})
    assert "/secret/path" not in str(refused.value)  # a misspelt token is never printed
    with pytest.raises(ConfigError, match="GOVBUS_X is not a govbus setting \\(no declared"):
        read_env({"GOVBUS_X": "1"})


def test_the_unknown_name_is_refused_by_the_sections_too(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.setenv("GOVBUS_OUTBOX_RETENTION_DAY", "7")
    with pytest.raises(ConfigError, match="did you mean GOVBUS_OUTBOX_RETENTION_DAYS"):
        Retention.from_env()
    with pytest.raises(ConfigError, match="GOVBUS_OUTBOX_RETENTION_DAY "):
        retention_settings()


INTEGERS = [d for d in DECLARATIONS if d.kind is int]
NUMBERS = [d for d in DECLARATIONS if d.kind in (int, float)]


@pytest.mark.parametrize("d", INTEGERS, ids=lambda d: d.env)
def test_integers_out_of_range_are_refused_naming_variable_value_and_range(
        d: spec.Declaration) -> None:
    assert d.low is not None and d.high is not None
    for bad in (int(d.low) - 1, int(d.high) + 1):
        with pytest.raises(ConfigError, match=re.escape(
                f"{d.env}={bad} is out of range [{int(d.low)}, {int(d.high)}]")):
            read_env({d.env: str(bad)})
    assert read_env({d.env: str(int(d.low))})[d.attr] == d.low
    assert read_env({d.env: str(int(d.high))})[d.attr] == d.high


@pytest.mark.parametrize("d", NUMBERS, ids=lambda d: d.env)
def test_a_value_that_is_not_a_number_is_refused_naming_it(d: spec.Declaration) -> None:
    what = "an integer" if d.kind is int else "a number"
    for bad in ("five", "1e3" if d.kind is int else "nan"):
        with pytest.raises(ConfigError, match=re.escape(f"{d.env}={bad!r} is not {what}")):
            read_env({d.env: bad})


def test_the_grant_refresh_is_a_number_in_zero_excluded_to_an_hour() -> None:
    assert read_env({"GOVBUS_GRANT_REFRESH_S": "3600"})["grant_refresh_s"] == 3600.0
    assert read_env({"GOVBUS_GRANT_REFRESH_S": "0.001"})["grant_refresh_s"] == 0.001
    for bad in ("0", "-1", "3600.5"):
        with pytest.raises(ConfigError, match=r"GOVBUS_GRANT_REFRESH_S=.* is out of range "
                                              r"\(0, 3600\]"):
            read_env({"GOVBUS_GRANT_REFRESH_S": bad})


def test_text_settings_obey_their_rule() -> None:
    with pytest.raises(ConfigError, match="GOVBUS_LOCALITY='3605': must be 6 digits"):
        read_env({"GOVBUS_LOCALITY": "3605"})
    with pytest.raises(ConfigError, match="GOVBUS_RECONCILER_ID='a b': must be"):
        read_env({"GOVBUS_RECONCILER_ID": "a b"})


def test_the_kafka_security_settings_obey_their_rule() -> None:
    values = read_env({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                       "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                       "KAFKA_SASL_PASSWORD_FILE": "/run/secrets/p"})
    assert values["kafka_security_protocol"] == "SASL_SSL"
    assert values["kafka_sasl_mechanism"] == "SCRAM-SHA-512"
    assert values["kafka_sasl_password_file"] == Path("/run/secrets/p")
    assert read_env({})["kafka_security_protocol"] == "PLAINTEXT"
    with pytest.raises(ConfigError, match="KAFKA_SECURITY_PROTOCOL='TLS': must be one of "
                                          "PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"):
        read_env({"KAFKA_SECURITY_PROTOCOL": "TLS"})
    with pytest.raises(ConfigError, match="KAFKA_SASL_MECHANISM='OAUTHBEARER': must be one of "
                                          "SCRAM-SHA-512, SCRAM-SHA-256, PLAIN; OAUTHBEARER is "
                                          "not supported"):
        read_env({"KAFKA_SASL_MECHANISM": "OAUTHBEARER"})


def test_the_signing_keys_are_paths_unset_by_default(tmp_path: Path) -> None:
    s = Settings.from_env(env(tmp_path, GOVBUS_SIGNING_KEY_FILE="~/agency.pem",
                              GOVBUS_BUS_PUBLIC_KEY_FILE=str(tmp_path / "bus.pub")))
    assert s.signing_key_file == Path("~/agency.pem").expanduser()
    assert s.bus_public_key_file == tmp_path / "bus.pub" and s.bus_key_file is None


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as refused:
        read_env({"GOVBUS_PARTITIONS": "0", "GOVBUS_METRICS_PORT": "http", "GOVBUS_X": "1"})
    lines = str(refused.value).split("\n")
    assert len(lines) == 3 and lines[0].startswith("GOVBUS_X is not a govbus setting")


def test_sections_need_neither_broker_nor_database(tmp_path: Path) -> None:
    bare = {"GOVBUS_STATE_DIR": str(tmp_path), "GOVBUS_QUARANTINE_RETENTION_DAYS": "14"}
    assert Retention.from_env(bare).quarantine_retention_days == 14
    assert Topics.from_env(bare).partitions == 3
    with pytest.raises(ConfigError, match="KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL not set"):
        Settings.from_env(bare)


def test_topic_and_retention_settings_keep_their_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for d in DECLARATIONS:
        monkeypatch.delenv(d.env, raising=False)
    assert set(topic_settings()) == {"replication_factor", "message_max_bytes",
                                     "retention_ingest_ms", "retention_validated_ms",
                                     "retention_deliver_ms", "retention_dlq_ms"}
    assert set(retention_settings()) == {"outbox_retention_days",
                                         "reconcile_state_retention_days",
                                         "quarantine_retention_days",
                                         "accepted_events_retention_days"}


def test_the_embedded_runtime_supplies_the_services(tmp_path: Path) -> None:
    (tmp_path / "runtime.json").write_text(json.dumps({
        "bootstrap_servers": "127.0.0.1:19092", "database_url": "postgresql://u:pw@h/db"}))
    s = Settings.from_env({"GOVBUS_STATE_DIR": str(tmp_path)})
    assert (s.bootstrap_servers, s.database_url) == ("127.0.0.1:19092", "postgresql://u:pw@h/db")
    rows = {r["variable"]: r for r in effective_settings({"GOVBUS_STATE_DIR": str(tmp_path)})}
    assert rows["DATABASE_URL"] == {"variable": "DATABASE_URL", "section": "Services",
                                    "value": "postgresql://u:***@h/db",
                                    "source": "embedded runtime"}


# --- what `govbus config` shows --------------------------------------------------------------

@pytest.mark.parametrize(("dsn", "shown"), [
    ("postgresql://govbus:s3cr:et@db:5432/govbus", "postgresql://govbus:***@db:5432/govbus"),
    ("postgresql://govbus@db/govbus", "postgresql://govbus@db/govbus"),
    ("postgresql:///govbus?host=/tmp", "postgresql:///govbus?host=/tmp"),
    ("host=db dbname=govbus password=s3cret", "host=db dbname=govbus password=***"),
])
def test_passwords_are_masked(dsn: str, shown: str) -> None:
    assert docs.mask_url(dsn) == shown


def test_config_lists_effective_values_with_secrets_masked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for d in DECLARATIONS:
        monkeypatch.delenv(d.env, raising=False)
    for key, value in env(tmp_path, DATABASE_URL="postgresql://u:s3cretpw@h/db",
                          GOVBUS_TOKEN="tok3n-value", KAFKA_SASL_PASSWORD="sasl-s3cret",
                          GOVBUS_PARTITIONS="6").items():
        monkeypatch.setenv(key, value)
    assert main(["config", "--json"]) == 0
    rows: dict[str, Any] = {r["variable"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(BY_ENV)
    assert rows["DATABASE_URL"]["value"] == "postgresql://u:***@h/db"
    assert rows["GOVBUS_TOKEN"]["value"] == "***"
    assert rows["KAFKA_SASL_PASSWORD"]["value"] == "***"
    assert rows["GOVBUS_PARTITIONS"] == {"variable": "GOVBUS_PARTITIONS", "section": "Topics",
                                         "value": "6", "source": "environment"}
    assert rows["GOVBUS_STATE_DIR"]["value"] == str(tmp_path)
    assert rows["GOVBUS_METRICS_PORT"]["source"] == "unset"
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "s3cretpw" not in out and "tok3n-value" not in out and "GOVBUS_PARTITIONS" in out
    assert "sasl-s3cret" not in out
    assert "sasl-s3cret" not in repr(Settings.from_env())


def test_config_refuses_a_bad_environment(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GOVBUS_PARTITION", "4")
    assert main(["config"]) == 1
    assert "did you mean GOVBUS_PARTITIONS?" in capsys.readouterr().err


# --- the docs' table ------------------------------------------------------------------------

def test_the_docs_table_is_the_generated_one() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    documented = text.split(docs.BEGIN, 1)[1].split(docs.END, 1)[0]
    assert documented == "\n" + markdown_table(), (
        "docs/configuration.md is out of date: run `govbus config --markdown "
        "docs/configuration.md`")


def test_the_table_has_one_row_per_setting() -> None:
    table = markdown_table()
    for d in DECLARATIONS:
        assert table.count(f"| `{d.env}` |") == 1, d.env
    assert "| `GOVBUS_GRANT_REFRESH_S` |" in table and "(0, 3600]" in table


def test_markdown_rewrites_the_table_between_the_markers(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "configuration.md"
    doc.write_text(f"# intro\n\n{docs.BEGIN}\nold\n{docs.END}\n\nafter\n", encoding="utf-8")
    assert main(["config", "--markdown", str(doc)]) == 0
    assert doc.read_text(encoding="utf-8") == (f"# intro\n\n{docs.BEGIN}\n{markdown_table()}"
                                               f"{docs.END}\n\nafter\n")
    assert "table updated" in capsys.readouterr().out
    assert main(["config", "--markdown", str(doc)]) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["config", "--markdown"]) == 0
    assert capsys.readouterr().out == markdown_table()
    doc.write_text("no markers\n", encoding="utf-8")
    assert main(["config", "--markdown", str(doc)]) == 1
