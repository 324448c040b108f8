"""``govbus cases``, ``objection`` and ``complaint`` on real PostgreSQL (Art. 8, 19, 20, 29);
the cases come from the real pipeline (broker, gate, feed, reconciler, sink)."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from govbus.core import access, db, sharing_store
from govbus.core.catalogue import Catalogue
from govbus.core.config import Settings
from govbus.producers.publisher import Change
from govbus.stream_apps.feed import CASES_TOPIC
from tests.integration.govbus.test_cli import govbus
from tests.integration.govbus.test_sharing_cli import token
from tests.integration.helpers import TopicReader, commitment, wait_until
from tests.integration.reconcile_pipeline import MR, TAX, Pipeline, company, publish, tax_row

T0 = 1_790_000_000_000
POP = "public_security.population_register"


def run(database_url: str, *args: str, json_out: bool = True,
        token_of: str | None = None) -> tuple[int, Any, str]:
    """``govbus ARGS``; a command acting ``--as`` an agency presents that agency's token
    (Art. 24), or ``token_of``'s when given."""
    env = {"DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    actor = token_of or (args[args.index("--as") + 1] if "--as" in args else None)
    if actor:
        env[access.TOKEN_ENV] = token(database_url, actor)
    out = govbus(*args, *(["--json"] if json_out else []), env=env)
    data = json.loads(out.stdout) if json_out and out.returncode == 0 else out.stdout
    return out.returncode, data, out.stderr


@pytest.fixture
def pipeline(settings: Settings, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(settings, tmp_path).start()
    yield p
    p.stop()


def test_owner_resolves_a_case_and_the_reconciler_never_reopens_it(
        pipeline: Pipeline, settings: Settings) -> None:
    dsn = settings.database_url
    c = company(random.Random(), rep="李强")
    entity = f"company:{c['uscc']}"
    reader = TopicReader(settings, [CASES_TOPIC])
    try:
        publish(settings, [(MR, "legal_entity_register", Change("c", c, occurred_ms=T0)),
                           (TAX, "tax_registration", Change("c", tax_row(
                               c, legal_representative="李刚"), occurred_ms=T0 + 1))])
        wait_until(lambda: pipeline.cases([entity]), 90, "the case")
        code, rows, _ = run(dsn, "cases", "list", "--entity", entity)
        assert code == 0 and [(r["status"], r["owner_agency"], r["overdue"]) for r in rows] == [
            ("open", MR, False)]
        case_id = str(rows[0]["id"])

        code, _, err = run(dsn, "cases", "resolve", case_id, "--as", TAX, "--resolution",
                           "corrected", "--note", "we fixed it")
        assert code == 1 and f"owned by {MR}" in err and "Art. 8" in err
        # tax's credential cannot act as the owner (Art. 24)
        code, _, err = run(dsn, "cases", "resolve", case_id, "--as", MR, "--resolution",
                           "corrected", "--note", "pretending", token_of=TAX)
        assert code == 1 and f"not {MR}'s (Art. 24)" in err
        code, _, err = run(dsn, "cases", "resolve", case_id, "--as", MR, "--resolution",
                           "fixed", "--note", "x")
        assert code == 1 and "corrected, confirmed, dismissed" in err
        code, out, _ = run(dsn, "cases", "resolve", case_id, "--as", MR, "--resolution",
                           "confirmed", "--note", "register checked: 李强 since 2019")
        assert code == 0 and (out["status"], out["resolution"], out["resolved_by"]) == (
            "resolved", "confirmed", MR)
        code, _, err = run(dsn, "cases", "resolve", case_id, "--as", MR, "--resolution",
                           "dismissed", "--note", "again")
        assert code == 1 and "resolved, not open" in err

        # tax corrects its copy: the reconciler closes the case on the topic; the sink keeps
        # the owner's resolution
        publish(settings, [(TAX, "tax_registration", Change("u", tax_row(c),
                                                            occurred_ms=T0 + 2))])
        wait_until(lambda: any(json.loads(m.value())["status"] == "closed"
                               for m in reader.poll()), 90, "the reconciler's close")
        sink = pipeline.workers[1]
        wait_until(lambda: sink.stats["read"] >= len(reader.poll()), 60,
                   "the sink to read every case message")
        code, rows, _ = run(dsn, "cases", "list", "--entity", entity)
        assert [(r["status"], r["resolution"]) for r in rows] == [("resolved", "confirmed")]
    finally:
        reader.close()


def test_overdue_cases_stand_out(pipeline: Pipeline, settings: Settings) -> None:
    dsn = settings.database_url
    c = company(random.Random(), rep="王芳")
    entity = f"company:{c['uscc']}"
    publish(settings, [(MR, "legal_entity_register", Change("c", c, occurred_ms=T0)),
                       (TAX, "tax_registration", Change("c", tax_row(
                           c, registered_address="渝水区胜利南路9号"), occurred_ms=T0 + 1))])
    wait_until(lambda: pipeline.cases([entity]), 90, "the case")
    code, rows, _ = run(dsn, "cases", "list", "--entity", entity, "--overdue")
    assert code == 0 and rows == []
    with db.transaction(dsn) as conn, conn.cursor() as cur:  # time passes
        cur.execute("UPDATE cases SET deadline = now() - interval '1 day' "
                    "WHERE entity_key = %s", (entity,))
    code, rows, _ = run(dsn, "cases", "list", "--entity", entity, "--overdue")
    assert [(r["attribute"], r["overdue"]) for r in rows] == [
        ("company.registered_address", True)]
    code, text, _ = run(dsn, "cases", "list", "--entity", entity, json_out=False)
    assert code == 0 and "OVERDUE" in text and "渝水区胜利南路9号" in text


def test_objection_filed_answered_with_history(database_url: str, catalogue: Catalogue
                                               ) -> None:
    me = f"agency_{uuid.uuid4().hex[:8]}"
    sharing_store.file_request(database_url, catalogue.resources[POP], me, "benefit checks",
                               ["name", "residence_address"], commitment(database_url, me, POP))
    code, _, err = run(database_url, "objection", "file", "--as", me, "--against", "tax",
                       "--resource", "tax.tax_registration", "--reason", "wrong name")
    assert code == 1 and "has not received tax.tax_registration" in err and "Art. 19" in err
    code, _, err = run(database_url, "objection", "file", "--as", me, "--against", "tax",
                       "--resource", POP, "--reason", "x")
    assert code == 1 and "provided by public_security, not tax" in err
    code, _, err = run(database_url, "objection", "file", "--as", me, "--against",
                       "public_security", "--resource", POP, "--event-id", "no-such-event",
                       "--reason", "x")
    assert code == 1 and "has not received event no-such-event" in err
    code, _, err = run(database_url, "objection", "file", "--as", me, "--against",
                       "public_security", "--resource", POP, "--reason", " ")
    assert code == 1 and "--reason is empty" in err

    code, obj, _ = run(database_url, "objection", "file", "--as", me, "--against",
                       "public_security", "--resource", POP, "--key", "360502198001010015",
                       "--reason", "address differs from the resident's own statement")
    assert code == 0 and (obj["kind"], obj["status"], obj["handler"]) == (
        "objection", "open", "information_center")
    assert obj["deadline"] > obj["filed_at"]
    oid = str(obj["id"])
    code, _, err = run(database_url, "objection", "answer", oid, "--as", "hrss",
                       "--answer", "n/a")
    assert code == 1 and "public_security or information_center" in err and "Art. 19" in err
    code, out, _ = run(database_url, "objection", "answer", oid, "--as", "public_security",
                       "--answer", "verified on site; register corrected")
    assert code == 0 and out["status"] == "answered" and out["answered_by"] == "public_security"
    assert [h["action"] for h in out["history"]] == ["filed", "answered"]
    code, _, err = run(database_url, "objection", "answer", oid, "--as", "public_security",
                       "--answer", "again")
    assert code == 1 and "already answered" in err
    code, listed, _ = run(database_url, "objection", "list", "--agency", me)
    assert [o["id"] for o in listed] == [obj["id"]]


def test_complaint_for_the_municipal_office_and_overdue(database_url: str) -> None:
    who = f"citizen_{uuid.uuid4().hex[:8]}"
    code, comp, _ = run(database_url, "complaint", "file", "--as", who, "--against", "tax",
                        "--reason", "charged a fee for shared data (Art. 4, 31)")
    assert code == 0 and (comp["kind"], comp["handler"]) == ("complaint", "municipal_office")
    code, _, err = run(database_url, "complaint", "answer", str(comp["id"]), "--as", "tax",
                       "--answer", "we did not")
    assert code == 1 and "municipal_office" in err and "Art. 29" in err
    with db.transaction(database_url) as conn, conn.cursor() as cur:  # time passes
        cur.execute("UPDATE objections SET deadline = now() - interval '1 day' WHERE id = %s",
                    (comp["id"],))
    code, text, _ = run(database_url, "complaint", "list", "--overdue", json_out=False)
    assert code == 0 and f"complaint {comp['id']}" in text and "OVERDUE" in text
    code, out, _ = run(database_url, "complaint", "answer", str(comp["id"]), "--as",
                       "municipal_office", "--answer", "fee refunded; tax bureau warned")
    assert code == 0 and out["status"] == "answered" and out["overdue"] is False
    code, listed, _ = run(database_url, "complaint", "list", "--agency", who)
    assert [(o["id"], o["status"], len(o["history"])) for o in listed] == [
        (comp["id"], "answered", 2)]
