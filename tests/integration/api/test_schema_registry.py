"""The Schema Registry API through the real service, read by stock Confluent tooling: a
``SchemaRegistryClient`` with Basic credentials and an ``AvroDeserializer`` decode records
that the Publisher put on ``ingest.*``, the hot path forwarded to ``validated.*`` and
delivered to ``deliver.*`` on the real broker; each route's shape, Confluent's error codes,
the refused registration, the compatibility tests by a resource's level.

The module has a database and a broker of its own: its registry holds a second version of
the adoption register, whose contract sets ``govbus.compatibility`` to BACKWARD."""

from __future__ import annotations

import base64
import copy
import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from govbus import runtime, sample
from govbus.core import db, registry, sharing_store
from govbus.core.catalogue import Catalogue, load_catalogue, resource_from_schema
from govbus.core.config import Settings
from govbus.core.envelope import make_event
from govbus.core.kafka import ensure_topics
from govbus.producers.publisher import Change, Publisher
from govbus.stream_apps.hotpath import HotPath
from tests.integration.api.conftest import Service, start_service, stop_service, token
from tests.integration.conftest import TansuBroker, register_sample_keys, scratch_database
from tests.integration.helpers import (
    TopicReader,
    commitment,
    running,
    wait_until,
    worker_port,
)

TAX = "tax.tax_registration"
ADOPTION = "civil_affairs.adoption_register"
INGEST, VALIDATED = "ingest.tax.tax_registration-value", "validated.tax.tax_registration-value"
ADOPTED = "ingest.civil_affairs.adoption_register-value"
MEDIA = "application/vnd.schemaregistry.v1+json"
# version 2 of the adoption register: a note with a default, compatibility BACKWARD
NOTE = {"name": "note", "type": "string", "default": "", "doc": "a clerk's note"}


@dataclass
class Env:
    settings: Settings
    service: Service

    @property
    def url(self) -> str:
        return f"{self.service.url}/registry"

    def client(self, agency: str = "hrss") -> SchemaRegistryClient:
        """A stock client, as an agency's developer configures one."""
        secret = token(self.settings.database_url, agency)
        return SchemaRegistryClient({"url": self.url,
                                     "basic.auth.user.info": f"{agency}:{secret}"})

    def http(self, agency: str | None = "hrss") -> httpx.Client:
        return self.service.client(agency)


def with_note(catalogue: Catalogue) -> Catalogue:
    res = catalogue.resources[ADOPTION]
    schema = copy.deepcopy(res.schema)
    schema["govbus"]["compatibility"] = "BACKWARD"
    schema["fields"].append(NOTE)
    changed = resource_from_schema(str(res.agency), res.name, schema, res.path)
    return Catalogue(catalogue.root, catalogue.resources | {ADOPTION: changed})


