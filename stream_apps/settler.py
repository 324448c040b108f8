"""The hot path's settling process: a child of each hot-path worker that writes, per batch,
the delivery log, ``entity_state``, the gate's counts and the quarantined payloads.

Why a process: the worker is bound by its interpreter lock. Rendering and chaining the log
rows and the writes around them took a quarter of the time the lock was held (py-spy
``--gil``), time the thread that judges and routes the next batch spent waiting. In
a process of its own that work runs beside the worker on another core; what crosses over is
plain tuples and two JSON strings (about 0.3 µs per log entry to pickle).

The protocol is one request, one reply, over a socket pair (length-prefixed pickles; the
socket is private to the two processes):

- the worker sends the DSN first (never on a command line), then one :class:`Batch` per
  batch, in commit order, and waits for its reply before it commits the batch's offsets;
- the child writes the log (:func:`govbus.consumers.delivery_log.append`) while a second thread
  writes ``entity_state`` and the counts, each on its own connection, and replies
  ``("ok", written, duplicates)``, ``("failed", why)`` (PostgreSQL: the worker rewinds and
  retries the batch) or ``("crashed", why)`` (a bug: the worker stops, as it would have);
- the child ignores SIGINT (a ^C reaches the whole process group; the worker decides when to
  stop) and ends when the worker closes its end, also when the worker was killed.

A child that died is noticed at the next request (the socket reports it), reported as a
:class:`DatabaseError` so that the batch is replayed, and started again with the retry.
"""

from __future__ import annotations

import logging
import pickle
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from govbus.consumers.delivery_chain import Delivery as LogEntry
from govbus.consumers.delivery_log import LogWriter
from govbus.core import quarantine
from govbus.core.batching import tune_gc
from govbus.core.errors import DatabaseError
from govbus.core.event_counts import CountWriter, Judged
from govbus.stream_apps import event_ids
from govbus.stream_apps.router import StateRows, StateWriter

log = logging.getLogger("govbus.settler")
_LENGTH = struct.Struct(">Q")
STOP_TIMEOUT_S = 30.0


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


def send(sock: socket.socket, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=5)
    sock.sendall(_LENGTH.pack(len(data)) + data)


def receive(sock: socket.socket) -> Any:
    """The next object; EOFError when the other end closed."""
    (size,) = _LENGTH.unpack(_exactly(sock, _LENGTH.size))
    return pickle.loads(_exactly(sock, size))


def _exactly(sock: socket.socket, size: int) -> bytearray:
    buf = bytearray(size)
    view, got = memoryview(buf), 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise EOFError("the other end closed the connection")
        got += n
    return buf


class Settler:
    """The worker's end: starts the child on first use, one request at a time (the hot
    path's writer thread settles batch after batch)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _start(self) -> socket.socket:
        ours, theirs = socket.socketpair()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "govbus.stream_apps.settler", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        except OSError as exc:
            ours.close()
            raise DatabaseError(f"cannot start the settling process: {exc}") from exc
        finally:
            theirs.close()
        self._sock = ours
        send(ours, self.dsn)
        return ours

    def settle(self, batch: Batch) -> Settled:
        """Write ``batch``; returns what the log took. DatabaseError if PostgreSQL failed or
        the child is gone (a new one starts with the next call)."""
        sock = self._sock or self._start()
        try:
            send(sock, batch)
            reply = receive(sock)
        except (OSError, EOFError) as exc:
            code = self._reap()
            raise DatabaseError(f"the settling process ended (exit status {code}) before "
                                f"it settled the batch: {exc}") from exc
        if reply[0] == "ok":
            return Settled(reply[1], reply[2])
        if reply[0] == "failed":
            raise DatabaseError(reply[1])
        raise RuntimeError(f"the settling process failed: {reply[1]}")

    def _reap(self) -> int | None:
        """Close our end and wait for the child (killed if it does not go)."""
        sock, proc, self._sock, self._proc = self._sock, self._proc, None, None
        if sock is not None:
            sock.close()  # the child reads EOF and ends
        if proc is None:
            return None
        try:
            return proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("settling process %d did not end in %.0f s; killing it", proc.pid,
                        STOP_TIMEOUT_S)
            proc.kill()
            return proc.wait()

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
        try:
            logged = self.log.append([LogEntry._make(e) for e in batch.entries]) \
                if batch.entries else None
        finally:
            kept.result()
        return Settled(logged.written, logged.duplicates) if logged else Settled(0, 0)

    def _keep(self, batch: Batch) -> None:
        self.state.apply(batch.state)
        self.counts.write([Judged._make(j) for j in batch.judged])
        self.quarantine.write(batch.quarantined)
        self.ids.write(batch.accepted_ids)

    def close(self) -> None:
        self._side.shutdown()
        for writer in (self.log, self.state, self.counts, self.quarantine, self.ids):
            writer.close()


def serve(sock: socket.socket) -> None:
    """Answer the worker's requests until it closes its end."""
    writers = _Writers(receive(sock))
    tune_gc()
    try:
        while True:
            try:
                batch = receive(sock)
            except EOFError:
                return
            try:
                reply: tuple[Any, ...] = ("ok", *writers.settle(batch))
            except DatabaseError as exc:
                reply = ("failed", str(exc))
            except Exception as exc:  # a bug: the worker stops on it, as it did in-process
                log.exception("settling a batch failed")
                reply = ("crashed", f"{type(exc).__name__}: {exc}")
            send(sock, reply)
    finally:
        writers.close()


def main(argv: list[str] | None = None) -> None:
    """``python -m govbus.stream_apps.settler FD``: started by :class:`Settler` only."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        raise SystemExit("usage: python -m govbus.stream_apps.settler FD (started by a hot-path "
                         "worker, which passes it its end of a socket pair)")
    with socket.socket(fileno=int(args[0])) as sock:
        try:
            serve(sock)
        except (BrokenPipeError, ConnectionResetError, EOFError):
            pass  # the worker is gone: nothing is left to answer


if __name__ == "__main__":
    main()
