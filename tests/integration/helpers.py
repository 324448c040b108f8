"""Shared helpers for integration tests: wait on conditions, read topics, run a stage."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from confluent_kafka import Consumer, Message, Producer

from govbus.core import access, db
from govbus.core.config import Settings
from govbus.core.deliveries import Decoder, database_lookup
from govbus.core.errors import ConfigError
from govbus.core.kafka import consumer_config, producer_config
from govbus.core.keyring import agency_signer
from govbus.core.signatures import Signer

#: ports a test process searches from are shifted by this much per pytest-xdist worker
#: (``PYTEST_XDIST_WORKER`` gw0, gw1, …), so that two workers never race for one port
WORKER_PORT_STRIDE = 1000


def worker_port(start: int) -> int:
    """``start`` for this test process: shifted past every other worker's ports."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    number = int(worker[2:]) if worker[2:].isdigit() else 0
    return start + WORKER_PORT_STRIDE * number


TOKENS: dict[tuple[str, str], str] = {}
CREDENTIALS: dict[str, bytes | None] = {}  # token -> the stored hash it was issued with


def token(database_url: str, agency: str) -> str:
    """``agency``'s credential (Art. 24), issued once per database for these tests, and again
    when a test of another module issued the agency a new one since (the old one is then
    void): modules run in any order on a pytest-xdist worker."""
    held = TOKENS.get((database_url, agency))
    if held is None or _credential(database_url, agency) != CREDENTIALS.get(held):
        held = TOKENS[(database_url, agency)] = access.issue(database_url, agency, "test")
        CREDENTIALS[held] = _credential(database_url, agency)
    return held


def _credential(database_url: str, agency: str) -> bytes | None:
    """The stored hash of ``agency``'s credential: another once a token is issued again."""
    with db.transaction(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT token_hash FROM agency_credentials WHERE agency = %s", (agency,))
        row = cur.fetchone()
    return bytes(row[0]) if row else None


def wait_until(cond: Callable[[], Any], timeout: float, what: str, step: float = 0.1) -> Any:
    """Poll ``cond`` until truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


_decoders: dict[str, Decoder] = {}


def delivered(msg: Message | bytes | None, dsn: str) -> Any:
    """A delivery's value as a subscriber decodes it (framed Avro by its schema id in the
    bus's database ``dsn``, or JSON); any other record's JSON."""
    payload = msg if isinstance(msg, bytes) or msg is None else msg.value()
    if not payload or payload[:1] != b"\x00":
        return json.loads(payload or b"null")
    decoder = _decoders.get(dsn)
    if decoder is None:
        decoder = _decoders[dsn] = Decoder(database_lookup(dsn))
    return decoder(payload)


class TopicReader:
    """Reads topics from the beginning into ``messages``; call :meth:`poll` repeatedly."""

    def __init__(self, settings: Settings, topics: list[str]) -> None:
        self.consumer = Consumer(consumer_config(settings, f"test-{uuid.uuid4().hex[:8]}"))
        self.consumer.subscribe(topics)
        self.messages: list[Message] = []
        self.dsn = settings.database_url

    def value(self, msg: Message) -> Any:
        """A message's value, decoded as :func:`delivered` does."""
        return delivered(msg, self.dsn)

    def poll(self) -> list[Message]:
        for msg in self.consumer.consume(500, 0.2):
            if not msg.error():
                self.messages.append(msg)
        return self.messages

    def until(self, count: int, timeout: float = 30.0) -> list[Message]:
        wait_until(lambda: len(self.poll()) >= count, timeout, f"{count} messages")
        return self.messages

    def close(self) -> None:
        self.consumer.close()


@contextmanager
def running(stage: Any) -> Iterator[Any]:
    """``stage.run()`` in a daemon thread for the ``with`` block; stopped and joined after."""
    thread = threading.Thread(target=stage.run, daemon=True)
    thread.start()
    try:
        yield stage
    finally:
        stage.stop()
        thread.join(30)
    assert not thread.is_alive(), f"{type(stage).__name__} did not stop"


class SignedProducer:
    """A raw producer whose records are signed, at :meth:`flush`, by the sample key of the
    agency their topic names (``ingest.<agency>.…``), as an agency's producer signs what it
    sends: for tests that put bad *contents* before the gate. A topic naming an agency without
    a key is produced unsigned."""

    def __init__(self, settings: Settings, conf: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self.producer = Producer(conf or producer_config(settings))
        self.held: list[tuple[str, Any, Any, list[tuple[str, bytes]]]] = []

    def produce(self, topic: str, key: Any = None, value: Any = None, headers: Any = None
                ) -> None:
        pairs = headers.items() if isinstance(headers, dict) else headers or []
        self.held.append((topic, key, value, [(n, v.encode() if isinstance(v, str) else v)
                                              for n, v in pairs]))

    def signs(self, topic: str) -> bool:
        """Whether a record of ``topic`` is signed (its agency holds a sample key)."""
        return self._signer(topic) is not None

    def _signer(self, topic: str) -> Signer | None:
        parts = topic.split(".")
        try:
            return agency_signer(self.settings, parts[1]) if len(parts) > 1 else None
        except ConfigError:
            return None

    def flush(self, timeout: float = 30.0) -> int:
        held, self.held = self.held, []
        for topic, key, value, headers in held:
            as_bytes = key.encode() if isinstance(key, str) else key
            data = value.encode() if isinstance(value, str) else value
            event_id = dict(headers).get("event_id")
            if isinstance(event_id, str):
                event_id = event_id.encode()
            signer = self._signer(topic)
            extra = signer.sign([(topic, as_bytes, data, event_id)])[0] if signer else []
            sent: list[tuple[str, str | bytes | None]] = [*headers, *extra]
            self.producer.produce(topic, key=as_bytes, value=data, headers=sent)
        return int(self.producer.flush(timeout))


def commitment(dsn: str, agency: str, resources: list[str] | str, *,
               kind: str = "security", valid_for: dt.timedelta = dt.timedelta(days=365),
               number: str | None = None, purpose: str = "statutory duties (tests)") -> str:
    """Register a signed security commitment (or, with ``kind="confidentiality"``, an
    agreement) of ``agency`` covering ``resources`` (Art. 24, 25); its number."""
    from govbus.core import commitments_store

    prefix = "SC" if kind == "security" else "CA"
    number = number or f"{prefix}-{agency}-{uuid.uuid4().hex[:8]}"
    now = dt.datetime.now(dt.UTC)
    commitments_store.register(
        dsn, number, kind, agency, [resources] if isinstance(resources, str) else resources,
        purpose, now.date(), now + valid_for, "0" * 64, agency)
    return number