@pytest.fixture(scope="module")
def env(pg_admin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("schema-registry")
    broker = TansuBroker(base, runtime.free_port(worker_port(29292)))
    broker.start()
    catalogue = load_catalogue()
    try:
        with scratch_database(pg_admin) as url:
            db.migrate(url)
            registry.sync(url, catalogue)
            registry.sync(url, with_note(catalogue))
            register_sample_keys(url)
            settings = Settings(broker.bootstrap, url, catalogue.root, session_timeout_ms=6000,
                                partitions=3)
            ensure_topics(settings, runtime.catalogue_topics(catalogue))
            service = start_service(url, broker.bootstrap, base / "serve.log")
            yield Env(settings, service)
            stop_service(service)
    finally:
        broker.stop()


def text(schema: Schema) -> str:
    """A registered schema's JSON text (the client types it optional)."""
    assert schema.schema_str is not None
    return schema.schema_str


def registered(env: Env, resource_id: str) -> list[tuple[int, int]]:
    """(version, schema id) of each registered version, from the database itself."""
    with db.transaction(env.settings.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT version, schema_id FROM schema_versions WHERE resource_id = %s "
                    "ORDER BY version", (resource_id,))
        return [(int(v), int(s)) for v, s in cur.fetchall()]


def company(rng: random.Random) -> dict[str, Any]:
    code = sample.uscc(rng, "360502")
    return {"uscc": code, "taxpayer_name": f"新余市{code[-4:]}有限公司",
            "legal_representative": "李强", "registered_address": "渝水区劳动北路1号",
            "taxpayer_type": "GENERAL", "tax_authority": "国家税务总局新余市渝水区税务局",
            "credit_rating": "AAA-2025-07"}


def publish(env: Env, records: list[dict[str, Any]]) -> list[str]:
    report = Publisher(env.settings).publish("tax", "tax_registration",
                                             [Change("c", r) for r in records])
    assert report.published == len(records), report.as_dict()
    return report.event_ids


def decode_all(env: Env, topic: str, count: int, agency: str) -> list[dict[str, Any]]:
    """``count`` records of ``topic`` decoded by a stock ``AvroDeserializer``."""
    deserializer = AvroDeserializer(env.client(agency))
    reader = TopicReader(env.settings, [topic])
    try:
        messages = reader.until(count, timeout=60)
    finally:
        reader.close()
    return [deserializer(m.value(), SerializationContext(str(m.topic()), MessageField.VALUE))
            for m in messages]


def test_a_stock_deserializer_decodes_ingest_and_validated_records(env: Env) -> None:
    rng = random.Random(uuid.uuid4().int)
    records = [company(rng), company(rng)]
    ids = publish(env, records)
    worker = HotPath(env.settings, group=f"test-hotpath-{uuid.uuid4().hex[:8]}", batch=100)
    with running(worker):
        ingest = decode_all(env, "ingest.tax.tax_registration", 2, "tax")
        validated = decode_all(env, "validated.tax.tax_registration", 2, "hrss")
    for decoded in (ingest, validated):
        assert {d["event_id"] for d in decoded} == set(ids)
        by_key = {d["after"]["uscc"]: d for d in decoded}
        assert set(by_key) == {r["uscc"] for r in records}
        for r in records:
            got = by_key[r["uscc"]]
            assert {k: got["after"][k] for k in r} == r
            assert (got["op"], got["resource"], got["before"]) == ("c", TAX, None)
            assert got["schema_version"] == 1


def test_a_stock_deserializer_decodes_deliveries_seen_only_by_whom_they_concern(
        env: Env) -> None:
    """A grant's projection is a schema of its own under ``deliver.<recipient>.<resource>
    -value``: the recipient's stock deserializer decodes its deliveries; the provider and
    the center see the subject; any other agency is told it does not exist (Art. 24)."""
    dsn = env.settings.database_url
    out = sharing_store.file_request(dsn, load_catalogue().resources[TAX], "hrss", "duties",
                                     ["uscc", "taxpayer_name", "credit_rating"],
                                     commitment(dsn, "hrss", TAX))
    sharing_store.decide(dsn, out["request_id"], "tax", True, "ok")
    rng = random.Random(uuid.uuid4().int)
    records = [company(rng), company(rng)]
    ids = publish(env, records)
    worker = HotPath(env.settings, group=f"test-hotpath-{uuid.uuid4().hex[:8]}", batch=100)
    deserializer = AvroDeserializer(env.client("hrss"))
    reader = TopicReader(env.settings, ["deliver.hrss.tax_registration"])
    context = SerializationContext("deliver.hrss.tax_registration", MessageField.VALUE)
    with running(worker):  # the module's earlier events are delivered too: the grant is new
        wait_until(lambda: set(ids) <= {deserializer(m.value(), context)["event_id"]
                                        for m in reader.poll()}, 60, "both deliveries")
    reader.close()
    delivered = [d for d in (deserializer(m.value(), context) for m in reader.messages)
                 if d["event_id"] in ids]
    assert len(delivered) == 2
    for d in delivered:
        assert set(d["after"]) == {"uscc", "taxpayer_name", "credit_rating"}
        assert d["after"]["credit_rating"] == "AAA******07"  # masked: no agreement (Art. 25)
        assert (d["masked_fields"], d["source"]["agency"]) == (["credit_rating"], "tax")

    subject = "deliver.hrss.tax_registration-value"
    for who in ("hrss", "tax", "information_center"):
        latest = env.client(who).get_latest_version(subject)
        assert latest.version == 1 and "Envelope" in text(latest.schema)
        assert subject in env.client(who).get_subjects()
        assert env.http(who).get(f"/registry/config/{subject}").json() == {
            "compatibilityLevel": "NONE"}  # a grant decides a delivery's fields
    outsider = env.http("civil_affairs")
    assert subject not in env.client("civil_affairs").get_subjects()
    answer = outsider.get(f"/registry/subjects/{subject}/versions")
    assert (answer.status_code, answer.json()["error_code"]) == (404, 40401)
    answer = outsider.get(f"/registry/schemas/ids/{latest.schema_id}")
    assert (answer.status_code, answer.json()["error_code"]) == (404, 40403)


def test_schema_ids_are_the_wire_formats_and_subjects_map_to_resources(env: Env) -> None:
    [(version, schema_id)] = registered(env, TAX)
    client = env.client()
    assert client.get_versions(INGEST) == client.get_versions(VALIDATED) == [version]
    latest = client.get_latest_version(INGEST)
    assert (latest.schema_id, latest.version, latest.subject) == (schema_id, 1, INGEST)
    envelope = json.loads(text(client.get_schema(schema_id)))
    assert envelope["name"] == "Envelope" and envelope["fields"][0]["name"] == "before"
    # the catalogue's subjects, and the deliveries hrss receives, if any yet
    assert {s for s in client.get_subjects() if not s.startswith("deliver.hrss.")} == {
        s for r in load_catalogue().resources
        for s in (f"ingest.{r}-value", f"validated.{r}-value")}
    with env.http() as http:
        r = http.get(f"/registry/schemas/ids/{schema_id}")
        assert r.status_code == 200 and r.headers["content-type"] == MEDIA
        assert set(r.json()) == {"schema"}
        assert r.json()["schema"] == latest.schema.schema_str
        assert http.get(f"/registry/schemas/ids/{schema_id}/versions").json() == [
            {"subject": INGEST, "version": 1}, {"subject": VALIDATED, "version": 1}]
        assert http.get(f"/registry/schemas/ids/{schema_id}/subjects").json() == [
            INGEST, VALIDATED]
        r = http.get(f"/registry/subjects/{VALIDATED}/versions/1")
        assert r.json() == {"subject": VALIDATED, "version": 1, "id": schema_id,
                            "schema": latest.schema.schema_str}
        r = http.get(f"/registry/subjects/{INGEST}/versions/latest/schema")
        assert json.loads(r.text) == json.loads(text(latest.schema))
        assert http.get("/registry/subjects", params={"subjectPrefix": "validated.tax."}
                        ).json() == [VALIDATED]
        assert http.get("/registry/schemas/types").json() == ["AVRO"]
        assert http.get("/registry/mode").json() == {"mode": "READONLY"}


def test_two_versions_and_the_level_each_resource_configures(env: Env) -> None:
    (v1, id1), (v2, id2) = registered(env, ADOPTION)
    client = env.client("tax")
    assert client.get_versions(ADOPTED) == [1, 2]
    assert client.get_version(ADOPTED, 1).schema_id == id1
    assert client.get_latest_version(ADOPTED).schema_id == id2 != id1
    assert client.get_compatibility() == "BACKWARD_TRANSITIVE"
    assert client.get_compatibility(INGEST) == "BACKWARD_TRANSITIVE"
    assert client.get_compatibility(ADOPTED) == "BACKWARD"  # govbus.compatibility
    with env.http("tax") as http:
        assert http.get("/registry/config").json() == {
            "compatibilityLevel": "BACKWARD_TRANSITIVE"}
        assert http.get(f"/registry/config/{ADOPTED}").json() == {
            "compatibilityLevel": "BACKWARD"}


def _required_note(env: Env) -> Schema:
    """Version 2's envelope with its note required: it reads version 2's data, not 1's
    (the record is defined in ``before``; ``after`` names it)."""
    schema = json.loads(text(env.client().get_latest_version(ADOPTED).schema))
    for field in schema["fields"]:
        if field["name"] == "before":
            record = next(b for b in field["type"] if isinstance(b, dict))
            next(f for f in record["fields"] if f["name"] == "note").pop("default")
    return Schema(json.dumps(schema), "AVRO")


def test_compatibility_of_a_compatible_and_an_incompatible_schema(env: Env) -> None:
    client = env.client()
    latest = client.get_latest_version(INGEST).schema
    widened = json.loads(text(latest))
    widened["fields"].append({"name": "channel", "type": ["null", "string"],
                              "default": None})
    assert client.test_compatibility(INGEST, Schema(json.dumps(widened), "AVRO"))
    retyped = json.loads(text(latest))
    next(f for f in retyped["fields"] if f["name"] == "event_id")["type"] = "int"
    assert not client.test_compatibility(INGEST, Schema(json.dumps(retyped), "AVRO"))
    with env.http() as http:
        r = http.post(f"/registry/compatibility/subjects/{INGEST}/versions/1",
                      params={"verbose": "true"}, json={"schema": json.dumps(retyped)})
        assert r.status_code == 200 and r.json()["is_compatible"] is False
        assert "field 'event_id': type changed from string to int" in r.json()["messages"][0]
        r = http.post(f"/registry/compatibility/subjects/{INGEST}/versions/latest",
                      json={"schema": json.dumps(widened)})
        assert r.json() == {"is_compatible": True}
    # by the adoption register's level (BACKWARD): against the newest version only
    required = _required_note(env)
    assert client.test_compatibility(ADOPTED, required, version=2)
    assert not client.test_compatibility(ADOPTED, required, version=1)
    assert client.test_compatibility_all_versions(ADOPTED, required)  # BACKWARD: v2 only
    # the shipped default (BACKWARD_TRANSITIVE) tests every version
    with env.http() as http:
        r = http.post(f"/registry/compatibility/subjects/{INGEST}/versions",
                      params={"verbose": "true"}, json={"schema": json.dumps(retyped)})
        assert r.json()["is_compatible"] is False
        assert r.json()["messages"][-1] == "compatibility: BACKWARD_TRANSITIVE"


def adoption_event() -> dict[str, Any]:
    """A deletion event of the adoption register, as the envelope module builds one."""
    res = load_catalogue().resources[ADOPTION]
    return make_event(res, version=1, op="d", record=None, agency="civil_affairs",
                      locality="360502")


def test_registering_answers_only_an_approved_versions_id(env: Env) -> None:
    client = env.client("civil_affairs")
    (_, id1), (_, id2) = registered(env, ADOPTION)
    v1 = client.get_version(ADOPTED, 1).schema
    assert client.register_schema(ADOPTED, Schema(v1.schema_str, "AVRO")) == id1
    assert client.lookup_schema(ADOPTED, Schema(v1.schema_str, "AVRO")).version == 1
    # a stock serializer that registers its schema frames with the registered id
    serializer = AvroSerializer(client, text(v1), conf={"auto.register.schemas": True})
    framed = serializer(adoption_event(),
                        SerializationContext("ingest.civil_affairs.adoption_register",
                                             MessageField.VALUE))
    assert framed is not None and framed[:5] == b"\0" + id1.to_bytes(4, "big")
    changed = json.loads(text(client.get_latest_version(ADOPTED).schema))
    changed["doc"] = "a schema the catalogue never approved"
    with pytest.raises(SchemaRegistryError) as exc:
        env.client("civil_affairs").register_schema(ADOPTED, Schema(json.dumps(changed),
                                                                    "AVRO"))
    assert (exc.value.http_status_code, exc.value.error_code) == (422, 42205)
    assert "POST /v1/catalogue/proposals" in exc.value.error_message
    with env.http("civil_affairs") as http:
        r = http.post(f"/registry/subjects/{ADOPTED}/versions",
                      json={"schema": json.dumps(changed)},
                      headers={"content-type": MEDIA})
        assert r.status_code == 422 and r.json()["error_code"] == 42205
        r = http.post("/registry/subjects/ingest.civil_affairs.new_register-value/versions",
                      json={"schema": v1.schema_str})
        assert r.json()["error_code"] == 42205  # a new subject is a catalogue change too
        r = http.post(f"/registry/subjects/{ADOPTED}", json={"schema": json.dumps(changed)})
        assert (r.status_code, r.json()["error_code"]) == (404, 40403)
        r = http.put(f"/registry/config/{ADOPTED}", json={"compatibility": "NONE"})
        assert (r.status_code, r.json()["error_code"]) == (422, 42205)
        assert "govbus.compatibility" in r.json()["message"]
        assert http.delete(f"/registry/subjects/{ADOPTED}").json()["error_code"] == 42205
    assert registered(env, ADOPTION) == [(1, id1), (2, id2)]  # nothing registered


def test_not_found_and_invalid_in_confluents_error_codes(env: Env) -> None:
    with env.http() as http:
        for path, status, code in [
            ("/registry/subjects/ingest.tax.nothing-value/versions", 404, 40401),
            ("/registry/subjects/ingest.tax.tax_registration-key/versions", 404, 40401),
            ("/registry/config/validated.tax.nothing-value", 404, 40401),
            (f"/registry/subjects/{INGEST}/versions/9", 404, 40402),
            (f"/registry/subjects/{INGEST}/versions/zero", 422, 42202),
            ("/registry/schemas/ids/987654", 404, 40403),
            ("/registry/schemas/ids/987654/versions", 404, 40403),
            ("/registry/no/such/route", 404, 404),
        ]:
            r = http.get(path)
            assert (r.status_code, r.json()["error_code"]) == (status, code), path
            assert set(r.json()) == {"error_code", "message"} and r.json()["message"]
        r = http.post(f"/registry/compatibility/subjects/{INGEST}/versions/latest",
                      json={"schema": "{not an avro schema"})
        assert (r.status_code, r.json()["error_code"]) == (422, 42201)
        r = http.post(f"/registry/compatibility/subjects/{INGEST}/versions/latest",
                      json={"schema": "{}", "schemaType": "PROTOBUF"})
        assert (r.status_code, r.json()["error_code"]) == (422, 42201)
        # the rest of the service keeps its own shape
        r = http.get("/v1/schemas/ids/987654")
        assert r.status_code == 404 and "error" in r.json() and "error_code" not in r.json()
    with pytest.raises(SchemaRegistryError) as exc:
        env.client().get_schema(987654)
    assert exc.value.error_code == 40403


def test_without_credentials_or_with_wrong_ones_401(env: Env) -> None:
    secret = token(env.settings.database_url, "hrss")
    with env.http(None) as anon:
        r = anon.get("/registry/subjects")
        assert (r.status_code, r.json()["error_code"]) == (401, 401)
        assert r.headers["content-type"] == MEDIA
        assert "Basic" in r.headers["www-authenticate"]
        for user, password in [("hrss", "gbt_hrss.forged"), ("tax", secret),
                               ("hrss", "not-a-token")]:
            basic = base64.b64encode(f"{user}:{password}".encode()).decode()
            r = anon.get("/registry/subjects", headers={"Authorization": f"Basic {basic}"})
            assert (r.status_code, r.json()["error_code"]) == (401, 401), user
        r = anon.get("/registry/subjects", headers={"Authorization": f"Bearer {secret}"})
        assert r.status_code == 200 and INGEST in r.json()
    wrong = SchemaRegistryClient({"url": env.url,
                                  "basic.auth.user.info": "hrss:gbt_hrss.forged"})
    with pytest.raises(SchemaRegistryError) as exc:
        wrong.get_subjects()
    assert (exc.value.http_status_code, exc.value.error_code) == (401, 401)
