"""The delivery log's canonical form (orjson) is byte for byte what the standard
library wrote before: every hash in an existing chain still verifies."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from govbus.delivery_log.chain import FIELDS, canonical

texts = st.text()
row_values = st.none() | st.integers(-2**63, 2**63 - 1) | texts | st.lists(texts, max_size=5)


def reference(content: dict[str, Any]) -> bytes:
    return json.dumps(content, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


@given(st.fixed_dictionaries({name: row_values for name in (*FIELDS, "seq", "logged_us")}))
def test_canonical_is_the_standard_librarys_bytes(content: dict[str, Any]) -> None:
    assert canonical(content) == reference(content)


def test_chinese_names_stay_unescaped() -> None:
    assert canonical({"recipient": "人社局", "seq": 1}) == '{"recipient":"人社局","seq":1}'.encode()
