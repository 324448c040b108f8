"""The ``govbus`` command as a user runs it: a subprocess, real broker, real PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from govbus.core import access, db
from govbus.core.catalogue import default_schemas_dir
from govbus.core.config import Settings
from govbus.runtime import STREAM_APPS
from tests.integration.helpers import TopicReader, commitment, wait_until


def govbus(*args: str, env: dict[str, str] | None = None, timeout: float = 180
           ) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items()
            if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "govbus.cli", *args], env=full, text=True,
                          capture_output=True, timeout=timeout)


def edit(root: Path, rel: str, change) -> Path:  # type: ignore[no-untyped-def]
    path = root / rel
    schema = json.loads(path.read_text())
    change(schema)
    path.write_text(json.dumps(schema, ensure_ascii=False))
    return path


def copy_catalogue(tmp_path: Path) -> Path:
    root = tmp_path / "schemas"
    shutil.copytree(default_schemas_dir(), root)
    return root


def test_sync_registers_versions_and_refuses_incompatible_change(
        tmp_path: Path, empty_database: str) -> None:
    env = {"DATABASE_URL": empty_database, "GOVBUS_STATE_DIR": str(tmp_path / "state")}
    root = copy_catalogue(tmp_path)
    # the bulk import is the information center's (Art. 13): another agency's token is refused
    db.migrate(empty_database)
    tax = govbus("--schemas", str(root), "catalogue", "sync", env=env | {
        "GOVBUS_TOKEN": access.issue(empty_database, "tax", "test")})
    assert tax.returncode == 1 and "not information_center's" in tax.stderr, tax.stderr
    env["GOVBUS_TOKEN"] = access.issue(empty_database, access.INFORMATION_CENTER, "test")
    first = govbus("--schemas", str(root), "catalogue", "sync", "--json", env=env)
    assert first.returncode == 0, first.stderr
    assert {r["status"] for r in json.loads(first.stdout)} == {"registered"}
    from govbus.delivery_log import audit

    assert {e["actor"] for e in audit.list_entries(empty_database, "schema_versions")} == {
        access.INFORMATION_CENTER}  # the ledger names who imported (Art. 13)

    rel = "public_security/population_register.avsc"
    edit(root, rel, lambda s: s["fields"].append({"name": "nickname", "type": "string"}))
    check = govbus("--schemas", str(root), "catalogue", "check", env=env)
    assert check.returncode == 1
    assert "population_register.avsc" in check.stdout and "nickname" in check.stdout
    assert "schema.incompatible" in check.stdout and "Art. 13" in check.stdout
    refused = govbus("--schemas", str(root), "catalogue", "sync", env=env)
    assert refused.returncode == 1 and "nothing registered" in refused.stderr

    edit(root, rel, lambda s: s["fields"][-1].update(type=["null", "string"], default=None))
    second = govbus("--schemas", str(root), "catalogue", "sync", "--json", env=env)
    assert second.returncode == 0, second.stderr
    changed = [r for r in json.loads(second.stdout) if r["status"] == "registered"]
    assert [(r["resource_id"], r["version"]) for r in changed] == [
        ("public_security.population_register", 2)]


def test_check_names_file_field_and_rule(tmp_path: Path) -> None:
    root = copy_catalogue(tmp_path)
    edit(root, "tax/tax_registration.avsc", lambda s: s["govbus"].pop("legal_basis"))
    edit(root, "hrss/social_insurance_enrolment.avsc",
         lambda s: s["fields"][2]["govbus"].update(source_of_record=True))
    edit(root, "civil_affairs/marriage_register.avsc", lambda s: s["govbus"].pop("title"))
    out = govbus("--schemas", str(root), "catalogue", "check", "--offline", "--json")
    assert out.returncode == 1
    errors = [f for f in json.loads(out.stdout)["findings"] if f["severity"] == "error"]
    found = {(Path(f["file"]).name, f["field"], f["rule"], f["article"]) for f in errors}
    assert found == {
        ("tax_registration.avsc", "govbus.legal_basis", "art4.legal_basis_missing", "Art. 4"),
        ("population_register.avsc", "residence_address", "art8.two_sources", "Art. 8"),
        ("marriage_register.avsc", "govbus.title", "art7.missing_element", "Art. 7")}
    two = next(f for f in errors if f["rule"] == "art8.two_sources")["message"]
    assert "hrss.social_insurance_enrolment" in two and "population_register" in two


def test_publish_refuses_bad_lines_and_sends_the_rest(tmp_path: Path, settings: Settings
                                                      ) -> None:
    person = {"resident_id": "11010519491231002X", "name": "王芳", "gender": "F",
              "birth_date": "1949-12-31", "residence_address": "渝水区1号",
              "household_division": "360502"}
    lines = [json.dumps(person, ensure_ascii=False),
             json.dumps(person | {"resident_id": "11010519491231002Y"}),
             "{not json",
             json.dumps({"op": "update", "record": person | {"name": "王芳芳"}},
                        ensure_ascii=False),
             json.dumps(person | {"shoe_size": 42}, ensure_ascii=False)]
    path = tmp_path / "people.jsonl"
    path.write_text("\n".join(lines) + "\n")
    env = {"KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
           "DATABASE_URL": settings.database_url}
    out = govbus("publish", "--agency", "public_security", "--resource", "population_register",
                 "--file", str(path), "--json", env=env)
    assert out.returncode == 3, out.stderr
    report = json.loads(out.stdout)
    assert report["published"] == 2 and report["refused"] == 3
    assert [(r["line"], r["violations"][0]["rule"]) for r in report["refusals"]] == [
        (2, "identifier.resident_id"), (3, "input.json"), (5, "contract.unknown_field")]
    reader = TopicReader(settings, ["ingest.public_security.population_register"])
    assert len(reader.until(2)) == 2
    reader.close()


def test_up_status_down_and_demo_on_embedded_runtime(tmp_path: Path) -> None:
    env = {"GOVBUS_STATE_DIR": str(tmp_path / "state"), "GOVBUS_PARTITIONS": "2"}
    try:
        _up_status_down_and_demo(tmp_path, env)
    finally:  # a failed check leaves nothing running behind it
        if (tmp_path / "state" / "runtime.json").exists():
            govbus("down", env=env)


def _up_status_down_and_demo(tmp_path: Path, env: dict[str, str]) -> None:
    up = govbus("up", env=env)
    assert up.returncode == 0, up.stderr + up.stdout
    assert "2 partitions each" in up.stdout  # GOVBUS_PARTITIONS, no --partitions given
    # a key pair per sample agency and for the bus, private keys mode 600, all registered
    keys = tmp_path / "state" / "keys"
    holders = {p.stem for p in keys.glob("*.key")}
    assert holders == {"civil_affairs", "hrss", "market_regulation", "public_security", "tax",
                       "govbus", "information_center"}
    assert {oct(p.stat().st_mode & 0o777) for p in keys.glob("*.key")} == {"0o600"}
    # the command line acts through the runtime's HTTP service, with a token
    refused = govbus("keys", "list", "--json", env=env)
    assert refused.returncode == 1 and "through the service at" in refused.stderr
    admin = env | {"GOVBUS_TOKEN_FILE": str(tmp_path / "state" / "information_center.token")}
    listed = json.loads(govbus("keys", "list", "--json", env=admin).stdout)
    assert {k["agency"] for k in listed if k["valid"]} == holders
    status = json.loads(govbus("status", "--json", env=env).stdout)
    assert status["up"] and status["embedded"] == {"broker": True, "postgres": True}
    assert status["api_url"] in up.stdout and status["components"]["api"]["alive"]
    if shutil.which("prometheus"):  # govbus up starts a local Prometheus where installed
        assert status["prometheus_url"] in up.stdout and "prometheus" in status["components"]
    assert set(status["metrics_ports"]) >= {"hotpath", "ops_exporter", "reconciler",
                                            "cases_sink"}
    pids = [c["pid"] for c in status["components"].values()]
    again = govbus("up", env=env)
    assert "reusing" in again.stdout
    assert [c["pid"] for c in json.loads(govbus("status", "--json", env=env).stdout)[
        "components"].values()] == pids
    # a stream app dies: the supervisor starts that one again and leaves the broker be
    os.kill(status["components"]["reconciler"]["pid"], signal.SIGKILL)

    def restarted_once() -> dict[str, Any] | None:
        now = json.loads(govbus("status", "--json", env=env).stdout)
        return now if now["up"] and now["restarts"] == {"reconciler": 1} else None

    after = wait_until(restarted_once, 45, "the supervisor to restart the reconciler")
    assert after["components"]["broker"]["pid"] == status["components"]["broker"]["pid"]
    assert after["components"]["reconciler"]["pid"] != status["components"]["reconciler"]["pid"]
    assert {n: c["pid"] for n, c in after["components"].items() if n != "reconciler"} == {
        n: c["pid"] for n, c in status["components"].items() if n != "reconciler"}
    pids = [c["pid"] for c in after["components"].values()]
    down = govbus("down", env=env)
    assert down.returncode == 0 and down.stdout.count("stopped") == len(pids)
    assert len(pids) == 3 + len(STREAM_APPS) + bool(shutil.which("prometheus"))  # supervisord
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    assert govbus("status", "--json", env=env).stdout.count('"up": false') == 1

    demo = govbus("demo", "--events", "400", env=env)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "consistent:" in demo.stdout and "INCONSISTENT" not in demo.stdout
    assert not (tmp_path / "state" / "runtime.json").exists()


def test_publish_and_request_read_the_catalogue_of_schemas(tmp_path: Path, settings: Settings
                                                           ) -> None:
    from govbus.core import access

    root = copy_catalogue(tmp_path)
    edit(root, "public_security/population_register.avsc",
         lambda s: s["fields"].append({"name": "nickname", "type": "string"}))
    edit(root, "tax/tax_registration.avsc",
         lambda s: s["govbus"].update(share_class="unconditional"))
    person = {"resident_id": "11010519491231002X", "name": "王芳", "gender": "F",
              "birth_date": "1949-12-31", "residence_address": "渝水区1号",
              "household_division": "360502"}
    path = tmp_path / "people.jsonl"
    path.write_text(json.dumps(person, ensure_ascii=False) + "\n")
    env = {"KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
           "DATABASE_URL": settings.database_url}
    publish = ("publish", "--agency", "public_security", "--resource", "population_register",
               "--file", str(path), "--json")
    shipped = govbus(*publish, env=env)
    assert shipped.returncode == 0 and json.loads(shipped.stdout)["published"] == 1, \
        shipped.stderr
    copied = govbus("--schemas", str(root), *publish, env=env)
    assert copied.returncode == 3, copied.stderr  # the copy requires a nickname
    assert "nickname" in json.dumps(json.loads(copied.stdout)["refusals"])

    me = f"agency_{uuid.uuid4().hex[:8]}"
    env[access.TOKEN_ENV] = access.issue(settings.database_url, me, "test")
    request = ("request", "--agency", me, "--resource", "tax.tax_registration", "--purpose",
               "audit", "--commitment",
               commitment(settings.database_url, me, "tax.tax_registration"), "--json")
    pending = govbus(*request, env=env)
    assert pending.returncode == 0 and json.loads(pending.stdout)["status"] == "pending", \
        pending.stderr
    granted = govbus("--schemas", str(root), *request, env=env)
    assert granted.returncode == 0, granted.stderr
    assert json.loads(granted.stdout)["status"] == "granted"  # unconditional in the copy


def test_free_text_reaches_the_terminal_escaped(database_url: str) -> None:
    from govbus.core import access

    me = f"agency_{uuid.uuid4().hex[:8]}"
    env = {"DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
           access.TOKEN_ENV: access.issue(database_url, me, "test")}
    reason = "核实\x1b]0;pwned\x07 地址\r\ncase 1: resolved\x9b2J\u202e"
    filed = govbus("complaint", "file", "--as", me, "--against", "tax", "--reason", reason,
                   env=env)
    assert filed.returncode == 0, filed.stderr
    text = govbus("complaint", "list", "--agency", me, env=env)
    assert text.returncode == 0, text.stderr
    assert "核实\\x1b]0;pwned\\x07 地址\\r\\ncase 1: resolved\\x9b2J\\u202e" in text.stdout
    assert not [c for c in text.stdout if c in "\x1b\x07\r\x9b\u202e"]
    listed = govbus("complaint", "list", "--agency", me, "--json", env=env)
    assert json.loads(listed.stdout)[0]["history"][0]["detail"] == reason
    assert not [c for c in listed.stdout if c in "\x1b\x07\r\x9b\u202e"]
