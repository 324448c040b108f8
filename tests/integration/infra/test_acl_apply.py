"""``govbus.infra.acl`` against the real Tansu broker, which does not support ACLs: apply says so
clearly (and the process survives: librdkafka aborts on Tansu's CreateAcls answer), while the
plan from the real grants table still comes out."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest

from govbus.core.catalogue import Catalogue
from govbus.core.errors import BrokerError
from govbus.core.sharing_store import file_request
from govbus.infra.acl import advertised_apis, apply, main, plan
from tests.integration.conftest import TansuBroker
from tests.integration.helpers import commitment

NOW = dt.datetime.now(dt.UTC)


def test_apply_on_tansu_raises_a_clear_broker_error(tansu: TansuBroker,
                                                    catalogue: Catalogue) -> None:
    entries = plan(catalogue, [], NOW)
    for dry_run in (True, False):
        with pytest.raises(BrokerError, match="does not support ACLs.*DeleteAcls"):
            apply(entries, tansu.bootstrap, dry_run=dry_run)
    apis = advertised_apis(tansu.bootstrap)
    assert {0, 1, 18} <= apis and 31 not in apis  # Produce, Fetch, ApiVersions; no DeleteAcls


def test_apply_on_unreachable_broker(catalogue: Catalogue) -> None:
    with pytest.raises(BrokerError, match="unreachable"):
        apply(plan(catalogue, [], NOW), "127.0.0.1:1", timeout=2)


def test_cli_plan_from_the_grants_table_and_apply_refused(
        tansu: TansuBroker, database_url: str, catalogue: Catalogue,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    agency = f"agency_{uuid.uuid4().hex[:8]}"
    file_request(database_url, catalogue.resources["public_security.population_register"],
                 agency, "tests", None,
                 commitment(database_url, agency, "public_security.population_register"))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", tansu.bootstrap)
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main(["plan", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    mine = {(a["resource_type"], a["resource_name"], a["operation"]) for a in doc["acls"]
            if a["principal"] == f"User:{agency}"}
    assert mine == {("TOPIC", f"deliver.{agency}.population_register", "READ"),
                    ("TOPIC", f"deliver.{agency}.population_register", "DESCRIBE"),
                    ("GROUP", f"govbus-subscriber-{agency}", "READ"),
                    # its notices, which it reads with a group of its own
                    ("TOPIC", f"notices.{agency}", "READ"),
                    ("TOPIC", f"notices.{agency}", "DESCRIBE"),
                    ("GROUP", f"govbus-notices-{agency}", "READ")}
    assert main(["plan"]) == 0
    assert f"deliver.{agency}.population_register" in capsys.readouterr().out
    assert main(["apply", "--dry-run"]) == 1
    assert "does not support ACLs" in capsys.readouterr().err
