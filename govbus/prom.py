"""A local Prometheus for the embedded runtime, and the scrape targets of govbus processes.

``govbus up`` gives every long-running process its own free metrics port
(``GOVBUS_METRICS_PORT``), records the ports in ``runtime.json``, and, where a ``prometheus``
binary is installed (Debian: ``apt-get install prometheus``), starts one on a free port with a
configuration generated into the state directory: those targets, the alert rules of
``infra/prometheus/alerts.yml``, its own storage directory. Without the binary the bus runs
as before and ``up`` says how to get one.
"""

from __future__ import annotations

import json
import shutil
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from govbus.core.errors import GovbusError

INFRA = Path(__file__).parent / "infra"  # the package govbus.infra, in a checkout or installed
PROMETHEUS_DIR = INFRA / "prometheus"
ALERT_RULES = PROMETHEUS_DIR / "alerts.yml"
DASHBOARDS = INFRA / "grafana"
Say = Callable[[str], None]


class PrometheusError(GovbusError):
    """The local Prometheus could not be started or queried."""


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def _bound(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_ports(names: Iterable[str], start: int = 19400) -> dict[str, int]:
    """A distinct free port per name (chosen before anything binds them)."""
    ports: dict[str, int] = {}
    port = start
    for name in names:
        while _bound(port) or port in ports.values():
            port += 1
            if port > start + 2000:
                raise GovbusError(f"no free port in {start}..{start + 2000}")
        ports[name] = port
        port += 1
    return ports


def scrape_config(targets: dict[str, int], interval_s: float = 5.0,
                  rule_files: Iterable[Path] = (ALERT_RULES,)) -> str:
    """Prometheus configuration (JSON is valid YAML) scraping ``targets`` on 127.0.0.1."""
    config = {
        "global": {"scrape_interval": f"{interval_s:g}s",
                   "evaluation_interval": f"{interval_s:g}s"},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [{
            "job_name": "govbus",
            "static_configs": [{"targets": [f"127.0.0.1:{port}"],
                                "labels": {"component": name}}
                               for name, port in sorted(targets.items())]}],
    }
    return json.dumps(config, indent=2)


def start_prometheus(base: Path, targets: dict[str, int], port: int,
                     interval_s: float = 5.0) -> tuple[str, int]:
    """Start Prometheus on ``port`` with its config and storage under ``base``.

    Returns (url, pid). Raises PrometheusError when no binary is installed or it won't start.
    """
    from govbus.runtime import pid_alive, spawn, stop_pid, wait_for

    binary = prometheus_binary()
    if binary is None:
        raise PrometheusError("no `prometheus` binary on PATH (Debian: apt-get install "
                              "prometheus)")
    base.mkdir(parents=True, exist_ok=True)
    config = base / "prometheus.yml"
    config.write_text(scrape_config(targets, interval_s))
    log = base / "prometheus.log"
    pid = spawn([binary, f"--config.file={config}", f"--storage.tsdb.path={base / 'data'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle",
                 "--storage.tsdb.retention.time=15d"], log)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if not pid_alive(pid):
            raise PrometheusError(f"prometheus exited at start; see {log}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    try:
        wait_for(ready, 60, f"prometheus on port {port}", step=0.2)
    except GovbusError:
        stop_pid(pid)  # leave nothing behind that nobody recorded
        raise
    return url, pid


def query(url: str, expr: str, timeout: float = 10.0) -> dict[str, Any]:
    """Evaluate an instant PromQL query; the decoded ``/api/v1/query`` answer."""
    full = f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        with urllib.request.urlopen(full, timeout=timeout) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:  # 400/422: bad expression, the body says why
        body = json.loads(exc.read() or b"{}")
        return {"status": "error", "error": body.get("error", str(exc)),
                "errorType": body.get("errorType")}
    except (urllib.error.URLError, OSError) as exc:
        raise PrometheusError(f"cannot query {url}: {exc}") from exc


def value(url: str, expr: str) -> float | None:
    """The single value of a scalar-like query (``sum(...)``), None when it has no samples."""
    answer = query(url, expr)
    if answer.get("status") != "success":
        raise PrometheusError(f"{expr}: {answer.get('error')}")
    result = answer["data"]["result"]
    if not result:
        return None
    return float(result[0]["value"][1])


def dashboard_queries(path: Path) -> list[tuple[str, str]]:
    """Every (panel title, expr) of a Grafana dashboard JSON, rows and nested panels too."""
    found: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append((str(panel.get("title")), str(target["expr"])))
            walk(panel.get("panels", []))

    walk(json.loads(path.read_text()).get("panels", []))
    return found


def up_local(state: dict[str, Any], base: Path, say: Say) -> None:
    """For ``govbus up``: start a local Prometheus over ``state['metrics']`` if installed."""
    if prometheus_binary() is None:
        say("prometheus: not installed (apt-get install prometheus), metrics still served on "
            + ", ".join(f"{n}:{p}" for n, p in sorted(state.get("metrics", {}).items())))
        return
    port = free_ports(["prometheus"], start=19090)["prometheus"]
    try:
        url, pid = start_prometheus(base / "prometheus", state.get("metrics", {}), port)
    except GovbusError as exc:  # the bus runs without it; say why
        say(f"prometheus: not started ({exc}); the processes still serve /metrics")
        return
    state["prometheus"] = {"pid": pid, "url": url, "port": port}
    say(f"prometheus: {url} (pid {pid}, scraping {len(state.get('metrics', {}))} targets "
        "every 5 s)")
