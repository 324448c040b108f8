"""Shared helpers for integration tests: wait on conditions, read topics, run a stage."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from confluent_kafka import Consumer, Message

from govbus.core.config import Settings
from govbus.core.kafka import consumer_config


def wait_until(cond: Callable[[], Any], timeout: float, what: str, step: float = 0.1) -> Any:
    """Poll ``cond`` until truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class TopicReader:
    """Reads topics from the beginning into ``messages``; call :meth:`poll` repeatedly."""

    def __init__(self, settings: Settings, topics: list[str]) -> None:
        self.consumer = Consumer(consumer_config(settings, f"test-{uuid.uuid4().hex[:8]}"))
        self.consumer.subscribe(topics)
        self.messages: list[Message] = []

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
