"""Stale PostgreSQL lock files (a dead or zombie postmaster's) are removed before a restart;
a live process's are kept."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from govbus.runtime import clear_stale_locks


def lock(pgdata: Path, name: str, pid: int) -> Path:
    path = pgdata / name
    path.write_text(f"{pid}\n{pgdata}\n1795604862\n5432\n")
    return path


def test_locks_of_dead_and_zombie_pids_are_removed_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()                                   # reaped: the pid is gone
    zombie = subprocess.Popen(["true"])           # exits, not reaped yet: a zombie of ours
    os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)
    stale = [lock(tmp_path, "postmaster.pid", dead.pid),
             lock(tmp_path, ".s.PGSQL.5432.lock", zombie.pid)]
    live = lock(tmp_path, ".s.PGSQL.5433.lock", os.getpid())
    (tmp_path / ".s.PGSQL.5434.lock").write_text("not a pid\n")

    assert sorted(clear_stale_locks(tmp_path)) == sorted(stale)
    assert not any(p.exists() for p in stale)
    assert live.exists() and (tmp_path / ".s.PGSQL.5434.lock").exists()
    zombie.wait()
