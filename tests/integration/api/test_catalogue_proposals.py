"""Catalogue changes as proposals through the real service (Art. 4, 7, 8, 12, 13): an agency
proposes a contract of its own resource, the checks run at once, the information center
approves (only then is it registered: the service, ``catalogue_resources`` and
``schema_versions`` show it) or rejects with a reason; the yearly review. The module has a
database and a broker of its own: approvals change its registry."""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from govbus.core import access, db, registry
from govbus.core.catalogue import default_schemas_dir, load_catalogue
from govbus.core.config import Settings
from govbus.core.control_plane import load_catalogue_meta
from govbus.core.kafka import admin
from govbus.delivery_log import audit
from tests.integration.api.conftest import (
    ROOT,
    Service,
    own_service,
    token,
)

TAX = "tax.tax_registration"
PEOPLE = "public_security.population_register"
IC = access.INFORMATION_CENTER


def contract(rel: str = "tax/tax_registration.avsc") -> dict[str, Any]:
    return json.loads((default_schemas_dir() / rel).read_text())


@pytest.fixture(scope="module")
def svc(pg_admin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with own_service(pg_admin, tmp_path_factory.mktemp("catalogue-service"), 29192) as service:
        yield service


def rows(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return list(cur.fetchall())


def propose(http: httpx.Client, resource: str, schema: Any, **params: str) -> httpx.Response:
    body = schema if isinstance(schema, bytes) else json.dumps(schema,
                                                               ensure_ascii=False).encode()
    return http.post("/v1/catalogue/proposals", content=body,
                     params={"resource": resource} | params,
                     headers={"content-type": "application/json"})


def test_catalogue_reads_are_the_registered_catalogue(svc: Service) -> None:
    with svc.client("hrss") as http:
        listed = http.get("/v1/catalogue").json()
        assert {r["resource"] for r in listed} == set(load_catalogue().resources)
        r = http.get("/v1/catalogue", params={"share_class": "on_application", "agency": "tax"})
        assert [e["resource"] for e in r.json()] == [TAX]
        r = http.get("/v1/catalogue", params={"q": "resident_id"})
        assert PEOPLE in {e["resource"] for e in r.json()}
        assert TAX not in {e["resource"] for e in r.json()}
        r = http.get("/v1/catalogue", params={"database_class": "nonsense"})
        assert r.status_code == 422
        one = http.get(f"/v1/catalogue/{PEOPLE}").json()
        assert one["provider"] == "public_security" and "legal_basis" in one
        assert http.get(f"/v1/catalogue/{TAX}").json()["legal_basis"].startswith("Law")
        assert [v["version"] for v in one["versions"]] == [1]
        assert one["update_period"] and one["share_class"]
        name = next(f for f in one["fields"] if f["name"] == "name")
        assert (name["identifier"], name["canonical"], name["source_of_record"]) == \
            ("name", "person.name", True)
        assert any(f["sensitive"] for f in one["fields"])
        assert one["grantees"] == []
        r = http.get("/v1/catalogue/tax.no_such")
        assert r.status_code == 404 and r.json()["error"]["rule"] == \
            "catalogue.unknown_resource"


def test_an_approved_proposal_is_registered_and_served(svc: Service) -> None:
    changed = contract()
    changed["fields"].append({"name": "vat_number", "type": ["null", "string"],
                              "default": None})
    with svc.client("tax") as tax, svc.client(IC) as ic:
        r = propose(tax, TAX, changed, note="VAT number, optional")
        assert r.status_code == 201, r.text
        p = r.json()
        assert (p["status"], p["kind"], p["base_version"], p["errors"]) == \
            ("pending", "change", 1, 0)
        assert p["resource"] == TAX and p["agency"] == "tax" and p["note"] == \
            "VAT number, optional"
        # proposed is not registered: the service and the registry still hold v1
        assert [v["version"] for v in tax.get(f"/v1/catalogue/{TAX}").json()["versions"]] == [1]
        assert rows(svc.database_url, "SELECT count(*) FROM schema_versions "
                    "WHERE resource_id = %s", TAX) == [(1,)]
        assert p["proposal_id"] in tax.get(f"/v1/catalogue/{TAX}").json()["pending_proposals"]
        r = ic.post(f"/v1/catalogue/proposals/{p['proposal_id']}/approve",
                    json={"reason": "optional field, compatible"})
        assert r.status_code == 200, r.text
        done = r.json()
        assert (done["status"], done["decided_by"], done["version"]) == \
            ("approved", IC, 2)
        entry = tax.get(f"/v1/catalogue/{TAX}").json()
        assert [v["version"] for v in entry["versions"]] == [1, 2]
        assert "vat_number" in {f["name"] for f in entry["fields"]}
        assert entry["pending_proposals"] == []
        again = ic.post(f"/v1/catalogue/proposals/{p['proposal_id']}/approve", json={})
        assert again.status_code == 409 and again.json()["error"]["rule"] == "proposal.decided"
    (contract_v2, schema_id), = rows(svc.database_url, "SELECT contract, schema_id FROM "
                                     "schema_versions WHERE resource_id = %s AND version = 2",
                                     TAX)
    assert contract_v2["fields"][-1]["name"] == "vat_number" and schema_id == done["schema_id"]
    # what the stream apps read: the registry's latest version, the entry's metadata
    assert registry.SchemaRegistry(svc.database_url).latest(TAX).version == 2
    assert load_catalogue_meta(svc.database_url)[TAX]["provider"] == "tax"


def test_a_new_resource_is_registered_with_its_topics(svc: Service) -> None:
    new = contract()
    new["name"] = "TaxArrears"
    new["govbus"]["title"] = "欠税公告 Tax arrears"
    for f in new["fields"]:  # not a source of record of anything (Art. 8)
        f.get("govbus", {}).pop("source_of_record", None)
    with svc.client("tax") as tax, svc.client(IC) as ic:
        p = propose(tax, "tax.tax_arrears", new).json()
        assert (p["kind"], p["base_version"], p["errors"]) == ("new", None, 0), p
        done = ic.post(f"/v1/catalogue/proposals/{p['proposal_id']}/approve", json={}).json()
        assert done["version"] == 1 and "ingest.tax.tax_arrears" in done["topics"]["created"]
        listed = tax.get("/v1/catalogue", params={"agency": "tax"}).json()
        assert {e["resource"] for e in listed} == {TAX, "tax.tax_arrears"}
    settings = Settings(svc.bootstrap, svc.database_url, default_schemas_dir())
    names = admin(settings).list_topics(timeout=10).topics
    assert {"ingest.tax.tax_arrears", "validated.tax.tax_arrears"} <= set(names)


def test_a_rejected_proposal_keeps_its_reason_and_is_not_registered(svc: Service) -> None:
    changed = contract("public_security/population_register.avsc")
    changed["govbus"]["conditions"] = changed["govbus"]["conditions"] + " (revised)"
    with svc.client("public_security") as ps, svc.client(IC) as ic:
        p = propose(ps, PEOPLE, changed).json()
        assert p["errors"] == 0, p["findings"]
        url = f"/v1/catalogue/proposals/{p['proposal_id']}/reject"
        r = ic.post(url, json={})
        assert r.status_code == 422 and "reason: required" in r.json()["error"]["message"]
        r = ic.post(url, json={"reason": "   "})
        assert r.status_code == 422 and r.json()["error"]["rule"] == "proposal.reason_missing"
        r = ic.post(url, json={"reason": "条件未改变实质内容 the conditions say nothing new"})
        assert r.status_code == 200 and r.json()["status"] == "rejected"
        shown = ps.get(f"/v1/catalogue/proposals/{p['proposal_id']}").json()
        assert shown["reason"].startswith("条件未改变") and shown["decided_by"] == IC
        r = ic.post(f"/v1/catalogue/proposals/{p['proposal_id']}/approve", json={})
        assert r.status_code == 409 and r.json()["error"]["rule"] == "proposal.decided"
        assert [x["proposal_id"] for x in ps.get("/v1/catalogue/proposals",
                                                  params={"status": "rejected"}).json()] == \
            [p["proposal_id"]]
    meta = load_catalogue_meta(svc.database_url)[PEOPLE]
    assert not meta["conditions"].endswith("(revised)")


def test_only_the_provider_proposes_and_only_the_center_decides(svc: Service) -> None:
    with svc.client("tax") as tax, svc.client("public_security") as ps, \
            svc.client("municipal_office") as office:
        before = rows(svc.database_url, "SELECT count(*) FROM catalogue_proposals")
        r = propose(tax, PEOPLE, contract("public_security/population_register.avsc"))
        assert r.status_code == 403
        err = r.json()["error"]
        assert (err["rule"], err["article"]) == ("catalogue.not_provider", "Art. 13")
        assert "public_security" in err["message"]
        named = contract()  # filed as tax's, naming another provider
        named["govbus"]["provider"] = "public_security"
        r = propose(tax, "tax.tax_registration", named)
        assert r.status_code == 403 and r.json()["error"]["rule"] == "catalogue.not_provider"
        assert rows(svc.database_url, "SELECT count(*) FROM catalogue_proposals") == before
        changed = contract("public_security/population_register.avsc")
        changed["doc"] = "revised description"
        p = propose(ps, PEOPLE, changed).json()
        for who, path, body in ((ps, "approve", {}), (tax, "approve", {}),
                                (ps, "reject", {"reason": "mine"})):
            r = who.post(f"/v1/catalogue/proposals/{p['proposal_id']}/{path}", json=body)
            assert r.status_code == 403, r.text
            assert (r.json()["error"]["rule"], r.json()["error"]["article"]) == \
                ("access.center_only", "Art. 13")
        r = tax.get(f"/v1/catalogue/proposals/{p['proposal_id']}")
        assert r.status_code == 403 and r.json()["error"]["rule"] == "access.not_yours"
        assert p["proposal_id"] not in {x["proposal_id"] for x in
                                        tax.get("/v1/catalogue/proposals").json()}
        assert p["proposal_id"] in {x["proposal_id"] for x in
                                    office.get("/v1/catalogue/proposals").json()}
        r = tax.get("/v1/catalogue/proposals", params={"agency": "public_security"})
        assert r.status_code == 403 and r.json()["error"]["rule"] == "access.other_agency"
        assert ps.get(f"/v1/catalogue/proposals/{p['proposal_id']}").json()["status"] == \
            "pending"


def test_failing_checks_are_returned_and_refuse_approval(svc: Service) -> None:
    bad = contract("civil_affairs/marriage_register.avsc")
    bad["govbus"].pop("title")  # Art. 7
    bad["fields"].append({"name": "witness", "type": "string"})  # no default: incompatible
    with svc.client("civil_affairs") as ca, svc.client(IC) as ic:
        r = propose(ca, "civil_affairs.marriage_register", bad)
        assert r.status_code == 201, r.text
        p = r.json()
        found = {(f["severity"], f["field"], f["rule"], f["article"]) for f in p["findings"]}
        assert ("error", "govbus.title", "art7.missing_element", "Art. 7") in found
        assert ("error", "witness", "schema.incompatible", "Art. 13") in found
        assert p["errors"] == sum(f["severity"] == "error" for f in p["findings"]) >= 2
        r = ic.post(f"/v1/catalogue/proposals/{p['proposal_id']}/approve", json={})
        assert r.status_code == 409
        err = r.json()["error"]
        assert err["rule"] == "proposal.checks_failed" and err["article"] == "Art. 13"
        assert "witness" in err["message"] and "art7.missing_element" in err["message"]
        assert {f["rule"] for f in err["findings"]} >= {"art7.missing_element",
                                                         "schema.incompatible"}
        assert ca.get(f"/v1/catalogue/proposals/{p['proposal_id']}").json()["status"] == \
            "pending"
        # Art. 8 across the catalogue: a second source of record of a person's name
        two = contract("civil_affairs/marriage_register.avsc")
        for f in two["fields"]:
            if f.get("govbus", {}).get("canonical") == "person.name":
                f["govbus"]["source_of_record"] = True
        q = propose(ca, "civil_affairs.marriage_register", two).json()
        assert "art8.two_sources" in {f["rule"] for f in q["findings"]}, q["findings"]
        assert q["errors"] >= 1
    assert rows(svc.database_url, "SELECT count(*) FROM schema_versions WHERE resource_id = "
                "'civil_affairs.marriage_register'") == [(1,)]


def test_a_proposal_made_before_another_was_approved_is_stale(svc: Service) -> None:
    rid = "market_regulation.legal_entity_register"
    first, second = contract("market_regulation/legal_entity_register.avsc"), \
        contract("market_regulation/legal_entity_register.avsc")
    first["govbus"]["conditions"] = "first revision"
    second["govbus"]["conditions"] = "second revision"
    with svc.client("market_regulation") as mr, svc.client(IC) as ic:
        a, b = propose(mr, rid, first).json(), propose(mr, rid, second).json()
        assert ic.post(f"/v1/catalogue/proposals/{a['proposal_id']}/approve",
                       json={}).status_code == 200
        r = ic.post(f"/v1/catalogue/proposals/{b['proposal_id']}/approve", json={})
        assert r.status_code == 409 and r.json()["error"]["rule"] == "proposal.stale"
        assert mr.get(f"/v1/catalogue/{rid}").json()["conditions"] == "first revision"
        same = propose(mr, rid, first)
        assert same.status_code == 409 and same.json()["error"]["rule"] == "proposal.unchanged"


@pytest.mark.parametrize(("body", "says"), [
    (b"", "empty"),
    (b"{\"type\": \"record\",", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b"\xff\xfe", "not UTF-8"),
    (json.dumps({"type": "enum", "name": "X", "symbols": ["A"]}).encode(), "record schema"),
    (json.dumps({"type": "record", "name": "X", "fields": [{"name": "a", "type": "strnig"}],
                 "govbus": {}}).encode(), "not a valid Avro schema"),
    (json.dumps({"type": "record", "name": "X",
                 "fields": [{"name": "a", "type": "string"}]}).encode(), "catalogue entry"),
])
def test_a_malformed_contract_is_a_422_naming_what_is_wrong(svc: Service, body: bytes,
                                                            says: str) -> None:
    with svc.client("tax") as tax:
        r = propose(tax, "tax.tax_registration", body)
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["rule"] == "proposal.malformed" and says in err["message"], err
        r = propose(tax, "tax.Bad-Name", contract())
        assert r.status_code == 422 and r.json()["error"]["rule"] == "input.resource_id"


def test_the_yearly_review(svc: Service) -> None:
    with svc.client("tax") as tax, svc.client("hrss") as hrss, svc.client(IC) as ic, \
            svc.client("municipal_office") as office:
        soon = tax.get("/v1/catalogue/reviews/due").json()
        assert soon == []  # everything registered within the year
        later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=400)).isoformat()
        mine = tax.get("/v1/catalogue/reviews/due", params={"as_of": later}).json()
        taxes = {e["resource"] for e in tax.get("/v1/catalogue", params={"agency": "tax"}
                                                ).json()}
        assert {r["resource"] for r in mine} == taxes and TAX in taxes
        assert all(r["since"] == "registration" and r["days_overdue"] >= 34 for r in mine)
        every = {r["resource"] for r in ic.get("/v1/catalogue/reviews/due",
                                               params={"as_of": later}).json()}
        assert every == {e["resource"] for e in ic.get("/v1/catalogue").json()}
        assert {r["resource"] for r in office.get("/v1/catalogue/reviews/due",
                                                  params={"as_of": later}).json()} == every
        r = tax.get("/v1/catalogue/reviews/due", params={"agency": "hrss"})
        assert r.status_code == 403 and r.json()["error"]["rule"] == "access.other_agency"
        before = next(r for r in mine if r["resource"] == TAX)
        just_after = (dt.datetime.fromisoformat(before["due_at"])
                      + dt.timedelta(milliseconds=1)).isoformat()
        assert TAX in {r["resource"] for r in tax.get("/v1/catalogue/reviews/due", params={
            "as_of": just_after}).json()}
        r = hrss.post(f"/v1/catalogue/{TAX}/review", json={"note": "not mine"})
        assert r.status_code == 403 and r.json()["error"]["rule"] == "catalogue.not_provider"
        r = tax.post(f"/v1/catalogue/{TAX}/review", json={"note": ""})
        assert r.status_code == 422
        r = tax.post(f"/v1/catalogue/{TAX}/review", json={"note": "字段与法律依据已核对 fields "
                                                        "and legal basis checked"})
        assert r.status_code == 201, r.text
        reviewed = r.json()
        assert reviewed["agency"] == "tax" and reviewed["note"].startswith("字段")
        # a year after registration, but not after the review: due no more
        assert reviewed["next_due_at"] > just_after
        due = {r["resource"] for r in tax.get("/v1/catalogue/reviews/due",
                                              params={"as_of": just_after}).json()}
        assert TAX not in due
        again = {r["resource"]: r for r in tax.get("/v1/catalogue/reviews/due",
                                                   params={"as_of": later}).json()}
        assert again[TAX]["since"] == "review" and again[TAX]["due_at"] == \
            reviewed["next_due_at"]
        entry = tax.get(f"/v1/catalogue/{TAX}").json()
        assert entry["last_review"]["note"] == reviewed["note"]
        assert entry["review_due_at"] == reviewed["next_due_at"]
    assert rows(svc.database_url, "SELECT agency, note FROM catalogue_reviews WHERE "
                "resource_id = %s", TAX) == [("tax", reviewed["note"])]


