"""The deliveries' JSON encoder (orjson) writes the very bytes the standard
library wrote before: recipients and the delivery log see no change in format."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from govbus.core.serde import json_bytes


def reference(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                      default=lambda o: o.hex() if isinstance(o, bytes) else str(o)).encode()


avro_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12)


@given(avro_values)
def test_same_bytes_as_the_standard_library(value: Any) -> None:
    assert json_bytes(value) == reference(value)


def test_a_delivery_with_chinese_text_masking_and_bytes() -> None:
    delivery = {"event_id": "e-1", "record": {"name": "王芳", "phone": "139******78",
                                              "photo": b"\x00\xff", "capital": 5000000,
                                              "schemes": ["pension", "medical"]},
                "before": None, "masked_fields": ["phone"]}
    assert json_bytes(delivery) == reference(delivery)
    assert json.loads(json_bytes(delivery))["record"]["photo"] == "00ff"
