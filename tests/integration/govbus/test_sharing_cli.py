"""The sharing workflow through ``govbus`` (Art. 15, 18, 24, 25, 31), on real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from pathlib import Path

from govbus.core import access, db
from tests.integration.govbus.test_cli import govbus
from tests.integration.helpers import token  # one per agency and database, kept valid


def run(database_url: str, *args: str, as_: str | None = None) -> tuple[int, dict | list]:
    """``govbus ARGS --json``, presenting ``as_``'s token when given."""
    env = {"DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    if as_:
        env[access.TOKEN_ENV] = token(database_url, as_)
    out = govbus(*args, "--json", env=env)
    return out.returncode, (json.loads(out.stdout) if out.stdout.strip() else {"err": out.stderr})


def sign(database_url: str, me: str, kind: str, resources: str, doc: Path | None = None
         ) -> str:
    """``govbus commitments register`` of ``me``'s commitment (or agreement); its number."""
    number = f"{'SC' if kind == 'security' else 'CA'}-{me}"
    proof = ["--document", str(doc)] if doc else ["--sha256", "ab" * 32]
    code, out = run(database_url, "commitments", "register", "--agency", me, "--number",
                    number, "--kind", kind, "--resources", resources, "--purpose",
                    "benefit and employer checks", "--signed-on", str(dt.date.today()),
                    "--valid-until", str(dt.date.today() + dt.timedelta(days=30)), *proof,
                    as_=me)
    assert code == 0 and out["number"] == number and out["state"] == "in_force", out
    return number


def test_request_decide_revoke_and_every_response_filed(database_url: str,
                                                         tmp_path: Path) -> None:
    me = f"agency_{uuid.uuid4().hex[:8]}"
    (tmp_path / "signed.pdf").write_bytes(b"%PDF signed commitment")
    sc = sign(database_url, me, "security", "public_security.population_register,"
              "tax.tax_registration,hrss.social_insurance_enrolment,"
              "civil_affairs.adoption_register", tmp_path / "signed.pdf")
    ca = sign(database_url, me, "confidentiality", "tax.tax_registration")
    code, free = run(database_url, "request", "--agency", me, "--resource",
                     "public_security.population_register", "--purpose", "benefit checks",
                     "--fields", "name,phone", "--commitment", sc, as_=me)
    assert code == 0 and free["status"] == "granted" and free["masked_fields"] == ["phone"]

    code, pending = run(database_url, "request", "--agency", me, "--resource",
                        "tax.tax_registration", "--purpose", "employer checks",
                        "--commitment", sc, "--confidentiality", ca, as_=me)
    assert code == 0 and pending["status"] == "pending" and pending["due_at"]
    code, err = run(database_url, "approve", str(pending["request_id"]), "--as", "hrss",
                    as_="hrss")
    assert code == 1 and "only the provider tax" in err["err"] and "Art. 18" in err["err"]
    code, ok = run(database_url, "approve", str(pending["request_id"]), "--as", "tax",
                   "--reason", "employer checks are a statutory duty", as_="tax")
    assert code == 0 and ok["status"] == "granted" and ok["masked_fields"] == []

    code, other = run(database_url, "request", "--agency", me, "--resource",
                      "hrss.social_insurance_enrolment", "--purpose", "curiosity",
                      "--commitment", sc, as_=me)
    code, rejected = run(database_url, "reject", str(other["request_id"]), "--as", "hrss",
                         "--reason", "purpose is outside the requester's duties (Art. 24)",
                         as_="hrss")
    assert code == 0 and rejected["status"] == "rejected"

    code, refused = run(database_url, "request", "--agency", me, "--resource",
                        "civil_affairs.adoption_register", "--purpose", "x",
                        "--commitment", sc, as_=me)
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
    assert {(f["commitment_no"], f["confidentiality_no"]) for f in filings
            if f["requester"] == me and f["resource_id"] == "tax.tax_registration"} == \
        {(sc, ca)}  # Art. 18: the filing names what the request rested on
    assert mine == [
        ("public_security.population_register", "granted", "information_center"),
        ("tax.tax_registration", "granted", "tax"),
        ("hrss.social_insurance_enrolment", "rejected", "hrss"),
        ("civil_affairs.adoption_register", "refused", "information_center"),
        ("public_security.population_register", "revoked", "public_security")]


def test_unanswered_request_becomes_overdue(database_url: str) -> None:
    me = f"agency_{uuid.uuid4().hex[:8]}"
    sc = sign(database_url, me, "security", "tax.tax_registration")
    _, req = run(database_url, "request", "--agency", me, "--resource", "tax.tax_registration",
                 "--purpose", "audit", "--commitment", sc, as_=me)
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


def test_commitments_listed_shown_withdrawn_and_the_grants_lapse(database_url: str,
                                                                  tmp_path: Path) -> None:
    """Art. 24: a registered commitment, its document's hash, the grants resting on it; its
    withdrawal (by its agency only, or the information center) ends them; a request under
    another agency's or an unknown commitment is refused with its rule (exit 1)."""
    me, other = (f"agency_{uuid.uuid4().hex[:8]}" for _ in range(2))
    doc = tmp_path / "sc.pdf"
    doc.write_bytes(b"signed: own duties only, no third parties, no commercial use")
    sc = sign(database_url, me, "security", "public_security.*", doc)
    code, shown = run(database_url, "commitments", "show", sc)
    assert code == 0 and shown["document_sha256"] == hashlib.sha256(doc.read_bytes()).hexdigest()
    assert shown["restrictions"] == ["duties", "no-third-party", "no-commercial"]
    code, free = run(database_url, "request", "--agency", me, "--resource",
                     "public_security.population_register", "--purpose", "benefit checks",
                     "--commitment", sc, as_=me)
    assert code == 0 and free["status"] == "granted"
    code, listed = run(database_url, "grants", "--agency", me)
    assert [(g["commitment"], g["state"], g["provision"]) for g in listed] == \
        [(sc, "in_force", "due")]  # Art. 31: nothing delivered yet, the day not reached
    assert listed[0]["provide_by"] > listed[0]["valid_from"]
    code, _ = run(database_url, "commitments", "show", sc)
    assert _["grants"] == [free["grant_id"]]
    code, err = run(database_url, "request", "--agency", other, "--resource",
                    "public_security.population_register", "--purpose", "p",
                    "--commitment", sc, as_=other)
    assert code == 1 and f"is {me}'s security commitment" in err["err"] and \
        "Art. 24" in err["err"]
    code, err = run(database_url, "request", "--agency", other, "--resource",
                    "public_security.population_register", "--purpose", "p",
                    "--commitment", "SC-NOT-REGISTERED", as_=other)
    assert code == 1 and "no security commitment 'SC-NOT-REGISTERED'" in err["err"]
    code, err = run(database_url, "commitments", "withdraw", sc, "--reason", "x", "--as", other,
                    as_=other)
    assert code == 1 and "only it or the information_center" in err["err"]
    code, out = run(database_url, "commitments", "withdraw", sc, "--reason", "duty ended",
                    as_=me)
    assert code == 0 and out["grants_ended"] == [free["grant_id"]]
    code, listed = run(database_url, "commitments", "list", "--agency", me)
    assert [(c["number"], c["state"]) for c in listed] == [(sc, "withdrawn")]
    code, listed = run(database_url, "grants", "--agency", me)
    assert [(g["state"], g["provision"]) for g in listed] == [("lapsed", "ended")]
