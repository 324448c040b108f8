"""A whole sharing request by an agency that holds only its token and the service's URL:
it applies, the provider approves, it subscribes and queries — every command of the CLI
through ``govbus serve``, none with a database address (Art. 15, 17, 18, 24)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from govbus import sample
from govbus.core import db, keyring
from govbus.core.config import Settings
from govbus.stream_apps.hotpath import HotPath
from tests.integration.api.conftest import ROOT, Service, start_service, stop_service, token
from tests.integration.helpers import running

TAX = "tax.tax_registration"


@pytest.fixture
def hotpath(settings: Settings) -> Iterator[HotPath]:
    with running(HotPath(settings, group=f"test-api-{uuid.uuid4().hex[:8]}", batch=100)) as worker:
        yield worker


def cli(service: Service, agency: str, *args: str, stdin: str | None = None,
        extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``govbus ARGS`` as ``agency``'s system runs it: the service's URL, the agency's token
    and the broker, no database address."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "GOVBUS_TOKEN_FILE")}
    env |= {"GOVBUS_API_URL": service.url, "GOVBUS_TOKEN": token(service.database_url, agency),
            "KAFKA_BOOTSTRAP_SERVERS": service.bootstrap, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "govbus.cli", *args], env=env | (extra or {}),
                          input=stdin, text=True, capture_output=True, timeout=180)


def ok(out: subprocess.CompletedProcess[str]) -> object:
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def company(rng: random.Random) -> dict[str, str]:
    code = sample.uscc(rng, "360502")
    return {"uscc": code, "taxpayer_name": f"新余市{code[-4:]}有限公司",
            "legal_representative": "李强", "registered_address": "渝水区劳动北路1号",
            "taxpayer_type": "GENERAL", "tax_authority": "国家税务总局新余市渝水区税务局",
            "credit_rating": "AAA-2025-07"}


def test_apply_approve_subscribe_query_with_a_token_and_a_url_only(
        service: Service, hotpath: HotPath, settings: Settings, tmp_path: Path) -> None:
    me = f"agency_{uuid.uuid4().hex[:8]}"
    signed = tmp_path / "commitment.pdf"
    signed.write_bytes(b"%PDF-1.7 security commitment of " + me.encode())
    ok(cli(service, me, "commitments", "register", "--agency", me, "--number", f"SC-{me}",
           "--kind", "security", "--resources", TAX, "--purpose", "employer checks",
           "--signed-on", "2026-01-05", "--valid-until", "2030-12-31", "--document",
           str(signed), "--json"))
    pending = ok(cli(service, me, "request", "--agency", me, "--resource", TAX, "--purpose",
                     "employer checks", "--fields", "uscc,taxpayer_name,credit_rating",
                     "--commitment", f"SC-{me}", "--json"))
    assert isinstance(pending, dict) and pending["status"] == "pending"
    # the requester cannot approve its own request; the provider can
    refused = cli(service, me, "approve", str(pending["request_id"]), "--as", me, "--json")
    assert refused.returncode == 1 and "only the provider tax" in refused.stderr
    assert "HTTP 403" in refused.stderr
    approved = ok(cli(service, "tax", "approve", str(pending["request_id"]), "--as", "tax",
                      "--reason", "a statutory duty", "--json"))
    assert isinstance(approved, dict) and approved["status"] == "granted"
    entry = ok(cli(service, me, "catalogue", "show", TAX, "--json"))  # the registered entry
    assert isinstance(entry, dict) and entry["resource"] == TAX
    assert [g["recipient"] for g in entry["grantees"]] == [me]  # its own grant only
    listed = ok(cli(service, me, "catalogue", "list", "--json"))
    assert isinstance(listed, list) and TAX in {r["resource"] for r in listed}
    grants = ok(cli(service, me, "grants", "--agency", me, "--json"))
    assert isinstance(grants, list) and [g["state"] for g in grants] == ["in_force"]
    text = cli(service, me, "grants", "--agency", me).stdout  # 20 working days after consent
    assert f"provide by {grants[0]['provide_by'][:10]}" in text, text

    # the provider publishes through the service's registry (no database either)
    rng = random.Random(uuid.uuid4().int)
    firms = [company(rng) for _ in range(3)]
    lines = "\n".join(json.dumps({"op": "c", "record": f}, ensure_ascii=False) for f in firms)
    published = ok(cli(service, "tax", "publish", "--agency", "tax", "--resource",
                       "tax_registration", "--file", "-", "--json", stdin=lines))
    assert isinstance(published, dict) and published["published"] == 3, published

    bus_key = keyring.public_file(keyring.embedded_dir(settings), keyring.BUS)
    got = cli(service, me, "subscribe", "--agency", me, "--max", "3", "--idle-exit", "60",
              "--bus-public-key", str(bus_key))
    assert got.returncode == 0, got.stderr
    seen = [json.loads(line) for line in got.stdout.splitlines() if line.startswith("{")]
    assert sorted(d["key"] for d in seen) == sorted(f["uscc"] for f in firms)
    # framed Avro, decoded by the schema the service's registry answers for its id
    assert all(set(d["after"]) == {"uscc", "taxpayer_name", "credit_rating"} for d in seen)
    with db.transaction(settings.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM receipts WHERE recipient = %s", (me,))
        assert cur.fetchone()[0] == 3  # confirmed through the service

    answer = ok(cli(service, me, "query", "--agency", me, "--resource", TAX, "--key",
                    firms[0]["uscc"], "--json"))
    assert isinstance(answer, dict) and answer["record"]["uscc"] == firms[0]["uscc"]
    assert answer["record"]["credit_rating"] != firms[0]["credit_rating"]  # masked (Art. 25)
    other = cli(service, me, "query", "--agency", "tax", "--resource", TAX, "--key",
                firms[0]["uscc"], "--json")
    assert other.returncode == 1 and "cannot act as tax" in other.stderr
    mine = ok(cli(service, me, "deliveries", "--recipient", me, "--json"))
    assert isinstance(mine, list) and {d["channel"] for d in mine} == {"exchange", "query"}
    theirs = cli(service, me, "deliveries", "--recipient", "hrss", "--json")
    assert theirs.returncode == 1 and "HTTP 403" in theirs.stderr


def test_the_online_query_is_rate_limited_per_agency(settings: Settings,
                                                     tmp_path: Path) -> None:
    svc = start_service(settings.database_url, settings.bootstrap_servers,
                        tmp_path / "serve.log", {"GOVBUS_QUERY_RATE": "2/minute"})
    try:
        me, other = (f"agency_{uuid.uuid4().hex[:8]}" for _ in range(2))
        body = {"resource": TAX, "key": "91360502MA00000000"}
        with svc.client(me) as http, svc.client(other) as them:
            first = [http.post("/v1/query", json=body).status_code for _ in range(2)]
            assert first == [403, 403]  # no grant in force: refused, and counted
            third = http.post("/v1/query", json=body)
            assert third.status_code == 429 and third.json()["error"]["rule"] == \
                "rate.exceeded"
            assert 1 <= int(third.headers["retry-after"]) <= 60
            assert them.post("/v1/query", json=body).status_code == 403  # its own window
            metrics = http.get("/metrics").text
        assert f'govbus_api_rate_limited_total{{agency="{me}",limit="query"}} 1.0' in metrics
    finally:
        stop_service(svc)


def test_the_embedded_runtime_prints_and_sets_the_service(tmp_path: Path) -> None:
    """``api_url`` of runtime.json is what the CLI acts through when nothing is set."""
    from govbus.api import client as api_client
    from govbus.core.config import runtime_file

    state = tmp_path / "state"
    state.mkdir()
    runtime_file(state).write_text(json.dumps({"api_url": "http://127.0.0.1:1"}))
    before = dict(os.environ)
    try:
        os.environ.pop("DATABASE_URL", None)
        os.environ.pop("GOVBUS_API_URL", None)
        os.environ["GOVBUS_STATE_DIR"] = str(state)
        assert api_client.api_url() == "http://127.0.0.1:1"
        os.environ["DATABASE_URL"] = "postgresql://x"
        assert api_client.api_url() is None  # a database named: used directly
        os.environ["GOVBUS_API_URL"] = "http://svc:8480/"
        assert api_client.api_url() == "http://svc:8480"
    finally:
        os.environ.clear()
        os.environ.update(before)