def cli(service: Service, agency: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``govbus ARGS`` as ``agency`` runs it: the service's URL and its token, no database."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "GOVBUS_TOKEN_FILE")}
    env |= {"GOVBUS_API_URL": service.url, "GOVBUS_TOKEN": token(service.database_url, agency),
            "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "govbus.cli", *args], env=env, text=True,
                          capture_output=True, timeout=120)


def ok(out: subprocess.CompletedProcess[str], code: int = 0) -> Any:
    assert out.returncode == code, out.stderr + out.stdout
    return json.loads(out.stdout)


def test_the_commands_through_the_service(svc: Service, tmp_path: Path) -> None:
    changed = copy.deepcopy(contract("hrss/social_insurance_enrolment.avsc"))
    changed["govbus"]["conditions"] = "revised through the command line"
    path = tmp_path / "social_insurance_enrolment.avsc"
    path.write_text(json.dumps(changed, ensure_ascii=False))
    p = ok(cli(svc, "hrss", "catalogue", "propose", str(path), "--agency", "hrss",
               "--note", "doc", "--json"))
    assert (p["resource"], p["status"], p["errors"]) == \
        ("hrss.social_insurance_enrolment", "pending", 0)
    listed = ok(cli(svc, "hrss", "catalogue", "proposals", "--status", "pending", "--json"))
    assert [x["proposal_id"] for x in listed] == [p["proposal_id"]]
    assert ok(cli(svc, "hrss", "catalogue", "proposal", str(p["proposal_id"]), "--json"))[
        "contract"]["govbus"]["conditions"] == "revised through the command line"
    refused = cli(svc, "hrss", "catalogue", "approve", str(p["proposal_id"]))
    assert refused.returncode == 1 and "access.center_only" in refused.stderr
    done = ok(cli(svc, IC, "catalogue", "approve", str(p["proposal_id"]), "--reason", "ok",
                  "--json"))
    # the entry changed, not its Avro schema: the same version, the entry as approved
    assert (done["status"], done["version"], done["registered"]) == ("approved", 1, "unchanged")
    with svc.client("tax") as http:
        assert http.get("/v1/catalogue/hrss.social_insurance_enrolment").json()[
            "conditions"] == "revised through the command line"
    text = cli(svc, "hrss", "catalogue", "proposal", str(p["proposal_id"]))
    assert text.returncode == 0 and "approved by information_center" in text.stdout

    bad = copy.deepcopy(changed)
    bad["fields"].append({"name": "extra", "type": "int"})
    path.write_text(json.dumps(bad))
    failing = ok(cli(svc, "hrss", "catalogue", "propose", str(path), "--agency", "hrss",
                     "--json"), code=3)
    assert failing["errors"] >= 1
    refused = cli(svc, IC, "catalogue", "approve", str(failing["proposal_id"]))
    assert refused.returncode == 1 and "proposal.checks_failed" in refused.stderr
    assert "extra" in refused.stderr
    rejected = ok(cli(svc, IC, "catalogue", "reject", str(failing["proposal_id"]),
                      "--reason", "incompatible", "--json"))
    assert rejected["status"] == "rejected" and rejected["reason"] == "incompatible"
    other = cli(svc, "tax", "catalogue", "propose", str(path), "--agency", "hrss")
    assert other.returncode == 1 and "catalogue.not_provider" in other.stderr

    reviewed = ok(cli(svc, "hrss", "catalogue", "review", "hrss.social_insurance_enrolment",
                      "--note", "reviewed", "--json"))
    assert reviewed["agency"] == "hrss"
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=400)).isoformat()
    due = ok(cli(svc, "hrss", "catalogue", "reviews-due", "--as-of", later, "--json"))
    assert [r["resource"] for r in due] == ["hrss.social_insurance_enrolment"]
    assert due[0]["since"] == "review"
    assert ok(cli(svc, "hrss", "catalogue", "reviews-due", "--json")) == []


