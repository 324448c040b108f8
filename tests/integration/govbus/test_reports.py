"""The yearly evaluation (Art. 28) and annual report (Art. 26) from a known data set in a real
PostgreSQL, against figures computed by hand below. Year 2025 (365 days, complete); rows of
2024 and 2026 are there to prove the year's edges. Every resource was registered 2024-06-01.

Update periods (shipped catalogue): population_register, legal_entity_register,
marriage_register P1D (365 windows); tax_registration P7D (52 complete windows + the 1-day
window of 31 December, counted only if it has a change); social_insurance_enrolment,
adoption_register P1M = 30 days (12 complete windows + 5 days not counted unless changed).
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from govbus import reports
from govbus.core import db, registry
from govbus.core.catalogue import load_catalogue

EVENTS = [  # day, agency, resource, outcome, rule, events, last_at
    ("2024-12-31", "tax", "tax.tax_registration", "accepted", "", 7, "2024-12-31 10:00"),
    ("2025-01-01", "tax", "tax.tax_registration", "accepted", "", 10, "2025-01-01 10:00"),
    ("2025-01-03", "tax", "tax.tax_registration", "accepted", "", 5, "2025-01-03 10:00"),
    ("2025-01-08", "tax", "tax.tax_registration", "accepted", "", 20, "2025-01-08 10:00"),
    ("2025-01-08", "tax", "tax.tax_registration", "rejected", "identifier.uscc", 10,
     "2025-01-08 11:00"),
    ("2025-12-31", "tax", "tax.tax_registration", "accepted", "", 5, "2025-12-31 10:00"),
    ("2025-03-01", "public_security", "public_security.population_register", "accepted", "",
     100, "2025-03-01 12:00"),
    ("2025-03-02", "public_security", "public_security.population_register", "accepted", "",
     50, "2025-03-02 12:00"),
    ("2025-03-01", "public_security", "public_security.population_register", "rejected",
     "identifier.resident_id", 50, "2025-03-01 12:00"),
    ("2026-01-01", "public_security", "public_security.population_register", "accepted", "",
     9, "2026-01-01 01:00"),
]
DELIVERIES = [  # provider, recipient, channel, delivered_at
    ("public_security", "tax", "exchange", "2025-03-01 12:00"),
    ("public_security", "tax", "exchange", "2025-03-02 12:00"),
    ("public_security", "tax", "exchange", "2025-04-02 12:00"),
    ("public_security", "tax", "exchange", "2024-12-31 12:00"),
    ("market_regulation", "tax", "query", "2025-06-10 12:00"),
    ("public_security", "hrss", "exchange", "2025-03-01 12:00"),
    ("public_security", "hrss", "exchange", "2025-03-02 12:00"),
]
REQUESTS = [  # requester, resource, share class, status, requested, due, decided
    ("tax", "hrss.social_insurance_enrolment", "on_application", "granted",
     "2025-02-03 09:00", "2025-02-10 09:00", "2025-02-04 09:00"),
    ("tax", "civil_affairs.marriage_register", "on_application", "rejected",
     "2025-05-05 09:00", "2025-05-12 09:00", "2025-05-20 09:00"),
    ("market_regulation", "hrss.social_insurance_enrolment", "on_application", "pending",
     "2025-12-29 09:00", "2026-01-06 09:00", None),
    ("hrss", "public_security.population_register", "unconditional", "granted",
     "2025-04-01 09:00", "2025-04-08 09:00", "2025-04-01 09:00"),
]
OBJECTIONS = [  # kind, filed by, against, filed, deadline, status, answered
    ("objection", "tax", "public_security", "2025-06-01 00:00", "2025-06-08 00:00",
     "answered", "2025-06-03 00:00"),
    ("complaint", "hrss", "public_security", "2025-07-01 00:00", "2025-07-15 00:00",
     "open", None),
    ("objection", "hrss", "tax", "2025-07-01 00:00", "2025-07-08 00:00", "withdrawn", None),
]
CASES = [  # owner, other, opened, deadline, status, closed
    ("public_security", "hrss", "2025-03-05 00:00", "2025-03-12 00:00", "resolved",
     "2025-03-06 00:00"),
    ("public_security", "tax", "2025-08-01 00:00", "2025-08-08 00:00", "open", None),
    ("market_regulation", "tax", "2025-09-01 00:00", "2025-09-08 00:00", "closed",
     "2025-09-10 00:00"),
    ("market_regulation", "tax", "2024-11-01 00:00", "2024-11-08 00:00", "closed",
     "2024-11-02 00:00"),
]


def utc(text: str | None) -> str | None:
    return None if text is None else text + "+00"


@pytest.fixture(scope="module")
def known(pg_admin: str) -> Iterator[str]:
    from tests.integration.conftest import scratch_database

    with scratch_database(pg_admin) as dsn:
        db.migrate(dsn)
        registry.sync(dsn, load_catalogue())
        with db.transaction(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass('cases') IS NOT NULL")
            if not cur.fetchone()[0]:
                pytest.fail("migration 0004 (cases, objections) is missing")
            cur.execute("UPDATE schema_versions SET registered_at = '2024-06-01+00'")
            for day, agency, res, outcome, rule, n, last in EVENTS:
                cur.execute("INSERT INTO event_counts VALUES (%s, %s, %s, %s, %s, %s, %s)",
                            (day, agency, res, outcome, rule, n, utc(last)))
            for i, (provider, recipient, channel, at) in enumerate(DELIVERIES):
                cur.execute("""INSERT INTO deliveries (event_id, channel, provider, recipient,
                                   resource_id, grant_id, fields, masked_fields, delivered_at,
                                   prev_hash, row_hash)
                               VALUES (%s, %s, %s, %s, 'r', 1, '{}', '{}', %s, 'x', 'y')""",
                            (f"e{i}", channel, provider, recipient, utc(at)))
            ids = []
            for requester, res, share, status, asked, due, decided in REQUESTS:
                cur.execute("""INSERT INTO sharing_requests (requester, resource_id, purpose,
                                   fields, commitment_ref, share_class, status, requested_at,
                                   due_at, decided_at)
                               VALUES (%s, %s, 'p', '{}', 'SC', %s, %s, %s, %s, %s)
                               RETURNING request_id""",
                            (requester, res, share, status, utc(asked), utc(due), utc(decided)))
                ids.append(cur.fetchone()[0])
            cur.execute("""INSERT INTO grants (request_id, recipient, resource_id, fields,
                               valid_from) VALUES (%s, 'tax', 'hrss.social_insurance_enrolment',
                               '{}', '2025-02-04+00')""", (ids[0],))
            cur.execute("""INSERT INTO grants (request_id, recipient, resource_id, fields,
                               valid_from, revoked_at) VALUES (%s, 'hrss',
                               'public_security.population_register', '{}', '2025-04-01+00',
                               '2025-10-01+00')""", (ids[3],))
            cur.execute("""INSERT INTO filings (request_id, requester, provider, resource_id,
                               purpose, fields, requested_at, decision, decided_by, decided_at)
                           VALUES (%s, 'hrss', 'public_security', 'x', 'p', '{}',
                               '2025-04-01+00', 'revoked', 'public_security', '2025-10-01+00')
                        """, (ids[3],))
            for kind, by, against, filed, deadline, status, answered in OBJECTIONS:
                cur.execute("""INSERT INTO objections (kind, filed_by, against_agency, reason,
                                   filed_at, deadline, status, answered_at, handler)
                               VALUES (%s, %s, %s, 'r', %s, %s, %s, %s, 'information_center')
                            """, (kind, by, against, utc(filed), utc(deadline), status,
                                  utc(answered)))
            for i, (owner, other, opened, deadline, status, closed) in enumerate(CASES):
                cur.execute("""INSERT INTO cases (case_key, entity_key, attribute, owner_agency,
                                   status, values, opened_at, deadline, closed_at, other_agency)
                               VALUES (%s, 'person:x', 'person.name', %s, %s, '[]', %s, %s, %s,
                                   %s)""",
                            (f"k{i}", owner, status, utc(opened), utc(deadline), utc(closed),
                             other))
        yield dsn


def resp(count: int, answered: int, late: int, hours: float | None) -> dict[str, Any]:
    return {"count": count, "answered": answered, "late": late, "median_hours": hours,
            "mean_hours": hours}


NONE = resp(0, 0, 0, None)


def agency(name: str, quantity: tuple[int, ...], quality: tuple[Any, ...],
           timeliness: tuple[Any, ...], requests: dict[str, Any], objections: dict[str, Any],
           cases: dict[str, Any], on_time: float | None) -> dict[str, Any]:
    keys = ("resources", "events", "accepted", "deliveries_out", "deliveries_in")
    windows, hit, stale = timeliness
    return {"agency": name, "quantity": dict(zip(keys, quantity, strict=True)),
            "quality": dict(zip(("rejected", "rejection_rate", "conflicts"), quality,
                                strict=True)),
            "timeliness": {"windows": windows, "on_time": hit,
                           "rate": round(hit / windows, 4), "stale_resources": len(stale),
                           "stale": stale},
            "responsiveness": {"requests": requests, "objections": objections, "cases": cases,
                               "on_time_rate": on_time}}


EXPECTED = [
    # civil_affairs: marriage (365 windows) + adoption (12); one request answered 15 days
    # after filing, 8 days late
    agency("civil_affairs", (2, 0, 0, 0, 0), (0, None, 0),
           (365 + 12, 0, ["civil_affairs.adoption_register", "civil_affairs.marriage_register"]),
           resp(1, 0 + 1, 1, 360.0), NONE, NONE, 0.0),
    # hrss: 12 windows; two requests: answered in 24 h, pending but not yet due; one conflict
    agency("hrss", (1, 0, 0, 0, 2), (0, None, 1),
           (12, 0, ["hrss.social_insurance_enrolment"]),
           {"count": 2, "answered": 1, "late": 0, "median_hours": 24.0, "mean_hours": 24.0},
           NONE, NONE, 1.0),
    # market_regulation: 1 delivery out (query); its 2025 case closed 216 h later, 2 days late
    agency("market_regulation", (1, 0, 0, 1, 0), (0, None, 0),
           (365, 0, ["market_regulation.legal_entity_register"]),
           NONE, NONE, resp(1, 1, 1, 216.0), 0.0),
    # public_security: 150 accepted + 50 rejected = 200, 25 %; 5 deliveries in 2025;
    # 2 of 365 days changed, stale since 2 March; objection answered in 48 h, complaint
    # unanswered past its deadline; case closed in 24 h, case open past its deadline
    agency("public_security", (1, 200, 150, 5, 0), (50, 0.25, 0),
           (365, 2, ["public_security.population_register"]),
           NONE, resp(2, 1, 1, 48.0), resp(2, 1, 1, 24.0), 0.5),
    # tax: 40 accepted + 10 rejected; windows 0 (1 and 3 Jan), 1 (8 Jan), 52 (31 Dec) = 3 of
    # 53; 4 deliveries in; two conflicts attributed (2025 cases where its value differs)
    agency("tax", (1, 50, 40, 0, 4), (10, 0.2, 2), (53, 3, []), NONE, NONE, NONE, None),
]


def test_evaluation_matches_hand_computed_figures(known: str) -> None:
    report = reports.evaluation(known, 2025)
    assert report["from"] == "2025-01-01T00:00:00+00:00"
    assert report["to"] == "2026-01-01T00:00:00+00:00"
    assert report["notes"] == []
    assert report["agencies"] == EXPECTED


def test_annual_matches_hand_computed_figures(known: str) -> None:
    report = reports.annual(known, 2025)
    assert report["catalogue"] == {
        "resources": 6, "providers": 5,
        "by_database_class": {"departmental": 3, "foundational": 2, "thematic": 1},
        "by_share_class": {"not_shared": 1, "on_application": 3, "unconditional": 2}}
    months = [0] * 12
    months[0], months[2], months[11] = 10 + 5 + 20, 150, 5
    assert report["events"] == {"accepted": 190, "rejected": 60, "rejection_rate": 0.24,
                                "accepted_by_month": months}
    by_month = [0] * 12
    by_month[2], by_month[3], by_month[5] = 4, 1, 1
    assert report["deliveries"] == {"total": 6, "by_channel": {"exchange": 5, "query": 1},
                                    "pairs": 3, "by_month": by_month}
    assert report["requests"] == {"filed": 4, "granted": 2, "rejected": 1, "refused": 0,
                                  "pending": 1, "revoked": 1, "grants_in_force_at_end": 1}
    assert report["cases"] == {"opened": 3, "closed": 2, "open_at_end": 1}
    assert report["objections"] == {"objections": 1, "complaints": 1, "answered": 1}
    assert report["stale_at_end"] == [
        "civil_affairs.adoption_register", "civil_affairs.marriage_register",
        "hrss.social_insurance_enrolment", "market_regulation.legal_entity_register",
        "public_security.population_register"]
    assert report["delivery_log_head"] == {"seq": 0, "row_hash": "0" * 64}


def govbus(*args: str, dsn: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    return subprocess.run([sys.executable, "-m", "govbus.cli", *args], text=True,
                          capture_output=True, timeout=120, env=env | {"DATABASE_URL": dsn})


def test_cli_table_json_csv_and_chart(known: str, tmp_path: Path) -> None:
    out = govbus("report", "evaluation", "--year", "2025", "--json", "--csv",
                 str(tmp_path / "e.csv"), "--chart", str(tmp_path / "e.html"), dsn=known)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["agencies"] == EXPECTED
    rows = list(csv.DictReader(io.StringIO((tmp_path / "e.csv").read_text())))
    assert [(r["agency"], r["events"], r["rejection_rate"], r["on_time_windows"],
             r["cases_late"]) for r in rows] == [
        ("civil_affairs", "0", "", "0", "0"), ("hrss", "0", "", "0", "0"),
        ("market_regulation", "0", "", "0", "1"), ("public_security", "200", "0.25", "2", "1"),
        ("tax", "50", "0.2", "3", "0")]
    page = (tmp_path / "e.html").read_text()
    assert page.count("<svg") == 4 and "<script" not in page and "<link" not in page
    assert page.replace("http://www.w3.org/2000/svg", "").count("http") == 0
    assert "public_security: 75.0%" in page  # quality: 1 - 25 % rejected

    table = govbus("report", "evaluation", "--year", "2025", dsn=known)
    assert table.returncode == 0, table.stderr
    line = next(x for x in table.stdout.splitlines() if x.startswith("public_security"))
    assert "200" in line and "25.0%" in line and "2/365" in line and "50.0%" in line

    annual = govbus("report", "annual", "--year", "2025", "--chart", str(tmp_path / "a.html"),
                    dsn=known)
    assert annual.returncode == 0, annual.stderr
    assert "190 accepted, 60 rejected (24.0%)" in annual.stdout
    assert (tmp_path / "a.html").read_text().count("<svg") == 2

    future = govbus("report", "evaluation", "--year", "2099", dsn=known)
    assert future.returncode == 1 and "--year 2099" in future.stderr
    assert "has not begun" in future.stderr
