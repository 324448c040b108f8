"""Security commitments and confidentiality agreements through ``govbus serve`` (Art. 24, 25):
registered by their agency, refused requests naming one that is unknown, another agency's,
expired or out of scope, and grants that lapse with them — on the real broker, the hot path
stops delivering and the online query refuses within seconds; every delivery carries the
restrictions of Art. 24 in its ``govbus-use`` header; the ACL plan follows (Art. 31: the
grant's provision date and whether it was met)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import random
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from govbus.core.catalogue import Catalogue
from govbus.core.commitments import USE_HEADER, parse_use_header
from govbus.core.config import Settings
from govbus.core.kafka import ensure_topics
from govbus.core.sharing_store import load_grants
from govbus.delivery_log import list_deliveries
from govbus.infra import acl
from govbus.producers.publisher import Change, Publisher
from govbus.stream_apps.hotpath import HotPath
from tests.integration.api.conftest import Service
from tests.integration.api.test_sharing_through_service import company
from tests.integration.helpers import TopicReader, running, wait_until

TAX, POP = "tax.tax_registration", "public_security.population_register"


def agency(tag: str = "") -> str:
    return f"agency_{tag}{uuid.uuid4().hex[:8]}"


def register(http: httpx.Client, number: str, resources: list[str], *,
             kind: str = "security", valid_until: str | None = None,
             **over: Any) -> httpx.Response:
    today = dt.datetime.now(dt.UTC).date()
    return http.post("/v1/commitments", json={
        "number": number, "kind": kind, "resources": resources,
        "purpose": "employer and benefit checks", "signed_on": str(today),
        "valid_until": valid_until or str(today + dt.timedelta(days=90)), "sha256": "cd" * 32}
        | over)


def created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def refusal(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return response.json()["error"]  # type: ignore[no-any-return]


def test_register_list_show_and_withdraw(service: Service) -> None:
    me, other = agency(), agency()
    document = b"%PDF-1.7 security commitment: own duties only, no third parties"
    with service.client(me) as mine, service.client(other) as theirs, \
            service.client("tax") as tax, service.client("information_center") as center:
        sc = created(register(mine, f"SC-{me}", [TAX, "public_security.*"], sha256=None,
                              document=base64.b64encode(document).decode()))
        assert sc["document_sha256"] == hashlib.sha256(document).hexdigest()
        assert (sc["agency"], sc["state"], sc["kind"]) == (me, "in_force", "security")
        assert sc["restrictions"] == ["duties", "no-third-party", "no-commercial"]  # Art. 24
        ca = created(register(mine, f"CA-{me}", [TAX], kind="confidentiality"))
        assert ca["document_sha256"] == "cd" * 32
        issued = f"渝水信〔2026〕{uuid.uuid4().int % 10**6}号"  # a number as issued
        created(register(mine, issued, [TAX]))
        assert mine.get(f"/v1/commitments/{issued}").json()["number"] == issued
        assert refusal(register(mine, "SC;1", [TAX]), 422)["rule"] == "commitment.number"

        # one agency registers its own only; a number is registered once
        error = refusal(register(theirs, f"SC-{other}", [TAX], agency=me), 403)
        assert error["rule"] == "access.other_agency"
        assert refusal(register(theirs, f"SC-{me}", [TAX]), 409)["rule"] == "commitment.exists"
        for bad, rule in (({"sha256": None}, "commitment.document"),
                          ({"document": "AAAA"}, "commitment.document"),
                          ({"resources": ["tax.nothing"]}, "commitment.scope"),
                          ({"valid_until": "2020-01-01"}, "commitment.valid_until")):
            over: dict[str, Any] = dict(bad)
            scope = over.pop("resources", [TAX])
            assert refusal(register(theirs, f"SC-{uuid.uuid4().hex[:6]}", scope, **over),
                           422)["rule"] == rule, bad

        listed = mine.get("/v1/commitments").json()
        assert sorted(c["number"] for c in listed) == sorted([f"CA-{me}", f"SC-{me}", issued])
        assert theirs.get("/v1/commitments").json() == []
        assert refusal(theirs.get("/v1/commitments", params={"agency": me}), 403)["rule"] == \
            "access.other_agency"
        assert {c["number"] for c in center.get("/v1/commitments",
                                                params={"agency": me}).json()} == \
            {f"CA-{me}", f"SC-{me}", issued}
        # its agency, a provider it covers and the center read it; nobody else
        assert mine.get(f"/v1/commitments/SC-{me}").json()["grants"] == []
        assert tax.get(f"/v1/commitments/SC-{me}").status_code == 200
        assert refusal(theirs.get(f"/v1/commitments/SC-{me}"), 403)["rule"] == \
            "access.not_yours"
        assert refusal(mine.get("/v1/commitments/SC-none"), 404)["rule"] == \
            "commitment.not_found"

        error = refusal(theirs.post(f"/v1/commitments/SC-{me}/withdraw",
                                    json={"reason": "x"}), 403)
        assert error["rule"] == "commitment.not_yours"
        out = mine.post(f"/v1/commitments/CA-{me}/withdraw", json={"reason": "duty ended"})
        assert out.status_code == 200 and out.json()["state"] == "withdrawn", out.text
        assert refusal(mine.post(f"/v1/commitments/CA-{me}/withdraw",
                                 json={"reason": "again"}), 409)["rule"] == \
            "commitment.withdrawn"
        out = center.post(f"/v1/commitments/SC-{me}/withdraw", json={"reason": "audit found"})
        assert out.status_code == 200 and out.json()["withdrawn_by"] == "information_center"


def test_requests_are_refused_by_their_commitment_with_its_rule(service: Service) -> None:
    """Art. 24, 25: each refusal a 422 naming its rule and article, nothing filed."""
    me, other = agency(), agency()
    with service.client(me) as mine, service.client(other) as theirs:
        created(register(mine, f"SC-{me}", [POP]))
        created(register(theirs, f"SC-{other}", [TAX, POP]))
        created(register(theirs, f"CA-{other}", [TAX], kind="confidentiality"))
        created(register(mine, f"SC-{me}-soon", [TAX],
                         valid_until=(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=4))
                         .isoformat()))
        created(register(mine, f"CA-{me}", [POP], kind="confidentiality"))

        def ask(**over: Any) -> httpx.Response:
            return mine.post("/v1/requests", json={"resource": TAX, "purpose": "employer "
                                                   "checks", "commitment": f"SC-{me}"} | over)

        pending = created(ask(commitment=f"SC-{me}-soon"))  # filed while it holds
        assert pending["status"] == "pending"

        wait_until(lambda: dt.datetime.now(dt.UTC).isoformat() >
                   mine.get(f"/v1/commitments/SC-{me}-soon").json()["ends_at"], 10,
                   "the short commitment to end")
        for over, rule, article in (
                ({"commitment": "."}, "commitment.unknown", "Art. 24"),
                ({"commitment": "SC-never-registered"}, "commitment.unknown", "Art. 24"),
                ({"commitment": f"SC-{other}"}, "commitment.not_yours", "Art. 24"),
                ({"commitment": f"SC-{me}-soon"}, "commitment.expired", "Art. 24"),
                ({}, "commitment.out_of_scope", "Art. 24"),
                ({"resource": POP, "confidentiality": f"CA-{other}"},
                 "confidentiality.not_yours", "Art. 25"),
                ({"resource": POP, "confidentiality": f"SC-{me}"},
                 "confidentiality.wrong_kind", "Art. 25"),
                ({"resource": POP, "valid_until": "2020-01-01"}, "request.valid_until_past",
                 "Art. 18")):
            error = refusal(ask(**over), 422)
            assert (error["rule"], error["article"]) == (rule, article), (over, error)
        # refused as incomplete: nothing filed but the request made while its commitment held
        assert [r["request_id"] for r in mine.get("/v1/requests").json()] == \
            [pending["request_id"]]
        with service.client("tax") as tax:  # no grant is made on a commitment that ended
            error = refusal(tax.post(f"/v1/requests/{pending['request_id']}/approve",
                                     json={}), 422)
            assert error["rule"] == "commitment.expired"
            out = tax.post(f"/v1/requests/{pending['request_id']}/reject",
                           json={"reason": "its security commitment ended (Art. 24)"})
            assert out.status_code == 200 and out.json()["status"] == "rejected"
        granted = ask(resource=POP, confidentiality=f"CA-{me}")
        assert granted.status_code == 201 and granted.json()["status"] == "granted"
        assert granted.json()["masked_fields"] == []  # Art. 25: the agreement unmasks
        grants = mine.get("/v1/grants").json()
        assert [(g["commitment"], g["confidentiality"], g["state"]) for g in grants] == \
            [(f"SC-{me}", f"CA-{me}", "in_force")]


@pytest.fixture
def hotpath(settings: Settings) -> Iterator[HotPath]:
    group = f"test-commitments-{uuid.uuid4().hex[:8]}"
    with running(HotPath(settings, group=group, batch=100)) as worker:
        yield worker


def ids(reader: TopicReader) -> list[str]:
    return [reader.value(m)["event_id"] for m in reader.poll()]


def test_grants_lapse_with_their_commitment_expired_or_withdrawn(
        service: Service, hotpath: HotPath, settings: Settings, catalogue: Catalogue) -> None:
    """Three recipients of tax registrations: ``kept`` under a commitment of 90 days,
    ``expiring`` under one valid for 12 seconds, ``withdrawn`` under one withdrawn. Once
    they end, the hot path delivers to ``kept`` only and the online query refuses the other
    two, within seconds; the ACL plan drops their READ (Art. 24)."""
    rng = random.Random(uuid.uuid4().int)
    kept, expiring, withdrawn = agency("k"), agency("e"), agency("w")
    topics = {a: f"deliver.{a}.tax_registration" for a in (kept, expiring, withdrawn)}
    ensure_topics(settings, list(topics.values()))
    readers = {a: TopicReader(settings, [t]) for a, t in topics.items()}
    publisher = Publisher(settings)

    def publish(n: int) -> list[str]:
        rows = [company(rng) for _ in range(n)]
        report = publisher.publish("tax", "tax_registration", [Change("c", r) for r in rows])
        assert report.published == n, report.as_dict()
        return report.event_ids

    def apply(http: httpx.Client, tax: httpx.Client, who: str, number: str) -> int:
        pending = created(http.post("/v1/requests", json={
            "resource": TAX, "purpose": "employer checks", "commitment": number,
            "fields": ["uscc", "taxpayer_name"]}))
        assert pending["status"] == "pending"
        out = tax.post(f"/v1/requests/{pending['request_id']}/approve", json={})
        assert out.status_code == 200, out.text
        return int(out.json()["grant_id"])

    clients = {a: service.client(a) for a in topics}
    with service.client("tax") as tax:
        created(register(clients[kept], f"SC-{kept}", [TAX]))
        gids = {kept: apply(clients[kept], tax, kept, f"SC-{kept}")}
        warm = publish(1)  # the hot path joined its group and routes: the rest is timed
        wait_until(lambda: ids(readers[kept]) == warm, 90, "the first delivery to kept")

        ends = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=12)).isoformat()
        created(register(clients[expiring], f"SC-{expiring}", [TAX], valid_until=ends))
        created(register(clients[withdrawn], f"SC-{withdrawn}", [TAX]))
        for who in (expiring, withdrawn):
            gids[who] = apply(clients[who], tax, who, f"SC-{who}")
        granted = dt.datetime.now(dt.UTC)
        wait_until(lambda: (hotpath.control.loaded_at or granted) > granted, 5,
                   "the hot path to load the new grants")
        first = publish(2)
        for who in topics:
            wait_until(lambda: set(first) <= set(ids(readers[who])),  # noqa: B023
                       8, f"the deliveries to {who} while its commitment holds")
            for msg in readers[who].messages:
                use = parse_use_header(dict(msg.headers() or [])[USE_HEADER])
                assert use == {"version": "1", "commitment": f"SC-{who}",
                               "confidentiality": None,
                               "restrictions": ["duties", "no-third-party", "no-commercial"]}
        key = readers[expiring].value(readers[expiring].messages[-1])["key"]
        for who in (expiring, withdrawn):
            wait_until(lambda: clients[who].post(  # noqa: B023
                "/v1/query", json={"resource": TAX, "key": key}).status_code == 200, 10,
                f"{who}'s online query of the record")

        out = clients[withdrawn].post(f"/v1/commitments/SC-{withdrawn}/withdraw",
                                      json={"reason": "the duty moved to another office"})
        assert out.status_code == 200 and out.json()["grants_ended"] == [gids[withdrawn]]
        wait_until(lambda: dt.datetime.now(dt.UTC).isoformat() > ends, 15,
                   "the expiring commitment's end")
        ended = dt.datetime.now(dt.UTC)
        for who in (expiring, withdrawn):  # the query reads the grants as they are now
            error = refusal(clients[who].post("/v1/query", json={"resource": TAX, "key": key}),
                            403)
            assert error["rule"] == "grant.none_in_force", error
        wait_until(lambda: (hotpath.control.loaded_at or ended) > ended, 5,
                   "the hot path to reload its grants after the ends")
        later = publish(2)
        wait_until(lambda: set(later) <= set(ids(readers[kept])), 30, "kept's later deliveries")
        wait_until(lambda: {r["event_id"] for r in list_deliveries(
            settings.database_url, recipient=kept, limit=1000)} >= set(later), 30,
            "kept's log rows")
        # a batch's deliveries are logged together: one to a lapsed grant would be logged too
        for who in (expiring, withdrawn):
            logged = {r["event_id"] for r in list_deliveries(settings.database_url,
                                                             recipient=who, limit=1000)}
            assert set(first) <= logged and not logged & set(later), who
            assert not set(ids(readers[who])) & set(later), who

        states = {g["recipient"]: g for g in tax.get("/v1/grants").json()
                  if g["recipient"] in topics}
        assert {a: states[a]["state"] for a in topics} == \
            {kept: "in_force", expiring: "lapsed", withdrawn: "lapsed"}
        assert states[expiring]["ends_at"] < states[expiring]["provide_by"]
        for who in topics:  # Art. 31: provided on consent, well within the completion days
            assert states[who]["provision"] == "met" and not states[who]["overdue"], \
                states[who]
        plan = acl.plan(catalogue, load_grants(settings.database_url), dt.datetime.now(dt.UTC))
        readable = {e.principal.removeprefix("User:") for e in plan
                    if e.operation == "READ" and e.resource_name in topics.values()}
        assert readable == {kept}
    for reader in readers.values():
        reader.close()
    for http in clients.values():
        http.close()
