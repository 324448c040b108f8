"""Who is asking (Art. 24): every command that acts as an agency refuses a missing,
wrong, rotated, revoked or other agency's token, naming the agency and the article; tokens are
kept only as salted hashes; the information center's token is created mode 0600."""

from __future__ import annotations

import json
import os
import stat
import uuid
from pathlib import Path

import pytest

from govbus.core import access, db, sharing_store
from govbus.core.catalogue import Catalogue
from tests.integration.govbus.test_cli import govbus
from tests.integration.helpers import commitment


def agency() -> str:
    return f"agency_{uuid.uuid4().hex[:8]}"


def cli(dsn: str, *args: str, token: str | None = None,
        extra: dict[str, str] | None = None) -> tuple[int, str, str]:
    env = {"DATABASE_URL": dsn, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
           access.TOKEN_ENV: token or ""} | (extra or {})
    out = govbus(*args, env=env)
    return out.returncode, out.stdout, out.stderr


REQUEST = ("request", "--resource", "tax.tax_registration", "--purpose", "audit")


def test_request_needs_the_applicants_own_token(database_url: str) -> None:
    me, other = agency(), agency()
    mine, theirs = access.issue(database_url, me, "t"), access.issue(database_url, other, "t")
    sc = ("--commitment", commitment(database_url, me, "tax.tax_registration"))
    for token, why in ((None, f"acting as {me} needs {me}'s credential"),
                       (theirs, f"not {me}'s"), ("gbt_forged", f"not {me}'s")):
        code, _, err = cli(database_url, *REQUEST, *sc, "--agency", me, token=token)
        assert code == 1 and why in err and "Art. 24" in err, err
    code, out, err = cli(database_url, *REQUEST, *sc, "--agency", me, token=mine)
    assert code == 0, err


def test_one_agency_cannot_approve_or_revoke_as_another(database_url: str,
                                                        catalogue: Catalogue) -> None:
    me = agency()
    req = sharing_store.file_request(database_url, catalogue.resources["tax.tax_registration"],
                                     me, "audit", None,
                                     commitment(database_url, me, "tax.tax_registration"),
                                     None)
    hrss = access.issue(database_url, "hrss", "t")
    code, _, err = cli(database_url, "approve", str(req["request_id"]), "--as", "tax",
                       "--reason", "x", token=hrss)
    assert code == 1 and "not tax's" in err and "Art. 24" in err
    code, _, err = cli(database_url, "reject", str(req["request_id"]), "--as", "tax",
                       "--reason", "x", token=access.issue(database_url, me, "t"))
    assert code == 1 and "not tax's" in err  # the requester can't decide its own request
    tax = access.issue(database_url, "tax", "t")
    code, _, err = cli(database_url, "approve", str(req["request_id"]), "--as", "tax",
                       "--reason", "duty", token=tax)
    assert code == 0, err
    grant_id = sharing_store.list_grants(database_url, me, None, True)[0]["grant_id"]
    code, _, err = cli(database_url, "revoke", str(grant_id), "--as", "information_center",
                       "--reason", "x", token=tax)
    assert code == 1 and "not information_center's" in err
    assert sharing_store.list_grants(database_url, me, None, True), "revoked without right"


def test_reading_as_another_agency_is_refused(database_url: str) -> None:
    me, spy = agency(), agency()
    spy_token = access.issue(database_url, spy, "t")
    for args in (("query", "--agency", me, "--resource", "tax.tax_registration", "--key", "1"),
                 ("backfill", "--agency", me, "--resource", "tax.tax_registration"),
                 ("deliveries", "--recipient", me), ("deliveries", "--provider", me),
                 ("deliveries",)):
        code, _, err = cli(database_url, *args, token=spy_token)
        owner = me if len(args) > 1 else "information_center"
        assert code == 1 and f"not {owner}'s" in err and "Art. 24" in err, (args, err)
    code, out, err = cli(database_url, "deliveries", "--recipient", spy, "--json",
                         token=spy_token)
    assert code == 0 and out.strip() == "[]", err


def test_subscriber_refuses_another_agency_and_ungranted_topics(
        database_url: str, catalogue: Catalogue) -> None:
    me, other = agency(), agency()
    sharing_store.file_request(database_url,
                               catalogue.resources["public_security.population_register"],
                               me, "duties", None,
                               commitment(database_url, me, "public_security.*"), None)
    mine, theirs = access.issue(database_url, me, "t"), access.issue(database_url, other, "t")
    code, _, err = cli(database_url, "subscribe", "--agency", me, "--idle-exit", "1",
                       token=theirs)
    assert code == 1 and f"not {me}'s" in err
    # asked explicitly for a topic its agency is not granted: refused, not silently empty
    code, _, err = cli(database_url, "subscribe", "--agency", me, "--resource",
                       "tax_registration", "--idle-exit", "1", token=mine)
    assert code == 1 and "no grant in force for tax_registration" in err and "Art. 24" in err
    assert "granted: population_register" in err


