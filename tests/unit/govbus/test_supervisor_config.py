"""supervisord's config for the stream apps, and the event listener that counts restarts: a
start after an exit, a back-off or FATAL is a restart; a start from STOPPED is not."""

from __future__ import annotations

import configparser
import json
import subprocess
import sys
from pathlib import Path

import pytest

from govbus.core.errors import ConfigError
from govbus.runtime import LISTENER, STREAM_APPS, SUPERVISED, socket_path, supervisor_config


def event(serial: int, process: str, from_state: str) -> str:
    payload = f"processname:{process} groupname:{process} from_state:{from_state} tries:0"
    return (f"ver:3.0 server:supervisor serial:{serial} pool:{LISTENER} poolserial:{serial} "
            f"eventname:PROCESS_STATE_STARTING len:{len(payload)}\n{payload}")


def listen(path: Path, events: list[str]) -> str:
    out = subprocess.run([sys.executable, "-m", "govbus.runtime", "count-restarts", str(path)],
                         input="".join(events), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_listener_counts_starts_after_exit_backoff_and_fatal_not_from_stopped(
        tmp_path: Path) -> None:
    counts = tmp_path / "restarts.json"
    out = listen(counts, [event(1, "hotpath", "STOPPED"), event(2, "reconciler", "STOPPED"),
                          event(3, "reconciler", "EXITED"), event(4, "reconciler", "BACKOFF"),
                          event(5, "hotpath", "FATAL")])
    assert out.count("READY\n") == 6 and out.count("RESULT 2\nOK") == 5  # the protocol
    assert json.loads(counts.read_text()) == {"reconciler": 2, "hotpath": 1}
    listen(counts, [event(6, "reconciler", "EXITED")])  # a restarted listener counts on
    assert json.loads(counts.read_text()) == {"reconciler": 3, "hotpath": 1}


def test_config_runs_every_app_with_autorestart_its_env_and_a_percent_escaped(
        tmp_path: Path) -> None:
    base = tmp_path / "st%ate"
    env = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:19092",
           "DATABASE_URL": "postgresql://u:p%40ss@/govbus?host=/x"}
    text = supervisor_config(base, env, {"hotpath": 19400})
    ini = configparser.RawConfigParser()
    ini.read_string(text)
    programs = {s.split(":", 1)[1] for s in ini.sections() if s.startswith("program:")}
    assert programs == set(STREAM_APPS)
    hot = ini["program:hotpath"]
    assert hot["autorestart"] == "true" and int(hot["startretries"]) > 0
    assert hot["command"].endswith(f"-m {STREAM_APPS['hotpath']}")
    assert 'DATABASE_URL="postgresql://u:p%%40ss@/govbus?host=/x"' in hot["environment"]
    assert f'{SUPERVISED}="{str(base).replace("%", "%%")}"' in hot["environment"]
    assert 'GOVBUS_METRICS_PORT="19400"' in hot["environment"]
    assert "GOVBUS_METRICS_PORT" not in ini["program:reconciler"]["environment"]
    assert ini[f"eventlistener:{LISTENER}"]["events"] == "PROCESS_STATE_STARTING"
    assert ini["unix_http_server"]["chmod"] == "0700"


def test_a_value_with_a_double_quote_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL contains a double quote"):
        supervisor_config(tmp_path, {"DATABASE_URL": 'postgresql://"x"@/db'}, {})


def test_socket_path_stays_short_enough_for_a_unix_socket(tmp_path: Path) -> None:
    assert socket_path(tmp_path) == tmp_path / "supervisor.sock"
    deep = tmp_path / ("d" * 120)
    assert len(str(socket_path(deep)).encode()) < 100
    assert socket_path(deep) == socket_path(deep) != socket_path(tmp_path / ("e" * 120))
