"""The service's boundary: who may call, and what bad input gets (never a 500)."""

from __future__ import annotations

import uuid

from tests.integration.api.conftest import Service


def test_health_openapi_and_metrics(service: Service) -> None:
    with service.client() as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        spec = http.get("/openapi.json").json()
        assert "/v1/requests" in spec["paths"] and "/v1/query" in spec["paths"]
        assert http.get("/docs").status_code == 200
        http.get("/v1/grants")
        metrics = http.get("/metrics").text
    assert 'govbus_api_requests_total{method="GET",route="/v1/grants",status="401"}' in metrics


def test_no_token_bad_token_and_another_agencys_action(service: Service) -> None:
    with service.client() as anon:
        r = anon.get("/v1/grants")
        assert r.status_code == 401 and r.json()["error"]["rule"] == "access.no_token"
        assert r.json()["error"]["article"] == "Art. 24"
        assert r.headers["www-authenticate"].startswith("Bearer")
    with service.client(token_="gbt_tax.forged") as forged:
        r = forged.get("/v1/grants")
        assert r.status_code == 401 and "not tax's credential" in r.json()["error"]["message"]
    with service.client(token_="not-a-govbus-token") as odd:
        r = odd.get("/v1/grants")
        assert r.status_code == 401 and r.json()["error"]["rule"] == "access.malformed_token"
    me = f"agency_{uuid.uuid4().hex[:8]}"
    with service.client(me) as http:
        r = http.post("/v1/query", json={"resource": "tax.tax_registration", "key": "x",
                                         "agency": "tax"})
        assert r.status_code == 403 and r.json()["error"]["rule"] == "access.other_agency"
        assert "cannot act as tax" in r.json()["error"]["message"]


def test_bad_input_is_a_4xx_naming_what_is_wrong(service: Service) -> None:
    me = f"agency_{uuid.uuid4().hex[:8]}"
    with service.client(me) as http:
        r = http.post("/v1/requests", content=b"{not json",
                      headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["rule"] == "input.malformed_json"
        r = http.post("/v1/requests", json={"resource": "tax.tax_registration",
                                            "purpose": "p", "commitment": "c", "colour": 1})
        assert r.status_code == 422 and r.json()["error"]["rule"] == "input.unknown_field"
        assert "colour" in r.json()["error"]["message"]
        r = http.post("/v1/requests", json={"resource": "tax.tax_registration"})
        assert r.status_code == 422 and "purpose: required" in r.json()["error"]["message"]
        r = http.post("/v1/requests", json={"resource": "tax.no_such", "purpose": "p",
                                            "commitment": "c"})
        assert r.status_code == 404 and r.json()["error"]["rule"] == \
            "catalogue.unknown_resource"
        r = http.post("/v1/requests", content=b"x" * 2_000_000,
                      headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["rule"] == "input.too_large"
        r = http.post("/v1/requests/999999/approve", json={})
        assert r.status_code == 404 and r.json()["error"]["rule"] == "request.not_found"
        r = http.get("/v1/nowhere")
        assert r.status_code == 404 and r.json()["error"]["rule"] == "http.not_found"
        r = http.get("/v1/requests", params={"status": "bogus"})
        assert r.status_code == 422 and "status" in r.json()["error"]["message"]
