"""Credentials (Art. 24), signing keys (Art. 8) and quarantined payloads (Art. 19) through
the real service: the information center alone issues, revokes and lists tokens and
registers keys; an agency revokes its own keys; a provider reads its own quarantine; and
``govbus access``, ``keys`` and ``quarantine`` through the service with no database address.

Tokens are rotated here, so these tests run a service over a database of their own."""

from __future__ import annotations

import base64
import hashlib
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from govbus.core import db, registry, signatures
from govbus.core.catalogue import load_catalogue
from tests.integration.api.conftest import Service, start_service, stop_service, token
from tests.integration.api.test_cases_api import CENTER, OFFICE, cli, refused
from tests.integration.conftest import register_sample_keys


@pytest.fixture
def own(empty_database: str, bootstrap: str, tmp_path: Path) -> Iterator[Service]:
    """The service over a database of this test's own: migrated, catalogue synced, the
    sample keys registered."""
    db.migrate(empty_database)
    registry.sync(empty_database, load_catalogue())
    register_sample_keys(empty_database)
    svc = start_service(empty_database, bootstrap, tmp_path / "serve.log")
    yield svc
    stop_service(svc)


def pem() -> str:
    return signatures.public_pem(signatures.generate().public_key()).decode()


def quarantined(dsn: str, agency: str, payload: bytes) -> int:
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("""INSERT INTO quarantine (agency, stage, rule, reason, topic,
                           kafka_partition, kafka_offset, record_key, payload, payload_bytes,
                           payload_sha256)
                       VALUES (%s, 'gate', 'identifier.check_digit', 'bad check digit',
                               %s, 0, 7, %s, %s, %s, %s) RETURNING id""",
                    (agency, f"ingest.{agency}.x", b"360502198001010015", payload,
                     len(payload), hashlib.sha256(payload).hexdigest()))
        return int(cur.fetchone()[0])


def test_only_the_information_center_issues_revokes_and_lists_tokens(own: Service) -> None:
    old = token(own.database_url, "hrss")
    with own.client("tax") as tax, own.client(OFFICE) as office, own.client(CENTER) as ic:
        for who in (tax, office):
            refused(who.get("/v1/access/tokens"), 403, "access.center_only")
            error = refused(who.post("/v1/access/tokens", json={"agency": "hrss"}), 403,
                            "access.center_only")
            assert error["article"] == "Art. 24"
            refused(who.post("/v1/access/tokens/hrss/revoke"), 403, "access.center_only")
            refused(who.delete("/v1/access/tokens/hrss"), 403, "access.center_only")
        with own.client(token_=old) as hrss:
            assert hrss.get("/v1/grants").status_code == 200

        r = ic.post("/v1/access/tokens", json={"agency": "hrss"})
        assert r.status_code == 201 and r.json()["agency"] == "hrss", r.text
        new = r.json()["token"]
        assert new.startswith("gbt_hrss.") and new != old
        with own.client(token_=old) as stale, own.client(token_=new) as fresh:
            refused(stale.get("/v1/grants"), 401, "access.bad_token")  # rotated: refused
            assert fresh.get("/v1/grants").status_code == 200
        listed = ic.get("/v1/access/tokens").json()
        assert {"hrss", "tax", CENTER} <= {r["agency"] for r in listed}
        assert all(set(r) == {"agency", "kdf", "issued_at", "issued_by", "last_used_at"}
                   for r in listed)  # never a hash or a salt
        assert [r["issued_by"] for r in listed if r["agency"] == "hrss"] == [CENTER]

        refused(ic.post("/v1/access/tokens", json={"agency": "nobody"}), 422,
                "access.unknown_agency")
        error = refused(ic.post("/v1/access/tokens", json={}), 422, "input.missing")
        assert error["problems"][0]["field"] == "agency"
        refused(ic.post("/v1/access/tokens", json={"agency": "Bad Name"}), 422,
                "input.invalid")

        assert ic.post("/v1/access/tokens/hrss/revoke").json() == {"agency": "hrss",
                                                                   "revoked": True}
        with own.client(token_=new) as revoked:
            refused(revoked.get("/v1/grants"), 401, "access.bad_token")
        assert ic.delete("/v1/access/tokens/hrss").json() == {"agency": "hrss",
                                                              "revoked": False}


