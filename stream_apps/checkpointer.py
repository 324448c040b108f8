"""The checkpointer: signs a checkpoint of every chain at an interval and a row count, and
publishes it where every agency reads it (docs/security.md; Art. 24, 26, 31).

Every ``GOVBUS_CHECKPOINT_INTERVAL_S`` seconds while the delivery log or the audit ledger
grew, or as soon as ``GOVBUS_CHECKPOINT_ROWS`` rows were logged since the last checkpoint, it
seals the audit ledger, signs the heads with the information center's key
(``GOVBUS_CHECKPOINT_KEY_FILE``, which no other process holds) and records the checkpoint in
``log_checkpoints``; then it produces it to ``govbus.log.checkpoints`` (kept forever), keyed by
its number. A checkpoint recorded but not yet published (the broker down) is published on
the next round; after a restart the recorded ones are published again, and an agency keeps
each number once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any

import orjson
from confluent_kafka import Producer

from govbus.core import db, keys_store, metrics, topics
from govbus.core.batching import serve
from govbus.core.config import Settings
from govbus.core.errors import BrokerError, DatabaseError
from govbus.core.kafka import KnownTopics, producer_config
from govbus.core.keyring import CHECKPOINT_SIGNER, checkpoint_key
from govbus.delivery_log import audit, checkpoint_store
from govbus.delivery_log.checkpoints import Checkpoint, log_rows

log = logging.getLogger("govbus.checkpointer")
POLL_S = 0.5  # how often the heads are looked at


class Checkpointer:
    """Takes and publishes checkpoints until :meth:`stop`."""

    component = "checkpointer"

    def __init__(self, settings: Settings) -> None:
        self.settings, self.dsn = settings, settings.database_url
        self.private = checkpoint_key(settings)
        # its public half is registered, so the bus's own verifier knows it; agencies pin it
        keys_store.register(self.dsn, CHECKPOINT_SIGNER, self.private.public_key(),
                            "checkpointer")
        self.interval, self.rows = settings.checkpoint_interval_s, settings.checkpoint_rows
        self.producer = Producer(producer_config(settings))
        KnownTopics(settings).ensure([topics.CHECKPOINTS])
        self.db = db.Reused(self.dsn)
        self.stats: Counter[str] = Counter()
        self.stopping = threading.Event()
        self.published = 0  # the highest number produced and acknowledged
        self._last_at = 0.0
        self._last_seq: int | None = None

    def stop(self, *_: Any) -> None:
        self.stopping.set()

    def due(self) -> bool:
        """Rows enough since the last checkpoint, or the interval passed (and anything grew:
        :meth:`take` then finds out, and takes none if nothing did)."""
        if time.monotonic() - self._last_at >= self.interval:
            return True
        with self.db.use("cannot read the delivery log's head") as conn, conn, \
                conn.cursor() as cur:
            # every shard numbers its rows from 1: the heads' seqs add up to the rows logged
            cur.execute("SELECT coalesce(sum(seq), 0) FROM delivery_log_head")
            found = cur.fetchone()
        seq = int(found[0]) if found else 0
        return self._last_seq is not None and seq - self._last_seq >= self.rows

    def take(self) -> Checkpoint | None:
        """Take a checkpoint if a chain moved, and publish every one not yet published."""
        self._last_at = time.monotonic()
        with self.db.use("cannot seal the audit ledger") as conn:
            audit.seal(conn)  # commits on its own: what happened up to now is covered
        with self.db.use("cannot take a checkpoint") as conn, conn:
            cp = checkpoint_store.take(conn, self.private)
        if cp is not None:
            self._last_seq = log_rows(cp.heads)
            self.stats["checkpoints"] += 1
            metrics.CHECKPOINTS.inc()
            log.info("checkpoint %d: %s", cp.number,
                     ", ".join(f"{n} seq {h.seq}" for n, h in sorted(cp.heads.items())))
        elif self._last_seq is None:
            with self.db.use("cannot read the checkpoints") as conn, conn, conn.cursor() as cur:
                last = checkpoint_store.latest(cur)
            self._last_seq = log_rows(last.heads) if last else 0
        self.publish()
        return cp

    def publish(self) -> int:
        """Produce the recorded checkpoints after the last one published; how many."""
        pending = [c for c in checkpoint_store.list_checkpoints(self.dsn, limit=1000)
                   if c.number > self.published]
        errors: list[str] = []

        def answered(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        for cp in pending:
            self.producer.produce(topics.CHECKPOINTS, key=str(cp.number).encode(),
                                  value=orjson.dumps(cp.as_dict()), on_delivery=answered)
        left = self.producer.flush(30)
        if left or errors:
            raise BrokerError(f"checkpoints not acknowledged by the broker: {errors[:2]}")
        if pending:
            self.published = pending[-1].number
            self.stats["published"] += len(pending)
        return len(pending)

    def run(self) -> Counter[str]:
        while not self.stopping.is_set():
            try:
                if self.due():
                    self.take()
            except (DatabaseError, BrokerError) as exc:
                self.stats["retries"] += 1
                log.warning("checkpoint deferred: %s", exc)
                self.stopping.wait(2.0)
            self.stopping.wait(POLL_S)
        self.db.close()
        self.producer.flush(10)
        return self.stats


def main() -> None:
    """``python -m govbus.stream_apps.checkpointer``: run until SIGTERM or SIGINT."""
    serve("checkpointer", lambda: Checkpointer(Settings.from_env()),  # type: ignore[arg-type,return-value]
          lambda c: f"every {c.interval:g} s or {c.rows} rows, to {topics.CHECKPOINTS}")


if __name__ == "__main__":
    main()