def test_rotation_and_revocation(database_url: str) -> None:
    me = agency()
    old = access.issue(database_url, me, "t")
    new = access.issue(database_url, me, "t")
    with pytest.raises(access.AccessError, match="not .*'s"):
        access.authenticate(database_url, me, old)
    access.authenticate(database_url, me, new)
    assert access.revoke(database_url, me)
    with pytest.raises(access.AccessError, match=r"Art\. 24"):
        access.authenticate(database_url, me, new)


def test_tokens_are_stored_only_as_salted_hashes(database_url: str) -> None:
    a, b = agency(), agency()
    ta, tb = access.issue(database_url, a, "t"), access.issue(database_url, b, "t")
    with db.transaction(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT agency, salt, token_hash, kdf FROM agency_credentials "
                    "WHERE agency IN (%s, %s)", (a, b))
        rows = {r[0]: (bytes(r[1]), bytes(r[2]), r[3]) for r in cur.fetchall()}
        cur.execute("SELECT count(*) FROM agency_credentials WHERE "
                    "position(%s::bytea in token_hash) > 0 OR position(%s::bytea in salt) > 0",
                    (ta.encode(), ta.encode()))
        assert cur.fetchone()[0] == 0
    assert rows[a][0] != rows[b][0] and len(rows[a][1]) == 32 and rows[a][2].startswith("scrypt")
    assert ta not in str(access.list_credentials(database_url)) and tb != ta


def test_admin_token_file_and_token_file_permissions(empty_database: str,
                                                     tmp_path: Path) -> None:
    db.migrate(empty_database)
    code, out, err = cli(empty_database, "access", "init",
                         extra={"GOVBUS_STATE_DIR": str(tmp_path)})
    path = tmp_path / access.ADMIN_TOKEN_FILE
    assert code == 0 and path.exists(), err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    code, _, err = cli(empty_database, "access", "issue", "--agency", "tax")
    assert code == 1 and "information_center" in err        # only the IC issues
    code, out, err = cli(empty_database, "access", "issue", "--agency", "tax", "--json",
                         "--token-file", str(path))
    assert code == 0 and '"token": "gbt_' in out, err
    code, out, _ = cli(empty_database, "access", "list", "--json", "--token-file", str(path))
    assert code == 0 and "tax" in out and "hash" not in out and "gbt_" not in out
    os.chmod(path, 0o644)                                    # a token readable by others
    code, _, err = cli(empty_database, "access", "list", "--token-file", str(path))
    assert code == 1 and "readable by others" in err


def test_issue_only_to_who_exists_and_out_writes_a_private_file(empty_database: str,
                                                                 tmp_path: Path) -> None:
    db.migrate(empty_database)
    code, _, err = cli(empty_database, "access", "init",
                       extra={"GOVBUS_STATE_DIR": str(tmp_path / "state")})
    admin = ("--token-file", str(tmp_path / "state" / access.ADMIN_TOKEN_FILE))
    assert code == 0, err
    for name in ("x" * 100_000, "agency_nobody", "Tax", "information_center_2"):
        code, out, err = cli(empty_database, "access", "issue", "--agency", name, *admin)
        assert code == 1 and "is not an agency of the catalogue" in err and "Art. 24" in err
        assert "valid: civil_affairs, hrss, information_center, market_regulation, " \
            "municipal_office, public_security, tax" in err and len(err) < 600, err[:600]
    assert [c["agency"] for c in access.list_credentials(empty_database)] == [
        access.INFORMATION_CENTER]

    target = tmp_path / "handover" / "tax.token"
    target.parent.mkdir()
    target.write_text("an older file, readable by others\n")
    os.chmod(target, 0o644)  # replaced by a new file, never written through
    code, out, err = cli(empty_database, "access", "issue", "--agency", "tax", "--out",
                         str(target), *admin)
    assert code == 0, err
    token = target.read_text().strip()
    assert token.startswith("gbt_") and token not in out and str(target) in out
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["tax.token"]  # no temporary left
    access.authenticate(empty_database, "tax", token)

    code, out, err = cli(empty_database, "access", "issue", "--agency", "municipal_office",
                         "--out", str(tmp_path / "office.token"), "--json", *admin)
    assert code == 0, err
    assert json.loads(out) == {"agency": "municipal_office",
                               "token_file": str(tmp_path / "office.token")}
    assert stat.S_IMODE((tmp_path / "office.token").stat().st_mode) == 0o600
    # a file that cannot be written: refused before issuing, the old token still works
    code, _, err = cli(empty_database, "access", "issue", "--agency", "tax", "--out",
                       str(tmp_path / "missing" / "tax.token"), *admin)
    assert code == 1 and "--out" in err
    access.authenticate(empty_database, "tax", token)
