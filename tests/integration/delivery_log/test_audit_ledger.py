"""The audit ledger on a real PostgreSQL (Art. 13, 18, 24, 31; docs/evidence.md): a request
filed, approved and revoked is recorded with its actors; a grant's masking changed and a filing
deleted by raw SQL are in the ledger (the trigger is honest) and reported by verify as changes
the bus never makes; tampering with the ledger after sealing is detected, and what cannot be
without a checkpoint is shown; `govbus audit` is the information center's only."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from govbus.core import access, commitments_store, db, registry, sharing_store, signatures
from govbus.core.catalogue import Catalogue
from govbus.delivery_log import audit
from govbus.delivery_log.chain import GENESIS
from govbus.delivery_log.checkpoints import AUDIT, ChainHead, make
from tests.integration.govbus.test_access import cli
from tests.integration.helpers import commitment

RESOURCE = "tax.tax_registration"  # on application: the provider decides (Art. 18)


@pytest.fixture
def dsn(empty_database: str, catalogue: Catalogue) -> Iterator[str]:
    db.migrate(empty_database)
    registry.sync(empty_database, catalogue)
    yield empty_database


def sql(dsn: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    conn = db.connect(dsn, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def decided(dsn: str, catalogue: Catalogue) -> dict[str, Any]:
    """A request filed by hrss, approved by tax, revoked by the information center."""
    req = sharing_store.file_request(dsn, catalogue.resources[RESOURCE], "hrss",
                                     "social-insurance checks", None,
                                     commitment(dsn, "hrss", [RESOURCE]))
    decision = sharing_store.decide(dsn, req["request_id"], "tax", True, "within duties")
    sharing_store.revoke(dsn, decision["grant_id"], "information_center", "duty ended")
    return decision


def entries(dsn: str, table: str | None = None) -> list[dict[str, Any]]:
    return list(reversed(audit.list_entries(dsn, table, limit=1000)))


def test_a_request_filed_approved_and_revoked_is_recorded_with_its_actors(
        dsn: str, catalogue: Catalogue) -> None:
    baseline = audit.seal(dsn)
    assert baseline == 2 * len(catalogue.resources)  # the catalogue's entries and versions
    grant_id = decided(dsn, catalogue)["grant_id"]
    assert audit.seal(dsn) == 7
    assert audit.seal(dsn) == 0  # nothing left: the cheap case
    got = [(e["table"], e["op"], e["actor"]) for e in entries(dsn)[baseline:]]
    assert got == [("commitments", "INSERT", "hrss"),  # Art. 24: the registered commitment
                   ("sharing_requests", "INSERT", "hrss"),
                   ("sharing_requests", "UPDATE", "tax"), ("grants", "INSERT", "tax"),
                   ("filings", "INSERT", "tax"),
                   ("grants", "UPDATE", "information_center"),
                   ("filings", "INSERT", "information_center")]
    grants = entries(dsn, "grants")
    assert [e["op"] for e in grants] == ["INSERT", "UPDATE"]
    assert grants[1]["row_key"] == str(grant_id)
    assert grants[1]["before"]["revoked_at"] is None
    assert grants[1]["after"]["revoke_reason"] == "duty ended"
    filings = entries(dsn, "filings")
    assert [e["after"]["decision"] for e in filings] == ["granted", "revoked"]  # Art. 18
    assert all(e["seq"] is not None and len(e["row_hash"]) == 64 for e in entries(dsn))
    report = audit.verify(dsn)
    assert report.ok, report.lines()
    assert report.rows == report.head_seq == baseline + 7 and not report.warnings
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        assert audit.head(cur) == (report.head_seq, report.head_hash)


def test_a_grant_masking_changed_by_raw_sql_is_in_the_ledger_and_reported(
        dsn: str, catalogue: Catalogue) -> None:
    grant_id = decided(dsn, catalogue)["grant_id"]
    sql(dsn, "UPDATE grants SET masked_fields = '{}', fields = fields || '{legal_rep_id}' "
             "WHERE grant_id = %s", (grant_id,))
    audit.seal(dsn)
    change = entries(dsn, "grants")[-1]
    assert change["op"] == "UPDATE" and change["actor"] is None  # nobody named themselves
    assert change["before"]["masked_fields"] != [] and change["after"]["masked_fields"] == []
    report = audit.verify(dsn)
    assert not report.ok and set(report.counts) == {"outside_rules"}  # the chain is intact
    problem = report.problems[0]
    assert problem.seq == change["seq"]
    assert "fields, masked_fields" in problem.message and f"grants {grant_id}" in problem.message


def test_a_deleted_filing_appears_as_a_delete_entry(dsn: str, catalogue: Catalogue) -> None:
    decided(dsn, catalogue)
    filing_id = sql(dsn, "SELECT min(filing_id) FROM filings")[0][0]
    sql(dsn, "DELETE FROM filings WHERE filing_id = %s", (filing_id,))
    audit.seal(dsn)
    gone = entries(dsn, "filings")[-1]
    assert (gone["op"], gone["row_key"], gone["after"]) == ("DELETE", str(filing_id), None)
    assert gone["before"]["decision"] == "granted"
    report = audit.verify(dsn)
    assert report.counts == {"outside_rules": 1}
    assert report.problems[0].seq == gone["seq"]
    assert f"DELETE of filings {filing_id}" in report.problems[0].message


def test_tampering_with_sealed_rows_is_detected(dsn: str, catalogue: Catalogue) -> None:
    decided(dsn, catalogue)
    audit.seal(dsn)
    (seq,), = sql(dsn, "SELECT seq FROM audit_ledger WHERE table_name = 'grants' "
                       "AND op = 'INSERT'")
    sql(dsn, "UPDATE audit_ledger SET after = jsonb_set(after, '{masked_fields}', '[]') "
             "WHERE seq = %s", (seq,))
    report = audit.verify(dsn)
    assert report.counts["altered"] == 1 and report.problems[0].seq == seq
    sql(dsn, "DELETE FROM audit_ledger WHERE seq = %s", (seq - 1,))
    report = audit.verify(dsn)
    assert report.counts["missing"] == 1
    assert any(p.kind == "missing" and p.seq == seq - 1 for p in report.problems)


def test_deleting_the_newest_rows(dsn: str, catalogue: Catalogue) -> None:
    """With the head left as it is, the deletion shows as missing seqs. Moving the head back
    hides it from the chain, but not from the tables: the revoked grant and its filing are no
    longer what the ledger last recorded. Deleting those rows too (with the triggers
    bypassed) leaves a shorter, consistent ledger: only a checkpoint of the head shows that."""
    decided(dsn, catalogue)
    audit.seal(dsn)
    (last, top), = sql(dsn, "SELECT seq, row_hash FROM audit_ledger_head")
    held = make(1, 0, {AUDIT: ChainHead(last, top)}, GENESIS, signatures.generate())
    assert audit.verify(dsn, checkpoints=[held]).ok
    sql(dsn, "DELETE FROM audit_ledger WHERE seq > %s", (last - 2,))  # the revocation
    report = audit.verify(dsn)
    assert report.counts["missing"] == 1 and report.problems[0].seq == last - 1
    (prev,), = sql(dsn, "SELECT row_hash FROM audit_ledger WHERE seq = %s", (last - 2,))
    sql(dsn, "UPDATE audit_ledger_head SET seq = %s, row_hash = %s", (last - 2, prev))
    report = audit.verify(dsn)
    assert set(report.counts) == {"unrecorded"} and report.counts["unrecorded"] == 2
    assert {p.message.split(":")[0] for p in report.problems} == \
        {f"grants {sql(dsn, 'SELECT grant_id FROM grants')[0][0]}",
         f"filings {sql(dsn, 'SELECT max(filing_id) FROM filings')[0][0]}"}
    conn = db.connect(dsn)
    with conn, conn.cursor() as cur:  # as the owner: no trigger fires
        cur.execute("SET LOCAL session_replication_role = replica")
        cur.execute("UPDATE grants SET revoked_at = NULL, revoked_by = NULL, "
                    "revoke_reason = NULL, changed_at = valid_from")
        cur.execute("DELETE FROM filings WHERE decision = 'revoked'")
    conn.close()
    report = audit.verify(dsn)
    assert report.ok, report.lines()  # the limit: detection needs the head anchored outside
    report = audit.verify(dsn, checkpoints=[held])  # an agency's copy of a checkpoint
    assert report.counts == {"truncated": 1} and report.problems[0].seq == last


def test_writes_that_bypass_the_trigger_are_unrecorded_and_a_disabled_trigger_unaudited(
        dsn: str, catalogue: Catalogue) -> None:
    grant_id = decided(dsn, catalogue)["grant_id"]
    conn = db.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("SET LOCAL session_replication_role = replica")
        cur.execute("UPDATE grants SET masked_fields = '{}' WHERE grant_id = %s", (grant_id,))
        cur.execute("DELETE FROM filings WHERE decision = 'granted'")
    conn.close()
    sql(dsn, "ALTER TABLE objections DISABLE TRIGGER govbus_audit")
    audit.seal(dsn)
    report = audit.verify(dsn)
    assert report.counts == {"unrecorded": 2, "unaudited": 1}, report.lines()
    text = "\n".join(report.lines())
    assert f"grants {grant_id}: it differs from the ledger's last record of it" in text
    assert "gone from the table" in text and "objections has its audit trigger disabled" in text
    sql(dsn, "ALTER TABLE objections ENABLE TRIGGER govbus_audit")
    sql(dsn, "DROP TRIGGER govbus_audit ON cases")
    assert "cases has no audit trigger" in "\n".join(audit.verify(dsn).lines())


def test_credentials_are_recorded_without_their_secrets(dsn: str) -> None:
    token = access.issue(dsn, "tax", access.INFORMATION_CENTER)
    access.authenticate(dsn, "tax", token)  # a last use alone is not recorded
    access.issue(dsn, "tax", access.INFORMATION_CENTER)
    access.revoke(dsn, "tax")
    audit.seal(dsn)
    got = entries(dsn, "agency_credentials")
    assert [(e["op"], e["actor"]) for e in got] == [
        ("INSERT", "information_center"), ("UPDATE", "information_center"), ("DELETE", None)]
    first = got[0]["after"]
    assert first["salt"].startswith("sha256:") and first["token_hash"].startswith("sha256:")
    assert got[1]["after"]["token_hash"] != first["token_hash"]  # the rotation shows
    raw = "\n".join(json.dumps(e) for e in got)
    assert "\\\\x" not in raw and token not in raw
    assert audit.verify(dsn).ok


def test_rows_are_sealed_in_the_order_they_become_visible(dsn: str) -> None:
    """A transaction that wrote first but commits last is sealed after the one that committed
    before it; a rolled-back write leaves a gap in ids, none in seqs."""
    audit.seal(dsn)
    slow = db.connect(dsn)
    with slow.cursor() as cur:
        cur.execute("UPDATE catalogue_resources SET title = 'slow' WHERE resource_id = %s",
                    (RESOURCE,))
    sql(dsn, "UPDATE catalogue_resources SET title = 'fast' WHERE resource_id = "
             "'hrss.social_insurance_enrolment'")
    rolled = db.connect(dsn)
    with rolled.cursor() as cur:
        cur.execute("UPDATE catalogue_resources SET title = 'never' WHERE resource_id = %s",
                    ("civil_affairs.marriage_register",))
    rolled.rollback()
    rolled.close()
    assert audit.seal(dsn) == 1
    slow.commit()
    slow.close()
    assert audit.seal(dsn) == 1
    newest = entries(dsn)[-2:]
    assert [e["after"]["title"] for e in newest] == ["fast", "slow"]
    assert newest[0]["id"] > newest[1]["id"] and newest[1]["seq"] == newest[0]["seq"] + 1
    assert audit.verify(dsn).ok


def test_concurrent_sealers_and_writers_keep_one_chain(dsn: str, catalogue: Catalogue) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []

    def write(agency: str) -> None:
        try:
            for _ in range(8):
                access.issue(dsn, agency, access.INFORMATION_CENTER)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def seal_often(conn: Any) -> None:
        try:
            while not stop.is_set():
                audit.seal(conn)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    conns = [db.connect(dsn), db.connect(dsn, autocommit=True)]
    sealers = [threading.Thread(target=seal_often, args=(c,)) for c in conns]
    writers = [threading.Thread(target=write, args=(a,))
               for a in ("tax", "hrss", "public_security")]
    for t in sealers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in sealers:
        t.join()
    assert conns[1].autocommit and not errors, errors
    for c in conns:
        c.close()
    audit.seal(dsn)
    report = audit.verify(dsn)
    assert report.ok and report.unsealed == 0, report.lines()
    assert report.rows == 2 * len(catalogue.resources) + 24  # the baseline, then every issue


def test_rows_left_unsealed_are_a_warning(dsn: str) -> None:
    audit.seal(dsn)
    sql(dsn, "UPDATE catalogue_resources SET title = 'x' WHERE resource_id = %s", (RESOURCE,))
    sql(dsn, "UPDATE audit_ledger SET at = at - interval '5 minutes' WHERE seq IS NULL")
    report = audit.verify(dsn)
    assert report.ok and report.unsealed == 1
    assert report.warnings and "not sealed" in report.warnings[0]
    assert audit.seal(dsn) == 1 and not audit.verify(dsn).warnings


def test_the_cli_is_the_information_centers(dsn: str, catalogue: Catalogue,
                                            tmp_path: Path) -> None:
    decided(dsn, catalogue)
    tax = access.issue(dsn, "tax", access.INFORMATION_CENTER)
    for args in (("audit", "verify"), ("audit", "list")):
        code, _, err = cli(dsn, *args)
        assert code == 1 and "information_center" in err and "Art. 24" in err, err
        code, _, err = cli(dsn, *args, token=tax)
        assert code == 1 and "not information_center's" in err, err
    center = access.issue(dsn, access.INFORMATION_CENTER, access.INFORMATION_CENTER)
    code, out, err = cli(dsn, "audit", "verify", token=center)
    assert code == 0 and "intact" in out, (out, err)
    code, out, err = cli(dsn, "audit", "verify", "--json", token=center)
    assert code == 0 and json.loads(out)["ok"] is True and json.loads(out)["checkpoints"] == 0
    key = signatures.generate()
    signatures.write_pair(key, tmp_path / "center.key", tmp_path / "center.pub")
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        held = make(1, 0, {AUDIT: ChainHead(*audit.head(cur))}, GENESIS, key)
    (tmp_path / "kept.jsonl").write_text(json.dumps(held.as_dict()) + "\n")
    code, out, err = cli(dsn, "audit", "verify", "--checkpoints", str(tmp_path / "kept.jsonl"),
                         "--checkpoint-key", str(tmp_path / "center.pub"), token=center)
    assert code == 0 and "checked against 1 checkpoint(s) from" in out, (out, err)
    code, out, err = cli(dsn, "audit", "list", "--table", "filings", "--json", token=center)
    assert code == 0 and [e["after"]["decision"] for e in json.loads(out)] == ["revoked",
                                                                               "granted"]
    code, out, err = cli(dsn, "audit", "list", "--since", "2000-01-01", "--limit", "2",
                         token=center)
    assert code == 0 and len(out.splitlines()) == 2 and "agency_credentials" in out, out
    code, _, err = cli(dsn, "audit", "list", "--table", "deliveries", token=center)
    assert code == 1 and "not audited" in err
    sql(dsn, "DELETE FROM filings WHERE decision = 'revoked'")
    (seq,), = sql(dsn, "SELECT max(seq) FROM audit_ledger")
    sql(dsn, "UPDATE audit_ledger SET actor = 'tax' WHERE seq = %s", (seq,))
    code, out, err = cli(dsn, "audit", "verify", token=center)
    assert code == 1 and f"seq {seq}: altered" in out, (out, err)
    assert "outside_rules: DELETE of filings" in out


def test_seal_and_head_on_a_missing_head_row(dsn: str) -> None:
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        assert audit.head(cur) == (0, GENESIS)  # nothing sealed yet
    sql(dsn, "DELETE FROM audit_ledger_head")
    with pytest.raises(Exception, match="audit_ledger_head has no row"):
        audit.seal(dsn)
    report = audit.verify(dsn)
    assert "head_mismatch" in report.counts
    with pytest.raises(psycopg2.Error):
        sql(dsn, "INSERT INTO audit_ledger_head VALUES (2, 0, 'x')")


def test_a_commitment_registered_and_withdrawn_is_recorded_and_its_validity_never_changes(
        dsn: str) -> None:
    """Art. 24, 25: commitments are audited; only a withdrawal changes one."""
    number = commitment(dsn, "hrss", [RESOURCE])
    commitments_store.withdraw(dsn, number, "information_center", "audit found")
    audit.seal(dsn)
    got = [(e["op"], e["actor"], e["row_key"]) for e in entries(dsn, "commitments")]
    assert got == [("INSERT", "hrss", number), ("UPDATE", "information_center", number)]
    assert audit.verify(dsn).ok
    sql(dsn, "UPDATE commitments SET valid_until = valid_until + interval '10 years' "
             "WHERE number = %s", (number,))
    audit.seal(dsn)
    report = audit.verify(dsn)
    assert set(report.counts) == {"outside_rules"}
    assert f"commitments {number} changed valid_until" in report.problems[0].message
