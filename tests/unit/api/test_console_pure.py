"""The console's pure parts: its catalogues complete and compiled, Beijing time, the charts'
geometry, Avro types as clerks read them, and where a sign-in may send the browser."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from babel.support import Translations

from govbus.api.console.pages import _local
from govbus.api.console.pages_reports import bars, flows
from govbus.api.console.web import HERE, LOCALES, avro_type, period, when

ROOT = Path(__file__).resolve().parents[3]


def _extracted() -> set[str]:
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2")]
    options = {"templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    return {m[2] for m in extract_from_dir(str(HERE), method_map, options) if m[2]}


def _catalogue(locale: str):  # type: ignore[no-untyped-def]
    path = HERE / "locale" / locale / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as f:
        return read_po(f, locale=locale)


def test_every_message_of_the_pages_has_its_chinese_translation() -> None:
    zh = _catalogue("zh_CN")
    missing = sorted(m for m in _extracted() if not (zh.get(m) and zh.get(m).string))
    assert missing == [], f"untranslated in zh_CN (run pybabel extract/update): {missing}"


def test_the_compiled_catalogues_are_those_of_the_po_files() -> None:
    for locale in LOCALES:
        compiled = Translations.load(str(HERE / "locale"), [locale], domain="messages")
        for message in _catalogue(locale):
            if message.id and message.string:
                assert compiled.gettext(message.id) == message.string, (
                    f"{locale}: messages.mo is stale (run pybabel compile)")


def test_instants_are_shown_in_beijing_time() -> None:
    instant = dt.datetime(2026, 3, 1, 16, 30, tzinfo=dt.UTC)  # 00:30 on 2 March in Beijing
    assert when(instant, "zh_CN") == "2026年3月2日 00:30:00"
    assert "Mar 2, 2026" in when(instant.isoformat(), "en")
    assert when(None, "en") == ""


def test_bars_scale_to_the_largest_and_leave_nothing_measured_empty() -> None:
    out = bars([("tax", 50.0), ("hrss", 100.0), ("new", None)])
    assert [b["width"] for b in out] == [50.0, 100.0, 0]
    assert bars([("a", 0.0)])[0]["width"] == 0


def test_flows_draw_one_line_per_pair_from_provider_to_recipient() -> None:
    rows = [{"provider": "tax", "recipient": "hrss"}] * 3 + [
        {"provider": "tax", "recipient": "civil_affairs"},
        {"provider": "market_regulation", "recipient": "hrss"}]
    flow = flows(rows)
    assert [name for name, _ in flow["left"]] == ["market_regulation", "tax"]
    assert [name for name, _ in flow["right"]] == ["civil_affairs", "hrss"]
    lines = {(line["from"], line["to"]): line for line in flow["lines"]}
    assert lines[("tax", "hrss")]["count"] == 3
    assert lines[("tax", "hrss")]["width"] > lines[("tax", "civil_affairs")]["width"]
    assert flows([])["lines"] == []


def test_avro_types_read_as_clerks_read_them() -> None:
    assert avro_type("string") == "string"
    assert avro_type(["null", "string"]) == "string?"
    assert avro_type({"type": "array", "items": "string"}) == "array<string>"
    assert avro_type({"type": "int", "logicalType": "date"}) == "date"


def test_a_sign_in_only_returns_to_this_site() -> None:
    assert _local("/requests?x=1") == "/requests?x=1"
    for elsewhere in ("https://evil.example/", "//evil.example/", "", None, "requests"):
        assert _local(elsewhere) == "/"


def test_update_periods_read_in_words() -> None:
    assert period("P1D", "zh_CN") == "1天" and period("P1M", "en") == "1 month"
    assert period("whenever", "en") == "whenever" and period(None, "en") == ""
