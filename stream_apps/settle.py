"""The settle step: a child process of each hot-path worker that writes, per batch, the
delivery log, ``entity_state``, the gate's counts, the quarantined payloads and the accepted
event ids.

Why a process: the worker is bound by its interpreter lock. Rendering and chaining the log
rows and the writes around them took a quarter of the time the lock was held (py-spy
``--gil``), time the thread that judges and routes the next batch spent waiting. In a process
of its own that work runs beside the worker on another core; what crosses over is plain
tuples and two JSON strings.

One request, one reply, over a :func:`multiprocessing.Pipe` to a child started with the
``spawn`` method (it inherits no broker connection, thread or lock of the worker):

- the worker sends the DSN first (never on a command line), then one :class:`Batch` per
  batch, in commit order, and waits for its reply before it commits the batch's offsets
  (:class:`govbus.core.batching.Pipelined` calls :meth:`Settler.settle` in that order);
- the child writes the log (:meth:`govbus.delivery_log.LogWriter.append`) while a second
  thread writes ``entity_state``, the counts, the quarantine and the event ids, each on its
  own connection, and replies ``("ok", written, duplicates, waited_s)`` (``waited_s``: how
  long the log writer waited for its shards' locks, other writers of the same shards),
  ``("failed", why)`` (PostgreSQL: the worker rewinds and retries the batch) or
  ``("crashed", why)`` (a bug: the worker stops, as it would have);
- the child ignores SIGINT (a ^C reaches the whole process group; the worker decides when to
  stop) and ends when the worker closes its end of the pipe, also when the worker was killed
  (only the worker holds that end).

A child that died is noticed at the next request (the pipe reports it), reported as a
:class:`DatabaseError` so that the batch is replayed, and started again with the retry.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

from govbus.core import quarantine
from govbus.core.batching import tune_gc
from govbus.core.entity_state import StateRows, StateWriter
from govbus.core.errors import DatabaseError
from govbus.core.event_counts import CountWriter, Judged
from govbus.delivery_log import LogEntry, LogWriter
from govbus.stream_apps import event_ids

log = logging.getLogger("govbus.settle")
STOP_TIMEOUT_S = 30.0
_SPAWN = multiprocessing.get_context("spawn")


class Batch(NamedTuple):
    """What one batch leaves to settle: its log entries and verdicts as plain tuples (the
    fields of :class:`LogEntry` and :class:`Judged`, which pickle five times faster than the
    named tuples) and its ``entity_state`` rows."""

    entries: list[tuple[Any, ...]]
    state: StateRows
    judged: list[tuple[Any, ...]]
    quarantined: Sequence[tuple[Any, ...]] = ()  # quarantine.Row: rejected or set aside, whole
    accepted_ids: Sequence[tuple[str, bytes, str]] = ()  # event_ids.Row


class Settled(NamedTuple):
    written: int
    duplicates: int
    waited_s: float = 0.0  # the log writer's wait for its shards' locks
    log_s: float = 0.0  # the log writer's time for the batch, its wait included (wall clock)


class Settler:
    """The worker's end: starts the child on first use, one request at a time (the hot
    path's pipeline settles batch after batch, in one thread)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._proc: Any = None  # multiprocessing's SpawnProcess
        self._conn: Connection | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _start(self) -> Connection:
        ours, theirs = _SPAWN.Pipe()
        proc = _SPAWN.Process(target=child, args=(theirs,), name="govbus-settle", daemon=True)
        try:
            proc.start()
        except OSError as exc:
            ours.close()
            raise DatabaseError(f"cannot start the settling process: {exc}") from exc
        finally:
            theirs.close()  # the child's end, now in the child only: it reads EOF when we go
        self._proc, self._conn = proc, ours
        ours.send(self.dsn)
        return ours

    def settle(self, batch: Batch) -> Settled:
        """Write ``batch``; returns what the log took. DatabaseError if PostgreSQL failed or
        the child is gone (a new one starts with the next call)."""
        conn = self._conn or self._start()
        try:
            conn.send(batch)
            reply = conn.recv()
        except (OSError, EOFError) as exc:
            code = self._reap()
            raise DatabaseError(f"the settling process ended (exit status {code}) before "
                                f"it settled the batch: {exc}") from exc
        if reply[0] == "ok":
            return Settled(*reply[1:])
        if reply[0] == "failed":
            raise DatabaseError(reply[1])
        raise RuntimeError(f"the settling process failed: {reply[1]}")

    def _reap(self) -> int | None:
        """Close our end and wait for the child (killed if it does not go)."""
        conn, proc, self._conn, self._proc = self._conn, self._proc, None, None
        if conn is not None:
            conn.close()  # the child reads EOF and ends
        if proc is None:
            return None
        proc.join(STOP_TIMEOUT_S)
        if proc.exitcode is None:
            log.warning("settling process %d did not end in %.0f s; killing it", proc.pid,
                        STOP_TIMEOUT_S)
            proc.kill()
            proc.join()
        code: int | None = proc.exitcode
        proc.close()
        return code

    def close(self) -> None:
        self._reap()


# --- the child ------------------------------------------------------------------------------

class _Writers:
    """The child's three writers, each on its own connection; the log is written while a
    second thread writes ``entity_state`` and the counts."""

    def __init__(self, dsn: str) -> None:
        self.log, self.state, self.counts = LogWriter(dsn), StateWriter(dsn), CountWriter(dsn)
        self.quarantine = quarantine.Writer(dsn)
        self.ids = event_ids.Writer(dsn)
        self._side = ThreadPoolExecutor(1, thread_name_prefix="settler-state")

    def settle(self, batch: Batch) -> Settled:
        kept = self._side.submit(self._keep, batch)
        started = time.perf_counter()
        try:
            logged = self.log.append([LogEntry._make(e) for e in batch.entries]) \
                if batch.entries else None
            spent = time.perf_counter() - started
        finally:
            kept.result()
        return Settled(logged.written, logged.duplicates, logged.waited_s, spent) if logged \
            else Settled(0, 0)

    def _keep(self, batch: Batch) -> None:
        self.state.apply(batch.state)
        self.counts.write([Judged._make(j) for j in batch.judged])
        self.quarantine.write(batch.quarantined)
        self.ids.write(batch.accepted_ids)

    def close(self) -> None:
        self._side.shutdown()
        for writer in (self.log, self.state, self.counts, self.quarantine, self.ids):
            writer.close()


def serve(conn: Connection) -> None:
    """Answer the worker's requests until it closes its end."""
    writers = _Writers(conn.recv())
    tune_gc()
    try:
        while True:
            try:
                batch = conn.recv()
            except EOFError:
                return
            try:
                reply: tuple[Any, ...] = ("ok", *writers.settle(batch))
            except DatabaseError as exc:
                reply = ("failed", str(exc))
            except Exception as exc:  # a bug: the worker stops on it, as it did in-process
                log.exception("settling a batch failed")
                reply = ("crashed", f"{type(exc).__name__}: {exc}")
            conn.send(reply)
    finally:
        writers.close()


def child(conn: Connection) -> None:
    """The settling process's main function (started by :class:`Settler` only)."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        serve(conn)
    except (BrokenPipeError, ConnectionResetError, EOFError):
        pass  # the worker is gone: nothing is left to answer
    finally:
        conn.close()