def test_the_center_registers_keys_and_an_agency_revokes_its_own(own: Service) -> None:
    mine, bus = pem(), pem()
    with own.client("tax") as tax, own.client("hrss") as hrss, own.client(CENTER) as ic:
        # a token alone never makes a signing identity (Art. 8, 24)
        refused(tax.post("/v1/keys", json={"public_key_pem": mine}), 403, "access.center_only")
        r = ic.post("/v1/keys", json={"public_key_pem": mine, "agency": "tax"})
        assert r.status_code == 201, r.text
        key = r.json()
        assert (key["agency"], key["registered_by"], key["valid"], key["valid_keys"]) == (
            "tax", CENTER, True, 2)  # the sample key and this one: a rotation
        assert ic.post("/v1/keys", json={"public_key_pem": mine, "agency": "tax"}).json()[
            "key_id"] == key["key_id"]  # the same key again: unchanged
        error = refused(ic.post("/v1/keys", json={"public_key_pem": mine, "agency": "hrss"}),
                        422, "keys.refused")
        assert "registered for tax" in error["message"]  # a key speaks for one agency
        refused(ic.post("/v1/keys", json={"public_key_pem": "not a key", "agency": "tax"}),
                422, "input.public_key_pem")
        refused(ic.post("/v1/keys", json={"public_key_pem": pem(), "agency": "nobody"}), 422,
                "keys.unknown_holder")
        refused(ic.post("/v1/keys", json={}), 422, "input.missing")

        r = ic.post("/v1/keys", json={"public_key_pem": bus, "agency": "govbus"})
        assert r.status_code == 201 and r.json()["registered_by"] == CENTER, r.text
        bus_id = r.json()["key_id"]
        assert bus_id in [k["key_id"] for k in hrss.get("/v1/keys/bus").json()]
        assert bus in [k["public_key_pem"] for k in hrss.get("/v1/keys/bus").json()]
        listed = hrss.get("/v1/keys", params={"agency": "tax"}).json()
        assert key["key_id"] in [k["key_id"] for k in listed]
        assert {k["agency"] for k in listed} == {"tax"}

        refused(hrss.post(f"/v1/keys/{key['key_id']}/revoke", json={}), 403,
                "access.not_yours")
        refused(tax.post(f"/v1/keys/{key['key_id']}/revoke", json={"agency": "hrss"}), 404,
                "keys.not_found")
        r = tax.post(f"/v1/keys/{key['key_id']}/revoke", json={})
        assert r.status_code == 200 and r.json()["revoked_by"] == "tax", r.text
        assert (r.json()["valid"], r.json()["valid_keys_left"]) == (False, 1)
        r = ic.post(f"/v1/keys/{bus_id}/revoke", json={"agency": "govbus"})
        assert r.status_code == 200 and r.json()["revoked_by"] == CENTER, r.text
        assert bus_id not in [k["key_id"] for k in hrss.get("/v1/keys/bus").json()]
        refused(tax.post("/v1/keys/no-such-key/revoke", json={}), 404, "keys.not_found")


def test_a_provider_reads_its_own_quarantine(own: Service) -> None:
    dsn = own.database_url
    payload = b"\x00\x00\x00\x00\x01garbage"
    ours, theirs = quarantined(dsn, "tax", payload), quarantined(dsn, "hrss", b"x")
    with own.client("tax") as tax, own.client(CENTER) as ic:
        assert [r["id"] for r in tax.get("/v1/quarantine").json()] == [ours]
        refused(tax.get("/v1/quarantine", params={"agency": "hrss"}), 403,
                "access.other_agency")
        assert {r["id"] for r in ic.get("/v1/quarantine").json()} == {ours, theirs}
        assert [r["id"] for r in ic.get("/v1/quarantine", params={"agency": "hrss"}
                                        ).json()] == [theirs]
        got = tax.get(f"/v1/quarantine/{ours}").json()
        assert base64.b64decode(got["payload_base64"]) == payload
        assert (got["key"], got["rule"], got["payload_bytes"]) == (
            "360502198001010015", "identifier.check_digit", len(payload))
        # another agency's record is as absent as a missing one (Art. 24)
        refused(tax.get(f"/v1/quarantine/{theirs}"), 404, "quarantine.not_found")
        refused(tax.get("/v1/quarantine/987654321"), 404, "quarantine.not_found")
        assert ic.get(f"/v1/quarantine/{theirs}").json()["agency"] == "hrss"


