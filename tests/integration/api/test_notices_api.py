"""Notices (Art. 18) through the real service: the control plane's own notices reach the
provider, an agency reads only its own, only the recipient acknowledges, once; and ``govbus
notices`` / ``notices ack`` through the service with no database address."""

from __future__ import annotations

import json

from govbus.core import db
from tests.integration.api.conftest import Service, token
from tests.integration.api.test_cases_api import CENTER, OFFICE, POP, agency, cli, refused
from tests.integration.govbus.test_cli import govbus
from tests.integration.helpers import commitment


def notify(dsn: str, to: str, kind: str, body: dict[str, object]) -> int:
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO notifications (agency, kind, body) VALUES (%s, %s, %s) "
                    "RETURNING notification_id", (to, kind, json.dumps(body)))
        return int(cur.fetchone()[0])


def test_the_provider_is_told_of_a_request_and_acknowledges_it(service: Service) -> None:
    me = agency()
    number = commitment(service.database_url, me, POP)
    with service.client(me) as mine, service.client("public_security") as provider:
        r = mine.post("/v1/requests", json={"resource": POP, "purpose": "benefit checks",
                                            "commitment": number})
        assert r.status_code == 201, r.text
        request_id = r.json()["request_id"]
        told = [n for n in provider.get("/v1/notices", params={"unread": True}).json()
                if n["body"].get("request_id") == request_id]
        assert [(n["agency"], n["kind"], n["acknowledged_at"]) for n in told] == [
            ("public_security", "request_granted", None)]
        # the requester is not the recipient: it neither sees nor acknowledges it
        assert all(n["agency"] == me for n in mine.get("/v1/notices").json())
        refused(mine.post(f"/v1/notices/{told[0]['id']}/ack"), 403, "notice.not_yours")
        r = provider.post(f"/v1/notices/{told[0]['id']}/ack")
        assert r.status_code == 200 and r.json()["acknowledged_at"], r.text
        assert told[0]["id"] not in [n["id"] for n in provider.get(
            "/v1/notices", params={"unread": True}).json()]


def test_notices_are_read_by_their_agency_and_acknowledged_once(service: Service) -> None:
    me, other = agency(), agency()
    dsn = service.database_url
    first = notify(dsn, me, "request_pending", {"request_id": 1, "note": "décidez"})
    second = notify(dsn, me, "grant_revoked", {"grant_id": 2})
    theirs = notify(dsn, other, "grant_revoked", {"grant_id": 3})
    with service.client(me) as mine, service.client(other) as nosy, \
            service.client(CENTER) as ic, service.client(OFFICE) as office:
        rows = mine.get("/v1/notices").json()
        assert [n["id"] for n in rows] == [second, first]  # newest first
        assert rows[1]["body"] == {"request_id": 1, "note": "décidez"}
        refused(nosy.get("/v1/notices", params={"agency": me}), 403, "access.other_agency")
        assert [n["id"] for n in nosy.get("/v1/notices").json()] == [theirs]
        assert [n["id"] for n in ic.get("/v1/notices", params={"agency": me}).json()] == [
            second, first]
        assert [n["id"] for n in office.get("/v1/notices", params={"agency": me}).json()] == [
            second, first]

        refused(nosy.post(f"/v1/notices/{first}/ack"), 403, "notice.not_yours")
        refused(ic.post(f"/v1/notices/{first}/ack"), 403, "notice.not_yours")
        acked = mine.post(f"/v1/notices/{first}/ack").json()
        assert acked["id"] == first and acked["acknowledged_at"]
        again = mine.post(f"/v1/notices/{first}/ack").json()
        assert again["acknowledged_at"] == acked["acknowledged_at"]  # kept once
        assert [n["id"] for n in mine.get("/v1/notices", params={"unread": True}).json()] == [
            second]
        refused(mine.post("/v1/notices/987654321/ack"), 404, "notice.not_found")
        refused(mine.post("/v1/notices/x/ack"), 422, "input.invalid")
        refused(mine.get("/v1/notices", params={"limit": 0}), 422, "input.invalid")


def test_notices_command_through_the_service(service: Service) -> None:
    me, other = agency(), agency()
    dsn = service.database_url
    first = notify(dsn, me, "request_pending", {"request_id": 7, "note": "a\x1b[31mb"})
    notify(dsn, other, "grant_revoked", {"grant_id": 8})
    code, rows, err = cli(service, me, "notices")
    assert code == 0 and [n["id"] for n in rows] == [first], err
    code, text, err = cli(service, me, "notices", "--unread", json_out=False)
    assert code == 0 and f"notice {first}" in text and "UNREAD" in text, err
    assert "\x1b" not in text and "\\u001b" in text  # free text escaped
    code, _, err = cli(service, other, "notices", "ack", str(first))
    assert code == 1 and "notice.not_yours" in err and "HTTP 403" in err
    code, _, err = cli(service, other, "notices", "--agency", me)
    assert code == 1 and "access.other_agency" in err
    code, text, err = cli(service, me, "notices", "ack", str(first), json_out=False)
    assert code == 0 and text.startswith(f"notice {first}: acknowledged by {me} at "), err
    code, text, err = cli(service, me, "notices", "--unread", json_out=False)
    assert code == 0 and text.strip() == "no unread notices", err
    code, rows, err = cli(service, CENTER, "notices", "--agency", me)
    assert code == 0 and rows[0]["acknowledged_at"], err


def test_notices_command_prints_the_same_through_the_service_and_directly(service: Service
                                                                          ) -> None:
    me = agency()
    first = notify(service.database_url, me, "grant_revoked", {"grant_id": 9, "reason": "r"})
    direct = {"DATABASE_URL": service.database_url, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
              "GOVBUS_TOKEN": token(service.database_url, me)}
    for json_out in (True, False):
        code, via_service, err = cli(service, me, "notices", json_out=json_out)
        assert code == 0, err
        out = govbus("notices", *(["--json"] if json_out else []), env=direct)
        assert out.returncode == 0, out.stderr
        assert (json.loads(out.stdout) if json_out else out.stdout) == via_service
    out = govbus("notices", "ack", str(first), "--json", env=direct)
    assert out.returncode == 0 and json.loads(out.stdout)["acknowledged_at"], out.stderr
    out = govbus("notices", "--agency", "tax", env=direct)  # the direct path checks it too
    assert out.returncode == 1
    assert f"the caller is {me}; it cannot read tax's notices" in out.stderr
