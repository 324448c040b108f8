"""``govbus calendar check``: the source of a year, its days, exit 3 when nobody covers it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from govbus.cli import main
from govbus.core import workdays
from tests.unit.core.test_workdays import _calendar  # noqa: F401  (autouse: a fresh calendar)

EXAMPLE = Path(__file__).resolve().parents[3] / "infra" / "holidays.example.json"
#: a made-up year far ahead (2099-05-01 is a Friday, 2099-05-09 a Saturday)
SYNTHETIC = {"years": {"2099": {"notice": "test data, not a notice",
                                "holidays": [{"name": "劳动节", "from": "2099-05-01",
                                              "to": "2099-05-05"}],
                                "makeup_workdays": [{"date": "2099-05-09", "name": "劳动节"}]}}}


def test_a_library_year(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calendar", "check", "--year", "2026"]) == 0
    out = capsys.readouterr().out
    assert "2026: covered by chinese-calendar" in out
    assert "National Day: 2026-10-01 Thu – 2026-10-07 Wed (7 days)" in out
    assert "2026-02-14 Sat  Spring Festival" in out
    assert "working days 工作日: 248 of 365" in out


def test_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calendar", "check", "--year", "2026", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["source"] == "library" and report["covered"] is True
    assert report["working_days"] == 248 and report["weekdays_off"] == 19
    assert {"date": "2026-10-10", "weekday": "Sat", "name": "National Day"} in \
        report["makeup_workdays"]
    # the year in the file's format: the example file's 2026, names aside
    example = json.loads(EXAMPLE.read_text(encoding="utf-8"))["years"]["2026"]
    strip = [{k: v for k, v in h.items() if k != "name"} for h in example["holidays"]]
    assert [{k: v for k, v in h.items() if k != "name"}
            for h in report["file_entry"]["holidays"]] == strip


def test_a_year_nobody_covers_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calendar", "check", "--year", "2099"]) == 3
    out = capsys.readouterr().out
    assert "2099: 未覆盖 NOT COVERED" in out and "GOVBUS_HOLIDAYS_FILE not set" in out
    assert main(["calendar", "check", "--year", "2099", "--json"]) == 3
    report = json.loads(capsys.readouterr().out)
    assert report["source"] == "none" and report["covered"] is False
    assert report["holidays"] == [] and report["working_days"] == 261  # Monday to Friday


def test_the_configured_file_covers_its_year(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "holidays.json"
    path.write_text(json.dumps(SYNTHETIC, ensure_ascii=False), encoding="utf-8")
    monkeypatch.setenv(workdays.HOLIDAYS_FILE_ENV, str(path))
    workdays.reset_calendar()
    assert main(["calendar", "check", "--year", "2099"]) == 0
    out = capsys.readouterr().out
    assert f"2099: covered by the holiday file {path} — test data, not a notice" in out
    assert "劳动节: 2099-05-01 Fri – 2099-05-05 Tue (5 days)" in out
    assert "2099-05-09 Sat  劳动节" in out
    # 261 weekdays, 3 of them off (1, 4, 5 May), 1 Saturday worked
    assert "working days 工作日: 259 of 365" in out
    assert main(["calendar", "check", "--year", "2026", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["source"] == "library"


def test_file_option_checks_a_file_before_it_is_installed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calendar", "check", "--year", "2026", "--file", str(EXAMPLE), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["source"] == "file" and report["file"] == str(EXAMPLE)
    assert report["working_days"] == 248
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"years": {"2099": {
        "holidays": [{"name": "劳动节", "date": "2099-05-01"}],
        "makeup_workdays": [{"date": "2099-05-04", "name": "劳动节"}]}}}), encoding="utf-8")
    assert main(["calendar", "check", "--year", "2099", "--file", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "govbus: error: holiday file" in err
    assert "makeup_workdays[0] 2099-05-04: a make-up working day is a Saturday or Sunday" in err
