"""The sharing workflow through ``govbus`` (Art. 15, 18, 24, 25, 31), on real PostgreSQL."""

from __future__ import annotations

import json
import uuid

from govbus.core import access, db
from tests.integration.govbus.test_cli import govbus

TOKENS: dict[tuple[str, str], str] = {}


def token(database_url: str, agency: str) -> str:
    """``agency``'s credential (Art. 24), issued once per database for these tests."""
    if (database_url, agency) not in TOKENS:
        TOKENS[(database_url, agency)] = access.issue(database_url, agency, "test")
    return TOKENS[(database_url, agency)]


def run(database_url: str, *args: str, as_: str | None = None) -> tuple[int, dict | list]:
    """``govbus ARGS --json``, presenting ``as_``'s token when given."""
    env = {"DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    if as_:
        env[access.TOKEN_ENV] = token(database_url, as_)
    out = govbus(*args, "--json", env=env)
    return out.returncode, (json.loads(out.stdout) if out.stdout.strip() else {"err": out.stderr})


def test_request_decide_revoke_and_every_response_filed(database_url: str) -> None:
    me = f"agency_{uuid.uuid4().hex[:8]}"
    code, free = run(database_url, "request", "--agency", me, "--resource",
                     "public_security.population_register", "--purpose", "benefit checks",
                     "--fields", "name,phone", "--commitment", "SC-2026-17", as_=me)
    assert code == 0 and free["status"] == "granted" and free["masked_fields"] == ["phone"]

    code, pending = run(database_url, "request", "--agency", me, "--resource",
                        "tax.tax_registration", "--purpose", "employer checks",
                        "--commitment", "SC-2026-17", "--confidentiality", "CA-3", as_=me)
    assert code == 0 and pending["status"] == "pending" and pending["due_at"]
    code, err = run(database_url, "approve", str(pending["request_id"]), "--as", "hrss",
                    as_="hrss")
    assert code == 1 and "only the provider tax" in err["err"] and "Art. 18" in err["err"]
    code, ok = run(database_url, "approve", str(pending["request_id"]), "--as", "tax",
                   "--reason", "employer checks are a statutory duty", as_="tax")
    assert code == 0 and ok["status"] == "granted" and ok["masked_fields"] == []

    code, other = run(database_url, "request", "--agency", me, "--resource",
                      "hrss.social_insurance_enrolment", "--purpose", "curiosity",
                      "--commitment", "SC-2026-17", as_=me)
    code, rejected = run(database_url, "reject", str(other["request_id"]), "--as", "hrss",
                         "--reason", "purpose is outside the requester's duties (Art. 24)",
                         as_="hrss")
    assert code == 0 and rejected["status"] == "rejected"

    code, refused = run(database_url, "request", "--agency", me, "--resource",
                        "civil_affairs.adoption_register", "--purpose", "x",
                        "--commitment", "SC-2026-17", as_=me)
    assert code == 4 and refused["status"] == "refused" and "Civil Code" in refused["reason"]

    code, _ = run(database_url, "revoke", str(free["grant_id"]), "--as", "public_security",
                  "--reason", "commitment withdrawn", as_="public_security")
    assert code == 0
    code, grants = run(database_url, "grants", "--agency", me)
    assert sorted((g["resource"], g["state"]) for g in grants) == [
        ("public_security.population_register", "revoked"), ("tax.tax_registration", "in_force")]

    code, filings = run(database_url, "report", "filings")
    mine = [(f["resource_id"], f["decision"], f["decided_by"]) for f in filings
            if f["requester"] == me]
    assert mine == [
        ("public_security.population_register", "granted", "information_center"),
        ("tax.tax_registration", "granted", "tax"),
        ("hrss.social_insurance_enrolment", "rejected", "hrss"),
        ("civil_affairs.adoption_register", "refused", "information_center"),
        ("public_security.population_register", "revoked", "public_security")]


def test_unanswered_request_becomes_overdue(database_url: str) -> None:
    me = f"agency_{uuid.uuid4().hex[:8]}"
    _, req = run(database_url, "request", "--agency", me, "--resource", "tax.tax_registration",
                 "--purpose", "audit", "--commitment", "SC-1", as_=me)
    _, listed = run(database_url, "requests", "--agency", me, "--overdue")
    assert listed == []
    with db.transaction(database_url) as conn, conn.cursor() as cur:
        cur.execute("UPDATE sharing_requests SET due_at = now() - interval '1 day' "
                    "WHERE request_id = %s", (req["request_id"],))
    _, listed = run(database_url, "requests", "--agency", me, "--overdue")
    assert [(r["request_id"], r["overdue"]) for r in listed] == [(req["request_id"], True)]


def test_request_without_commitment_is_refused_with_article(database_url: str) -> None:
    out = govbus("request", "--agency", "agency_x", "--resource",
                 "public_security.population_register", "--purpose", "p", "--commitment", " ",
                 env={"DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
                      access.TOKEN_ENV: token(database_url, "agency_x")})
    assert out.returncode == 1 and "Art. 24" in out.stderr and "commitment" in out.stderr
