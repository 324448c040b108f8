"""Reports through the real service: the Art. 18 filings (the office and the center read all,
an agency the ones it is party to), the evaluation (Art. 28; an agency its own row) and the
city's annual report (Art. 26; the office and the center only), as JSON and CSV; and ``govbus
report`` through the service with no database address."""

from __future__ import annotations

import csv
import datetime as dt
import io

from tests.integration.api.conftest import Service
from tests.integration.api.test_cases_api import (
    CENTER,
    OFFICE,
    POP,
    agency,
    cli,
    open_case,
    refused,
)
from tests.integration.helpers import commitment

YEAR = dt.datetime.now(dt.UTC).year


def granted(service: Service, me: str) -> int:
    """``me`` applies for the unconditional population register: granted and filed at once."""
    number = commitment(service.database_url, me, POP)
    with service.client(me) as http:
        r = http.post("/v1/requests", json={"resource": POP, "purpose": "benefit checks",
                                            "commitment": number})
    assert r.status_code == 201 and r.json()["status"] == "granted", r.text
    return int(r.json()["request_id"])


def test_filings_for_the_office_and_the_parties(service: Service) -> None:
    me, stranger = agency(), agency()
    request_id = granted(service, me)
    with service.client(me) as mine, service.client(stranger) as nosy, \
            service.client(OFFICE) as office, service.client(CENTER) as ic, \
            service.client("public_security") as provider:
        rows = mine.get("/v1/reports/filings", params={"year": YEAR}).json()
        assert [(r["request_id"], r["decision"]) for r in rows] == [(request_id, "granted")]
        assert request_id in [r["request_id"] for r in provider.get(
            "/v1/reports/filings").json()]
        assert all("public_security" in (r["requester"], r["provider"])
                   for r in provider.get("/v1/reports/filings").json())
        assert nosy.get("/v1/reports/filings").json() == []
        for overseer in (office, ic):
            rows = overseer.get("/v1/reports/filings", params={"year": YEAR}).json()
            assert request_id in [r["request_id"] for r in rows]
            assert len({r["requester"] for r in rows}) > 1 or len(rows) == 1
        assert office.get("/v1/reports/filings", params={"year": YEAR - 1}).json() == [
            r for r in office.get("/v1/reports/filings").json()
            if r["decided_at"].startswith(str(YEAR - 1))]
        r = office.get("/v1/reports/filings", params={"year": YEAR, "format": "csv"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        table = list(csv.DictReader(io.StringIO(r.text)))
        assert str(request_id) in [row["request_id"] for row in table]
        error = refused(office.get("/v1/reports/filings", params={"year": 1999}), 422,
                        "input.invalid")
        assert error["problems"][0]["field"] == "year"
        refused(office.get("/v1/reports/filings", params={"format": "pdf"}), 422,
                "input.invalid")


def test_evaluation_and_annual_report_by_role(service: Service) -> None:
    me = agency()
    open_case(service.database_url, me, agency())  # me owns a case this year: evaluated
    with service.client(me) as mine, service.client(OFFICE) as office, \
            service.client(CENTER) as ic:
        whole = office.get("/v1/reports/evaluation", params={"year": YEAR}).json()
        assert whole["year"] == YEAR and me in [a["agency"] for a in whole["agencies"]]
        assert len(whole["agencies"]) > 1
        own = mine.get("/v1/reports/evaluation", params={"year": YEAR}).json()
        assert [a["agency"] for a in own["agencies"]] == [me]
        assert own["agencies"][0]["responsiveness"]["cases"]["count"] == 1
        r = mine.get("/v1/reports/evaluation", params={"year": YEAR, "format": "csv"})
        table = list(csv.DictReader(io.StringIO(r.text)))
        assert r.status_code == 200 and [row["agency"] for row in table] == [me]
        assert table[0]["cases_count"] == "1"

        annual = ic.get("/v1/reports/annual", params={"year": YEAR}).json()
        assert annual["year"] == YEAR and annual["cases"]["opened"] >= 1
        assert office.get("/v1/reports/annual").json()["year"] == YEAR
        error = refused(mine.get("/v1/reports/annual", params={"year": YEAR}), 403,
                        "access.oversight_only")
        assert error["article"] == "Art. 26"
        r = office.get("/v1/reports/annual", params={"year": 9998})
        assert r.status_code == 422 and "has not begun" in r.json()["error"]["message"]


def test_report_commands_through_the_service(service: Service) -> None:
    me = agency()
    request_id = granted(service, me)
    open_case(service.database_url, me, agency())
    code, rows, err = cli(service, OFFICE, "report", "filings", "--year", str(YEAR))
    assert code == 0 and request_id in [r["request_id"] for r in rows], err
    code, text, err = cli(service, me, "report", "filings", json_out=False)
    assert code == 0 and f"granted  {me}" in text and len(text.strip().splitlines()) == 1, err
    code, report, err = cli(service, me, "report", "evaluation", "--year", str(YEAR))
    assert code == 0 and [a["agency"] for a in report["agencies"]] == [me], err
    code, text, err = cli(service, me, "report", "evaluation", "--csv", "-", json_out=False)
    assert code == 0 and text.splitlines()[0].startswith("year,agency,") and \
        text.splitlines()[1].startswith(f"{YEAR},{me},"), err
    code, _, err = cli(service, me, "report", "annual")
    assert code == 1 and "access.oversight_only" in err and "HTTP 403" in err
    code, annual, err = cli(service, OFFICE, "report", "annual")
    assert code == 0 and annual["year"] == YEAR and "delivery_log_heads" in annual, err
