"""What the ``govbus`` command prints: free text escaped for the terminal, JSON escaped as JSON,
every command with its own ``--help``, ``--version``, a closed pipe ending quietly, one
catalogue folder for every command (``--schemas``), and who may hold a credential."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from govbus import cli, cli_access
from govbus.core.catalogue import default_schemas_dir
from govbus.core.errors import GovbusError

GOVBUS = Path(sys.executable).parent / "govbus"


@pytest.mark.parametrize(("raw", "shown"), [
    ("\x1b[2J\x1b]0;pwned\x07", "\\x1b[2J\\x1b]0;pwned\\x07"),  # ESC, OSC title, BEL
    ("ok\rcase 1: resolved", "ok\\rcase 1: resolved"),  # CR: overwrite the line shown
    ("a\nb\tc", "a\\nb\\tc"),  # a forged second line of output
    ("\x9b31m\x9d0;x\x9c", "\\x9b31m\\x9d0;x\\x9c"),  # C1: CSI, OSC, ST in 8-bit form
    ("del\x7f nul\x00", "del\\x7f nul\\x00"),
    ("abc\u202edcba\u2066\u2028", "abc\\u202edcba\\u2066\\u2028"),  # bidi override, separator
])
def test_printable_escapes_what_a_terminal_would_act_on(raw: str, shown: str) -> None:
    assert cli.printable(raw) == shown


def test_printable_leaves_chinese_and_ordinary_text_alone() -> None:
    text = "渝水区人民政府办公室：请核实 王芳 的户籍地址（第19条）。　全角空格 ★ café 1/2"
    assert cli.printable(text) == text
    assert cli.printable(42) == "42"


def test_json_output_escapes_every_control_character_and_keeps_chinese() -> None:
    data = {"note": "核实\x1b[31m\x07\r\n\x9b\x7f\u202e\u2028", "n": 1}
    out = cli.dumps(data)
    assert json.loads(out) == data
    assert "核实" in out
    assert not [c for c in out if c not in "\n" and cli.printable(c) != c], out


def _commands(parser: argparse.ArgumentParser, path: list[str]) -> list[list[str]]:
    found = [path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _commands(child, [*path, name])
    return found


def test_every_command_has_its_own_help(capsys: pytest.CaptureFixture[str]) -> None:
    commands = _commands(cli.build_parser(), [])
    names = {" ".join(c) for c in commands}
    assert {"outbox", "subscribe", "acl plan", "acl apply", "access issue", "publish",
            "request", "catalogue list"} <= names
    for command in commands:
        with pytest.raises(SystemExit) as exit_:
            cli.main([*command, "--help"])
        out = capsys.readouterr().out
        assert exit_.value.code == 0, command
        assert out.startswith(f"usage: {' '.join(['govbus', *command])}"), (command, out[:200])
    assert "--dsn" in _help(["outbox"], capsys) and "--agency" in _help(["subscribe"], capsys)
    assert "--dry-run" in _help(["acl", "apply"], capsys)


def _help(command: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        cli.main([*command, "--help"])
    return capsys.readouterr().out


def test_a_dashdash_after_a_delegating_command_is_dropped(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli._without_dashdash(["subscribe", "--", "--agency", "tax"]) == [
        "subscribe", "--agency", "tax"]
    assert cli._without_dashdash(["publish", "--", "x"]) == ["publish", "--", "x"]
    assert "usage: govbus acl plan" in _help(["acl", "--", "plan"], capsys)


def test_version_is_the_installed_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"govbus {version('govbus')}"


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    proc = subprocess.Popen([str(GOVBUS), "catalogue", "list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # as `| head` does once it has what it wants
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == cli.SIGPIPE_EXIT
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_schemas_folder_is_what_every_command_reads(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cli.SCHEMAS_ENV, raising=False)
    root = tmp_path / "schemas"
    shutil.copytree(default_schemas_dir(), root)
    shutil.rmtree(root / "hrss")
    assert cli.main(["--schemas", str(root), "catalogue", "list", "--json"]) == 0
    listed = {r["resource"] for r in json.loads(capsys.readouterr().out)}
    assert listed and not any(r.startswith("hrss.") for r in listed)
    assert cli.SCHEMAS_ENV not in os.environ  # only while the command runs
    assert cli.main(["--schemas", str(tmp_path / "none"), "catalogue", "list"]) == 1
    assert "--schemas" in capsys.readouterr().err
    monkeypatch.setenv(cli.SCHEMAS_ENV, str(root))
    assert "hrss" not in cli_access.ROLES
    with pytest.raises(GovbusError, match="'hrss' is not an agency of the catalogue"):
        cli_access.holder("hrss")


def test_only_agencies_of_the_catalogue_and_the_roles_get_a_credential() -> None:
    for role in ("information_center", "municipal_office", "tax", "public_security"):
        assert cli_access.holder(role) == role
    with pytest.raises(GovbusError) as refused:
        cli_access.holder("x" * 100_000)
    message = str(refused.value)
    assert len(message) < 400 and "Art. 24" in message
    assert "valid: civil_affairs, hrss, information_center, market_regulation, " \
        "municipal_office, public_security, tax" in message
    with pytest.raises(GovbusError, match=r"'bad\\x1b\[31m' is not"):
        cli_access.holder("bad\x1b[31m")


def test_errors_are_escaped_too(capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    assert cli.main(["access", "issue", "--agency", "evil\x1b]0;title\x07"]) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "evil\\x1b]0;title\\x07" in err
