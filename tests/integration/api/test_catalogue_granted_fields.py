"""Evolution never drops a granted field silently (Art. 13, 18, 24), through the real service:
a proposal that removes fields a grant in force lists is refused, naming the grant and the
fields, though the change is backward compatible; proposed again naming the grant in
``amends_grants``, it is approved, and in the approving transaction the grant loses those
fields, the amendment is filed and the grantee told, and the audit ledger finds that within
the rules. The module has a database and a broker of its own: approvals change its registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from govbus.core import access, db, proposals, sharing_store
from govbus.core.catalogue import default_schemas_dir
from govbus.delivery_log import audit
from tests.integration.api.conftest import (
    ROOT,
    Service,
    own_service,
    token,
)
from tests.integration.helpers import commitment

TAX = "tax.tax_registration"
IC = access.INFORMATION_CENTER
DROPPED = ("tax_authority", "credit_rating")  # credit_rating is sensitive: granted masked


@pytest.fixture(scope="module")
def svc(pg_admin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with own_service(pg_admin, tmp_path_factory.mktemp("granted-fields-service"), 29392) as service:
        yield service


def rows(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return list(cur.fetchall())


def grant(dsn: str, recipient: str, fields: list[str]) -> int:
    """A grant in force of ``fields`` of tax_registration to ``recipient``, decided by tax."""
    res = proposals.registered_catalogue(dsn).resources[TAX]
    req = sharing_store.file_request(dsn, res, recipient, "statutory checks", fields,
                                     commitment(dsn, recipient, [TAX]))
    return int(sharing_store.decide(dsn, req["request_id"], "tax", True, "ok")["grant_id"])


def without(*names: str) -> dict[str, Any]:
    schema = json.loads((default_schemas_dir() / "tax/tax_registration.avsc").read_text())
    schema["fields"] = [f for f in schema["fields"] if f["name"] not in names]
    schema["govbus"]["compatibility"] = "BACKWARD"  # removing a field is backward compatible
    return schema


def propose(http: httpx.Client, schema: dict[str, Any], **params: Any) -> httpx.Response:
    return http.post("/v1/catalogue/proposals", content=json.dumps(schema).encode(),
                     params={"resource": TAX} | params,
                     headers={"content-type": "application/json"})


def granted(dsn: str, grant_id: int) -> tuple[list[str], list[str]]:
    (fields, masked), = rows(dsn, "SELECT fields, masked_fields FROM grants WHERE grant_id = %s",
                             grant_id)
    return list(fields), list(masked)


@pytest.fixture(scope="module")
def grants(svc: Service) -> dict[str, int]:
    dsn = svc.database_url
    return {"hrss": grant(dsn, "hrss", ["uscc", "taxpayer_name", *DROPPED]),
            "civil_affairs": grant(dsn, "civil_affairs", ["uscc", "taxpayer_name"])}


def test_removing_a_granted_field_is_refused_naming_the_grant(
        svc: Service, grants: dict[str, int]) -> None:
    dsn, hrss = svc.database_url, grants["hrss"]
    before = granted(dsn, hrss)
    assert before == (["uscc", "taxpayer_name", *DROPPED], ["credit_rating"])
    with svc.client("tax") as tax, svc.client(IC) as ic:
        r = propose(tax, without(*DROPPED))
        assert r.status_code == 201, r.text
        p = r.json()
        blocking = [f for f in p["findings"] if f["severity"] == "error"]
        assert {f["rule"] for f in blocking} == {"schema.granted_field"}, blocking
        assert sorted(f["field"] for f in blocking) == sorted(DROPPED)
        for f in blocking:
            assert f"grant {hrss} (hrss)" in f["message"] and "removed" in f["message"]
            assert f"grant {grants['civil_affairs']}" not in f["message"]  # lists neither
        assert not [f for f in p["findings"] if f["rule"] == "schema.incompatible"]

        refused = ic.post(f"/v1/catalogue/proposals/{p['proposal_id']}/approve", json={})
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert error["rule"] == "proposal.checks_failed"
        assert f"grant {hrss} (hrss)" in error["message"]
        assert {f["field"] for f in error["findings"]} == set(DROPPED)
        assert tax.get(f"/v1/catalogue/{TAX}").json()["versions"][-1]["version"] == 1
    assert granted(dsn, hrss) == before
    assert rows(dsn, "SELECT count(*) FROM filings WHERE decision = 'amended'") == [(0,)]
    ic_reject = {"reason": "drops granted fields"}
    with svc.client(IC) as ic:
        ic.post(f"/v1/catalogue/proposals/{p['proposal_id']}/reject", json=ic_reject)


def test_a_proposal_amending_the_grant_is_approved_and_the_grant_amended(
        svc: Service, grants: dict[str, int]) -> None:
    dsn, hrss, other = svc.database_url, grants["hrss"], grants["civil_affairs"]
    untouched = granted(dsn, other)
    with svc.client("tax") as tax, svc.client(IC) as ic:
        r = propose(tax, without(*DROPPED), amends_grants=[hrss, other])
        assert r.status_code == 201, r.text
        p = r.json()
        assert p["errors"] == 0, p["findings"]
        assert p["amends_grants"] == sorted([hrss, other])
        warned = {(f["rule"], f["field"]) for f in p["findings"] if f["severity"] == "warning"}
        assert {("schema.granted_field", name) for name in DROPPED} <= warned
        assert ("schema.amends_untouched", "-") in warned  # civil_affairs lists neither field

        done = ic.post(f"/v1/catalogue/proposals/{p['proposal_id']}/approve", json={})
        assert done.status_code == 200, done.text
        out = done.json()
        assert (out["status"], out["version"]) == ("approved", 2)
        assert out["amended"] == [{"grant_id": hrss, "recipient": "hrss",
                                   "fields": ["uscc", "taxpayer_name"], "masked_fields": [],
                                   "dropped": list(DROPPED), "retyped": []}]
        entry = tax.get(f"/v1/catalogue/{TAX}").json()
        assert {g["grant_id"]: g["fields"] for g in entry["grantees"]}[hrss] == \
            ["uscc", "taxpayer_name"]
    assert granted(dsn, hrss) == (["uscc", "taxpayer_name"], [])
    assert granted(dsn, other) == untouched
    filed = rows(dsn, "SELECT requester, provider, fields, decision, reason, decided_by "
                      "FROM filings WHERE decision = 'amended'")
    assert len(filed) == 1
    requester, provider, fields, _, reason, by = filed[0]
    assert (requester, provider, list(fields), by) == ("hrss", "tax", ["uscc", "taxpayer_name"],
                                                      IC)
    assert f"proposal {p['proposal_id']}" in reason and "tax_authority removed" in reason
    told = rows(dsn, "SELECT agency, body FROM notifications WHERE kind = 'grant_amended'")
    assert [(agency, body["grant_id"], body["dropped"], body["proposal_id"])
            for agency, body in told] == [("hrss", hrss, list(DROPPED), p["proposal_id"])]

    audit.seal(dsn)
    report = audit.verify(dsn)
    assert report.ok, report.lines()  # the narrowing follows its approval: within the rules
    # the same narrowing again, by raw SQL, is no amendment of any approval: outside the rules
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("UPDATE grants SET fields = '{uscc}' WHERE grant_id = %s", (hrss,))
    audit.seal(dsn)
    report = audit.verify(dsn)
    assert report.counts == {"outside_rules": 1}, report.lines()
    assert f"grants {hrss}" in report.problems[0].message


def test_the_command_line_names_the_grants_it_amends(svc: Service, tmp_path: Path,
                                                     grants: dict[str, int]) -> None:
    """``govbus catalogue propose --amends-grants`` through the service: civil_affairs's grant
    lists taxpayer_name (hrss's, amended above, no longer does)."""
    other = grants["civil_affairs"]
    path = tmp_path / "tax_registration.avsc"
    schema = without(*DROPPED, "taxpayer_name")
    path.write_text(json.dumps(schema))
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "GOVBUS_TOKEN_FILE")}
    env |= {"GOVBUS_API_URL": svc.url, "GOVBUS_TOKEN": token(svc.database_url, "tax"),
            "PYTHONPATH": str(ROOT)}

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "govbus.cli", "catalogue", "propose",
                               str(path), "--agency", "tax", "--json", *extra], env=env,
                              capture_output=True, text=True, timeout=120)

    refused = run()
    assert refused.returncode == 3, refused.stdout + refused.stderr
    named = [f for f in json.loads(refused.stdout)["findings"]
             if f["rule"] == "schema.granted_field"]
    assert [f["field"] for f in named] == ["taxpayer_name"]
    assert f"grant {other} (civil_affairs)" in named[0]["message"]
    assert f"grant {grants['hrss']} " not in named[0]["message"]
    amending = run("--amends-grants", f"{other}")
    assert amending.returncode == 0, amending.stdout + amending.stderr
    out = json.loads(amending.stdout)
    assert out["errors"] == 0 and out["amends_grants"] == [other]
    bad = run("--amends-grants", "12,x")
    assert bad.returncode == 2 and "not a comma-separated list of grant ids" in bad.stderr
