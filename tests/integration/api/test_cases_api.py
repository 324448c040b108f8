"""Cases (Art. 8, 20), objections (Art. 19) and complaints (Art. 29) through the real service:
who reads, who resolves and answers, what a second answer gets; and the ``cases``,
``objection`` and ``complaint`` commands acting through it with no database address."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from govbus.core import access, db
from tests.integration.api.conftest import Service, token
from tests.integration.govbus.test_cli import govbus
from tests.integration.helpers import commitment

POP = "public_security.population_register"
CENTER, OFFICE = access.INFORMATION_CENTER, "municipal_office"


def agency() -> str:
    return f"agency_{uuid.uuid4().hex[:8]}"


def cli(service: Service, as_: str, *args: str, json_out: bool = True
        ) -> tuple[int, Any, str]:
    """``govbus ARGS`` through the service as ``as_``: only GOVBUS_API_URL and GOVBUS_TOKEN,
    no DATABASE_URL (the helper drops it), so a command that opened the database would fail."""
    env = {"GOVBUS_API_URL": service.url,
           access.TOKEN_ENV: token(service.database_url, as_)}
    out = govbus(*args, *(["--json"] if json_out else []), env=env)
    data = json.loads(out.stdout) if json_out and out.returncode == 0 else out.stdout
    return out.returncode, data, out.stderr


def refused(r: httpx.Response, status: int, rule: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert error["status"] == status and error["rule"] == rule, error
    return error


def open_case(dsn: str, owner: str, other: str, resource: str = "tax.tax_registration"
              ) -> int:
    """An open case owned by ``owner`` (the source of record) against ``other``'s value, as
    the cases sink writes it."""
    values = [{"agency": owner, "resource": f"{owner}.register", "value": "李强",
               "source_of_record": True},
              {"agency": other, "resource": resource, "value": "李刚",
               "source_of_record": False}]
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("""INSERT INTO cases (case_key, entity_key, attribute, owner_agency,
                           other_agency, status, values, opened_at, deadline)
                       VALUES (%s, %s, 'company.legal_representative', %s, %s, 'open', %s,
                               now(), now() + interval '5 days') RETURNING id""",
                    (uuid.uuid4().hex, f"company:{uuid.uuid4().hex[:18]}", owner, other,
                     json.dumps(values, ensure_ascii=False)))
        return int(cur.fetchone()[0])


def test_cases_read_by_their_parties_and_resolved_by_the_owner_once(service: Service
                                                                   ) -> None:
    owner, other, stranger = agency(), agency(), agency()
    case_id = open_case(service.database_url, owner, other)
    with service.client(owner) as mine, service.client(other) as theirs, \
            service.client(stranger) as nosy, service.client(CENTER) as ic, \
            service.client(OFFICE) as office:
        assert [c["id"] for c in mine.get("/v1/cases").json()] == [case_id]
        assert [c["id"] for c in mine.get("/v1/cases", params={"owned": True}).json()] == [
            case_id]
        assert [c["id"] for c in theirs.get("/v1/cases").json()] == [case_id]
        assert theirs.get("/v1/cases", params={"owned": True}).json() == []
        assert nosy.get("/v1/cases").json() == []
        assert theirs.get(f"/v1/cases/{case_id}").json()["owner_agency"] == owner
        # Art. 24: by its id, another's case is refused, naming the rule
        error = refused(nosy.get(f"/v1/cases/{case_id}"), 403, "access.not_yours")
        assert error["article"] == "Art. 24" and owner in error["message"]
        refused(nosy.get("/v1/cases", params={"agency": owner}), 403, "access.other_agency")
        # the information center and the office read every case
        assert ic.get(f"/v1/cases/{case_id}").json()["id"] == case_id
        assert case_id in [c["id"] for c in office.get(
            "/v1/cases", params={"agency": owner}).json()]
        assert case_id in [c["id"] for c in ic.get(
            "/v1/cases", params={"resource": "tax.tax_registration", "status": "open"}).json()]
        assert case_id not in [c["id"] for c in ic.get(
            "/v1/cases", params={"resource": "hrss.no_such"}).json()]
        refused(ic.get("/v1/cases", params={"status": "bogus"}), 422, "input.invalid")

        body = {"resolution": "confirmed", "note": "register checked: 李强 since 2019"}
        error = refused(theirs.post(f"/v1/cases/{case_id}/resolve", json=body), 403,
                        "case.not_owner")
        assert error["article"] == "Art. 8" and f"owned by {owner}" in error["message"]
        refused(ic.post(f"/v1/cases/{case_id}/resolve", json=body), 403, "case.not_owner")
        refused(theirs.post(f"/v1/cases/{case_id}/resolve", json=body | {"agency": owner}),
                403, "access.other_agency")
        error = refused(mine.post(f"/v1/cases/{case_id}/resolve",
                                  json=body | {"resolution": "fixed"}), 422, "input.invalid")
        assert error["problems"][0]["field"] == "resolution"
        error = refused(mine.post(f"/v1/cases/{case_id}/resolve",
                                  json={"resolution": "confirmed"}), 422, "input.missing")
        assert "note: required" in error["message"]
        refused(mine.post(f"/v1/cases/{case_id}/resolve", json=body | {"colour": 1}), 422,
                "input.unknown_field")
        refused(mine.post(f"/v1/cases/{case_id}/resolve", json=body | {"note": "  "}), 422,
                "input.note")

        r = mine.post(f"/v1/cases/{case_id}/resolve", json=body)
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["resolution"], r.json()["resolved_by"]) == (
            "resolved", "confirmed", owner)
        error = refused(mine.post(f"/v1/cases/{case_id}/resolve", json=body), 409,
                        "case.not_open")
        assert "resolved, not open" in error["message"] and error["article"] == "Art. 20"
        assert mine.get(f"/v1/cases/{case_id}").json()["note"] == body["note"]

        refused(mine.get("/v1/cases/987654321"), 404, "case.not_found")
        refused(mine.post("/v1/cases/987654321/resolve", json=body), 404, "case.not_found")


def test_objection_answered_by_the_provider_complaint_by_the_office(service: Service) -> None:
    me, stranger = agency(), agency()
    number = commitment(service.database_url, me, POP)
    with service.client(me) as mine, service.client(stranger) as nosy, \
            service.client("public_security") as provider, service.client("hrss") as hrss, \
            service.client("tax") as tax, service.client(CENTER) as ic, \
            service.client(OFFICE) as office:
        r = mine.post("/v1/requests", json={"resource": POP, "purpose": "benefit checks",
                                            "fields": ["name", "residence_address"],
                                            "commitment": number})
        assert r.status_code == 201 and r.json()["status"] == "granted", r.text

        refused(mine.post("/v1/objections", json={"against": "public_security",
                                                  "reason": "x"}), 422, "input.missing")
        error = refused(mine.post("/v1/objections", json={
            "against": "tax", "resource": "tax.tax_registration", "reason": "wrong name"}),
            422, "objection.not_received")
        assert error["article"] == "Art. 19"
        r = mine.post("/v1/objections", json={"against": "public_security", "resource": POP,
                                              "key": "360502198001010015",
                                              "reason": "address differs"})
        assert r.status_code == 201, r.text
        obj = r.json()
        assert (obj["kind"], obj["filed_by"], obj["status"]) == ("objection", me, "open")

        assert nosy.get("/v1/objections").json() == []
        refused(nosy.get(f"/v1/objections/{obj['id']}"), 403, "access.not_yours")
        assert provider.get(f"/v1/objections/{obj['id']}").json()["id"] == obj["id"]
        assert office.get(f"/v1/objections/{obj['id']}").json()["id"] == obj["id"]

        error = refused(hrss.post(f"/v1/objections/{obj['id']}/answer",
                                  json={"answer": "n/a"}), 403, "objection.not_answerer")
        assert error["article"] == "Art. 19"
        refused(mine.post(f"/v1/objections/{obj['id']}/answer", json={}), 422,
                "input.missing")
        r = provider.post(f"/v1/objections/{obj['id']}/answer",
                          json={"answer": "verified on site; register corrected"})
        assert r.status_code == 200 and r.json()["answered_by"] == "public_security", r.text
        assert [h["action"] for h in r.json()["history"]] == ["filed", "answered"]
        refused(ic.post(f"/v1/objections/{obj['id']}/answer", json={"answer": "again"}), 409,
                "objection.not_open")

        r = mine.post("/v1/complaints", json={"against": "tax", "reason": "charged a fee "
                                              "for shared data (Art. 4, 31)"})
        assert r.status_code == 201 and r.json()["handler"] == OFFICE, r.text
        complaint = r.json()
        for answerer in (tax, ic):  # Art. 29: the office answers a complaint
            error = refused(answerer.post(f"/v1/objections/{complaint['id']}/answer",
                                          json={"answer": "we did not"}), 403,
                            "objection.not_answerer")
            assert error["article"] == "Art. 29"
        assert complaint["id"] in [o["id"] for o in tax.get(
            "/v1/objections", params={"kind": "complaint"}).json()]
        r = office.post(f"/v1/objections/{complaint['id']}/answer",
                        json={"answer": "fee refunded"})
        assert r.status_code == 200 and r.json()["status"] == "answered", r.text

        listed = mine.get("/v1/objections", params={"kind": "complaint"}).json()
        assert [o["id"] for o in listed] == [complaint["id"]]
        assert {o["id"] for o in mine.get("/v1/objections").json()} == {obj["id"],
                                                                        complaint["id"]}
        refused(mine.get("/v1/objections", params={"kind": "grievance"}), 422,
                "input.invalid")
        refused(mine.get("/v1/objections/987654321"), 404, "objection.not_found")
        refused(office.post("/v1/objections/987654321/answer", json={"answer": "x"}), 404,
                "objection.not_found")


def test_cases_and_objection_commands_through_the_service(service: Service) -> None:
    owner, other = agency(), agency()
    case_id = open_case(service.database_url, owner, other)
    code, rows, err = cli(service, owner, "cases", "list")
    assert code == 0, err
    assert [(r["id"], r["owner_agency"], r["status"]) for r in rows] == [(case_id, owner,
                                                                        "open")]
    code, text, _ = cli(service, other, "cases", "list", json_out=False)
    assert code == 0 and f"case {case_id}" in text and "李刚" in text and "1 case(s)" in text
    code, _, err = cli(service, other, "cases", "resolve", str(case_id), "--as", owner,
                       "--resolution", "confirmed", "--note", "pretending")
    assert code == 1 and "access.other_agency" in err and "HTTP 403" in err
    code, _, err = cli(service, other, "cases", "resolve", str(case_id), "--as", other,
                       "--resolution", "confirmed", "--note", "not mine")
    assert code == 1 and f"owned by {owner}" in err and "case.not_owner" in err
    code, text, err = cli(service, owner, "cases", "resolve", str(case_id), "--as", owner,
                          "--resolution", "corrected", "--note", "fixed", json_out=False)
    assert code == 0 and text.strip() == f"case {case_id}: resolved (corrected) by {owner}", err
    code, _, err = cli(service, owner, "cases", "resolve", str(case_id), "--as", owner,
                       "--resolution", "corrected", "--note", "again")
    assert code == 1 and "not open" in err and "HTTP 409" in err

    code, out, err = cli(service, owner, "complaint", "file", "--as", owner, "--against",
                         "tax", "--reason", "late answers (Art. 31)")
    assert code == 0 and (out["kind"], out["filed_by"]) == ("complaint", owner), err
    code, _, err = cli(service, "tax", "complaint", "answer", str(out["id"]), "--as", "tax",
                       "--answer", "no")
    assert code == 1 and "Art. 29" in err and "HTTP 403" in err
    code, answered, err = cli(service, OFFICE, "complaint", "answer", str(out["id"]), "--as",
                              OFFICE, "--answer", "tax warned")
    assert code == 0 and answered["answered_by"] == OFFICE, err
    code, listed, err = cli(service, owner, "complaint", "list")
    assert code == 0 and [(o["id"], o["status"]) for o in listed] == [(out["id"],
                                                                       "answered")], err


def test_case_and_objection_listings_print_the_same_through_the_service_and_directly(
        service: Service) -> None:
    owner, other = agency(), agency()
    case_id = open_case(service.database_url, owner, other)
    direct = {"DATABASE_URL": service.database_url, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    code, filed, err = cli(service, owner, "complaint", "file", "--as", owner, "--against",
                           "tax", "--reason", "no answer in 10 working days")
    assert code == 0, err
    for args in (("cases", "list", "--agency", owner), ("complaint", "list", "--agency", owner)):
        for json_out in (True, False):
            code, via_service, err = cli(service, CENTER, *args, json_out=json_out)
            assert code == 0, err
            out = govbus(*args, *(["--json"] if json_out else []), env=direct)
            assert out.returncode == 0, out.stderr
            assert (json.loads(out.stdout) if json_out else out.stdout) == via_service
            assert str(case_id if args[0] == "cases" else filed["id"]) in out.stdout
