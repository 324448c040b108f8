"""The checkpointer on a real broker and PostgreSQL: it signs a checkpoint when the log
grows, publishes it on govbus.log.checkpoints, and an agency's subscriber keeps it in the
agency's own database, from where the agency checks the bus's log (Art. 24, 26, 31)."""

from __future__ import annotations

import dataclasses
import io
import json
import threading
import uuid
from pathlib import Path

from govbus import delivery_log as dl
from govbus.consumers.subscriber import Subscriber, TableSink
from govbus.core import topics
from govbus.core.catalogue import Catalogue
from govbus.core.config import Settings
from govbus.core.kafka import ensure_topics
from govbus.delivery_log import checkpoint_store
from govbus.delivery_log.checkpoints import DELIVERIES, parse
from govbus.stream_apps.checkpointer import Checkpointer
from tests.integration.consumers.test_subscriber import (
    POP,
    Running,
    delivery,
    grant,
    new_agency,
    produce,
    topic_of,
)
from tests.integration.govbus.test_access import cli
from tests.integration.helpers import TopicReader, wait_until


def test_checkpoints_are_signed_published_and_kept_by_the_agency(
        settings: Settings, catalogue: Catalogue, empty_database: str, tmp_path: Path) -> None:
    fast = dataclasses.replace(settings, checkpoint_interval_s=0.2)
    writer = dl.LogWriter(settings.database_url)
    tag = uuid.uuid4().hex[:8]
    writer.append([dl.LogEntry(f"cp-{tag}-{i}", "exchange", "tax", "hrss",
                               "tax.tax_registration", 1, ("uscc",), (),
                               "deliver.hrss.tax_registration", 0, i, 1_760_000_000_000)
                   for i in range(3)])
    head = writer.append([]).head.seq
    checkpointer = Checkpointer(fast)
    thread = threading.Thread(target=checkpointer.run, daemon=True)
    thread.start()
    agency = new_agency()
    running: list[Running] = []
    try:
        published = TopicReader(settings, [topics.CHECKPOINTS])
        wait_until(lambda: any(parse(m.value()).heads[DELIVERIES].seq >= head
                               for m in published.poll()), 30, "a checkpoint of the log")
        published.close()
        # a subscriber applying to the agency's table keeps the checkpoints with the data
        grant(settings, catalogue, agency, POP)
        ensure_topics(settings, [topic_of(agency, POP)])
        produce(settings, topic_of(agency, POP), [delivery(agency, POP, "k1", "c", 1, {"v": 1})])
        sink = TableSink(empty_database, "pop_copy")
        running.append(Running(Subscriber(settings, agency, sink, refresh_s=0.5,
                                          out=io.StringIO())))
        wait_until(lambda: any(c.heads[DELIVERIES].seq >= head
                               for c in checkpoint_store.kept(empty_database)), 60,
                   "the agency to keep a checkpoint")
    finally:
        for r in running:
            r.stop()
        checkpointer.stop()
        thread.join(15)
        writer.close()
    assert not thread.is_alive() and checkpointer.stats["checkpoints"] >= 1
    kept = tmp_path / "kept.jsonl"
    code, out, err = cli(settings.database_url, "log", "checkpoints", "--from-dsn",
                         empty_database, "--out", str(kept))
    assert code == 0, err
    code, out, err = cli(settings.database_url, "log", "verify", "--checkpoints", str(kept),
                         "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["checkpoints"] >= 1, out + err
