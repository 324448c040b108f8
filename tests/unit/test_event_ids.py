"""An event id names one event (Art. 19): the hot path's memory of accepted ids, without a
database (what the batches in flight and recent ones accepted)."""

from __future__ import annotations

from typing import Any

from govbus.stream_apps.event_ids import RULE, EventIds, digest, reused


class Msg:
    def __init__(self, event_id: str | None) -> None:
        self._headers = [("event_id", event_id.encode())] if event_id else []

    def headers(self) -> list[tuple[str, Any]]:
        return self._headers


def test_the_same_record_again_passes_another_record_under_the_id_does_not() -> None:
    ids = EventIds(None)
    ids.prefetch([Msg("e1"), Msg("e1")])
    assert ids.check("e1", b"record one") == digest(b"record one")
    assert ids.check("e1", b"record one") == digest(b"record one")  # a retry, a replay
    assert ids.check("e1", b"record two") is None  # a reuse, in the same batch
    assert ids.check("e2", b"record two") is not None
    ids.prefetch([Msg("e1")])  # a later batch: still known from memory
    assert ids.check("e1", b"record three") is None


def test_memory_is_bounded_and_forgets_the_oldest() -> None:
    ids = EventIds(None, recent=3)
    for n in range(5):
        assert ids.check(f"e{n}", b"x") is not None
    assert list(ids.recent) == ["e2", "e3", "e4"]
    assert ids.check("e0", b"other") is not None  # forgotten here: the table answers for it


def test_the_violation_names_the_rule_the_field_and_the_article() -> None:
    v = reused("e" * 1000)
    assert (v.rule, v.field, v.article) == (RULE, "event_id", "Art. 19")
    assert len(v.message) < 400