def test_the_commands_directly_on_the_database(svc: Service, tmp_path: Path) -> None:
    """Without the service (the information center's administration): the same commands,
    each checking the acting agency's token first (Art. 24)."""
    def direct(agency: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("GOVBUS_API", "GOVBUS_TOKEN", "KAFKA_"))}
        env |= {"DATABASE_URL": svc.database_url, "PYTHONPATH": str(ROOT),
                "GOVBUS_TOKEN": token(svc.database_url, agency)}
        return subprocess.run([sys.executable, "-m", "govbus.cli", *args], env=env,
                              text=True, capture_output=True, timeout=120)

    changed = contract("civil_affairs/adoption_register.avsc")
    changed["fields"].append({"name": "court", "type": ["null", "string"], "default": None})
    path = tmp_path / "adoption_register.avsc"
    path.write_text(json.dumps(changed, ensure_ascii=False))
    forged = direct("tax", "catalogue", "propose", str(path), "--agency", "civil_affairs")
    assert forged.returncode == 1 and "not civil_affairs's" in forged.stderr
    p = ok(direct("civil_affairs", "catalogue", "propose", str(path), "--agency",
                  "civil_affairs", "--json"))
    assert [x["proposal_id"] for x in ok(direct(
        "civil_affairs", "catalogue", "proposals", "--status", "pending", "--resource",
        "civil_affairs.adoption_register", "--json"))] == [p["proposal_id"]]
    refused = direct("civil_affairs", "catalogue", "approve", str(p["proposal_id"]))
    assert refused.returncode == 1 and "not information_center's" in refused.stderr
    done = ok(direct(IC, "catalogue", "approve", str(p["proposal_id"]), "--json"))
    assert (done["status"], done["version"]) == ("approved", 2)
    assert registry.SchemaRegistry(svc.database_url).latest(
        "civil_affairs.adoption_register").version == 2


def test_the_ledger_records_proposals_and_reviews(svc: Service) -> None:
    audit.seal(svc.database_url)
    report = audit.verify(svc.database_url)
    assert report.ok, report.lines()
    tables = {e["table"] for e in audit.list_entries(svc.database_url, limit=10_000)}
    assert {"catalogue_proposals", "catalogue_reviews"} <= tables
    decided = [e for e in audit.list_entries(svc.database_url, "catalogue_proposals",
                                             limit=10_000) if e["op"] == "UPDATE"]
    assert decided and all(e["actor"] == IC for e in decided)