def test_access_keys_and_quarantine_commands_through_the_service(own: Service,
                                                                 tmp_path: Path) -> None:
    code, _, err = cli(own, "tax", "access", "list")
    assert code == 1 and "access.center_only" in err and "HTTP 403" in err
    code, out, err = cli(own, CENTER, "access", "issue", "--agency", "civil_affairs")
    assert code == 0 and out["token"].startswith("gbt_civil_affairs."), err
    target = tmp_path / "civil.token"
    code, out, err = cli(own, CENTER, "access", "issue", "--agency", "civil_affairs",
                         "--out", str(target))
    assert code == 0 and out == {"agency": "civil_affairs", "token_file": str(target)}, err
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    with own.client(token_=target.read_text().strip()) as civil:
        assert civil.get("/v1/grants").status_code == 200
    code, rows, err = cli(own, CENTER, "access", "list")
    assert code == 0 and "civil_affairs" in [r["agency"] for r in rows], err
    code, text, err = cli(own, CENTER, "access", "revoke", "--agency", "civil_affairs",
                          json_out=False)
    assert code == 0 and text.strip() == "civil_affairs: credential revoked", err

    public = tmp_path / "tax.pub"
    public.write_text(pem())
    code, _, err = cli(own, "tax", "keys", "register", "--agency", "tax", "--public-key",
                       str(public))
    assert code == 1 and "access.center_only" in err
    code, key, err = cli(own, CENTER, "keys", "register", "--agency", "tax", "--public-key",
                         str(public))
    assert code == 0 and (key["agency"], key["registered_by"]) == ("tax", CENTER), err
    assert "valid_keys" not in key  # the same JSON as without the service
    code, text, err = cli(own, "tax", "keys", "list", "--agency", "tax", json_out=False)
    assert code == 0 and key["key_id"] in text and "valid" in text, err
    code, text, err = cli(own, "hrss", "keys", "show", "--bus", json_out=False)
    assert code == 0 and text.startswith("-----BEGIN PUBLIC KEY-----"), err
    code, _, err = cli(own, "hrss", "keys", "revoke", "--agency", "tax", "--key-id",
                       key["key_id"])
    assert code == 1 and "access.not_yours" in err
    code, text, err = cli(own, "tax", "keys", "revoke", "--agency", "tax", "--key-id",
                          key["key_id"], json_out=False)
    assert code == 0 and f"key {key['key_id']} of tax revoked" in text and \
        "1 valid key(s) left" in text, err

    payload = b"\x00\x00\x00\x00\x02whole payload"
    ours = quarantined(own.database_url, "tax", payload)
    theirs = quarantined(own.database_url, "hrss", b"y")
    code, rows, err = cli(own, "tax", "quarantine", "list")
    assert code == 0 and [r["id"] for r in rows] == [ours], err
    out_file = tmp_path / "payload.bin"
    code, meta, err = cli(own, "tax", "quarantine", "show", str(ours), "--out", str(out_file))
    assert code == 0 and meta["written_to"] == str(out_file), err
    assert meta["key"] == "360502198001010015" and "payload_base64" not in meta
    assert out_file.read_bytes() == payload
    code, _, err = cli(own, "tax", "quarantine", "show", str(theirs))
    assert code == 1 and f"no quarantined record {theirs}" in err and "HTTP 404" in err
