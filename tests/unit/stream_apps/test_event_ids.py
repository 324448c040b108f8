"""An event id names one event (Art. 19): the hot path's memory of accepted ids, without a
database (what the batches in flight and recent ones accepted)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from govbus.stream_apps.event_ids import RULE, EventIds, _varint_length, digest, reused


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


def test_the_same_change_published_again_with_a_new_ts_ms_is_the_same_event() -> None:
    from govbus.core.catalogue import load_catalogue
    from govbus.core.envelope import envelope_schema, make_event
    from govbus.core.serde import Codec, frame

    resource = load_catalogue().resources["tax.tax_registration"]
    schema = envelope_schema(resource)
    assert schema["fields"][-1]["name"] == "ts_ms", "the digest leaves out the last field"
    codec = Codec(schema)
    base = dict(make_event(resource, version=1, op="d", record=None, before=None,
                           agency="tax", locality="360502", event_id="e1", occurred_ms=5))
    encoded = {}
    for ts_ms in (0, 63, 64, 1_700_000_000_000, 2**62):
        encoded[ts_ms] = frame(7, codec.encode({**base, "ts_ms": ts_ms}))
    digests = {digest(v, ts) for ts, v in encoded.items()}
    assert len(digests) == 1
    other = frame(7, codec.encode({**base, "occurred_ms": 6, "ts_ms": 64}))
    assert digest(other, 64) not in digests


@given(st.integers(-2**63, 2**63 - 1))
def test_the_varint_length_is_what_avro_writes(value: int) -> None:
    import io

    import fastavro
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, {"type": "long"}, value)
    assert _varint_length(value) == len(buf.getvalue())
