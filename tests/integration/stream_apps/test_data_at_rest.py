"""Data at rest: after an event about a citizen has gone through the hot path to an
entitled agency, no table of the bus's database holds the
citizen's identifier, address or phone — except ``entity_state``, the current record that
online query needs (Art. 17), and that row is gone once the provider deletes the entity. The
delivery log keeps who received which event, never what it said."""

from __future__ import annotations

import random
import uuid

from govbus import sample
from govbus.core import db
from govbus.core.catalogue import Catalogue
from govbus.core.config import Settings
from govbus.producers.publisher import Change, Publisher
from tests.integration.helpers import wait_until
from tests.integration.stream_apps.test_routing import agency, grant, pipeline  # noqa: F401  (fixture)

POP = "public_security.population_register"


def tables_holding(dsn: str, needles: list[str]) -> dict[str, list[str]]:
    """Which tables of the public schema have a row whose text contains a needle."""
    found: dict[str, list[str]] = {}
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        for (table,) in cur.fetchall():
            for needle in needles:
                cur.execute(f'SELECT count(*) FROM "{table}" t WHERE strpos(t::text, %s) > 0',
                            (needle,))
                if cur.fetchone()[0]:
                    found.setdefault(table, []).append(needle)
    return found


def logged(dsn: str, event_id: str) -> int:
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM deliveries WHERE event_id = %s", (event_id,))
        return int(cur.fetchone()[0])


def test_only_the_current_record_is_kept_and_only_until_deleted(
        settings: Settings, catalogue: Catalogue, pipeline: object) -> None:  # noqa: F811
    me = agency("rest")
    grant(catalogue, settings.database_url, me, POP, None, confidentiality="CA-1")
    rng = random.Random(uuid.uuid4().int)
    person = sample.person(rng) | {"residence_address": f"渝水区{uuid.uuid4().hex}号"}
    secrets = [person["resident_id"], person["residence_address"], person["phone"]]
    pub = Publisher(settings)
    created = pub.publish("public_security", "population_register", [Change("c", person)])
    assert created.published == 1
    wait_until(lambda: logged(settings.database_url, created.event_ids[0]), 60,
               "the delivery to be logged")
    assert tables_holding(settings.database_url, secrets) == {"entity_state": secrets}
    deleted = pub.publish("public_security", "population_register",
                          [Change("d", None, before=person)])
    wait_until(lambda: logged(settings.database_url, deleted.event_ids[0]), 60,
               "the delete to be logged")
    assert tables_holding(settings.database_url, secrets) == {}
    pub.close()
