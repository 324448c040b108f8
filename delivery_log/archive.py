"""Offline archives of the delivery log: a self-contained file that verifies with no database
and no broker, and the monthly archiving that lets the log stop growing (Art. 24, 26, 31).

An archive is JSON lines: a header (the seq range, the hash the first row links to), every
row of the range, every checkpoint whose delivery-log head lies in it, and the information
center's public keys. :func:`verify_file` recomputes each row's hash and link from the header's
anchor, checks every checkpoint's signature (against pinned keys when given, else the
archive's own) and binds the rows to the checkpointed hashes; the first break is named by seq.

:func:`archive_month` exports the oldest month still in the database, verifies the file, and
only when every row of it is covered by a checkpoint deletes those rows and records the
boundary in ``log_archives`` (the last seq and hash archived, the file's digest), in one
transaction. :func:`govbus.delivery_log.store.verify` then starts from that boundary, and says
which archives hold the rows before it. Rows are archived by seq range, not by a partitioned
table: the unique key that makes a replayed delivery log once, (event_id, recipient,
channel), could not hold across partitions (docs/adr/0009-archiving-the-log-by-seq-range.md).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson
import psycopg2
import psycopg2.extensions

from govbus.core import db, signatures
from govbus.core.errors import DatabaseError, GovbusError
from govbus.core.signatures import Ed25519PublicKey
from govbus.delivery_log.chain import (
    GENESIS,
    ChainChecker,
    Head,
    LoggedRow,
    MalformedEntry,
    VerifyReport,
)
from govbus.delivery_log.checkpoints import (
    DELIVERIES,
    SIGNER,
    Binder,
    Checkpoint,
    check_series,
    from_dict,
)

FORMAT = "govbus-log-archive"
VERSION = 1
_FIELDS = LoggedRow._fields


class ArchiveError(GovbusError):
    """An archive cannot be written, read or applied as asked."""


@dataclass
class Archive:
    """What an archive file holds."""

    header: dict[str, Any]
    rows: list[LoggedRow] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)


def _row_dict(row: LoggedRow) -> dict[str, Any]:
    return dict(zip(_FIELDS, row, strict=True))


def write(out: TextIO, header: Mapping[str, Any], rows: list[LoggedRow],
          checkpoints: list[Checkpoint], keys: Mapping[str, Ed25519PublicKey]) -> str:
    """Write an archive; returns the SHA-256 of its bytes."""
    digest = hashlib.sha256()

    def line(obj: Any) -> None:
        text = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode() + "\n"
        digest.update(text.encode())
        out.write(text)

    line({"format": FORMAT, "version": VERSION, **header})
    for r in rows:
        line({"row": _row_dict(r)})
    for cp in checkpoints:
        line({"checkpoint": cp.as_dict()})
    for kid, key in sorted(keys.items()):
        line({"public_key": {"key_id": kid, "pem": signatures.public_pem(key).decode()}})
    return digest.hexdigest()


def read(path: Path | str) -> Archive:
    """Read an archive file; ArchiveError naming the line that is not what it should be."""
    try:
        lines = Path(path).read_bytes().splitlines()
    except OSError as exc:
        raise ArchiveError(f"cannot read archive {path}: {exc.strerror}") from exc
    if not lines:
        raise ArchiveError(f"{path} is empty, not a {FORMAT}")
    try:
        header = orjson.loads(lines[0])
    except orjson.JSONDecodeError as exc:
        raise ArchiveError(f"{path} line 1: not JSON: {exc}") from exc
    if type(header) is not dict or header.get("format") != FORMAT:
        raise ArchiveError(f"{path} is not a {FORMAT} (line 1)")
    if header.get("version") != VERSION:
        raise ArchiveError(f"{path}: version {header.get('version')!r}, this govbus reads "
                           f"{VERSION}")
    found = Archive(header)
    for n, raw in enumerate(lines[1:], 2):
        try:
            obj = orjson.loads(raw)
            if "row" in obj:
                found.rows.append(LoggedRow(**{k: obj["row"][k] for k in _FIELDS}))
            elif "checkpoint" in obj:
                found.checkpoints.append(from_dict(obj["checkpoint"]))
            elif "public_key" in obj:
                for key in signatures.load_publics(obj["public_key"]["pem"].encode()):
                    found.keys[signatures.key_id(key)] = key
            else:
                raise ArchiveError(f"{path} line {n}: neither a row, a checkpoint nor a key")
        except (orjson.JSONDecodeError, KeyError, TypeError, MalformedEntry, GovbusError) as exc:
            if isinstance(exc, ArchiveError):
                raise
            raise ArchiveError(f"{path} line {n}: {type(exc).__name__}: {exc}") from exc
    return found


def verify(archive: Archive, pinned: Mapping[str, Ed25519PublicKey] | None = None
           ) -> VerifyReport:
    """Check an archive alone: rows hashed and linked from the header's anchor, checkpoints
    signed (by ``pinned`` keys when given: an agency's own copy of the center's keys) and
    linked, rows bound to the checkpointed hashes; the rows after the last checkpoint in the
    archive are reported as not covered (``uncovered``)."""
    h = archive.header
    first = int(h.get("first_seq") or 1)
    checker = ChainChecker(start=Head(first - 1, str(h.get("prev_hash") or GENESIS)))
    valid, findings = check_series(archive.checkpoints, pinned or archive.keys)
    binder = Binder(DELIVERIES, valid)
    for row in archive.rows:
        checker.feed(row)
        binder.feed(row.seq, row.row_hash)
    last = archive.rows[-1] if archive.rows else None
    report = checker.finish(Head(last.seq, last.row_hash) if last else None)
    for f in [*findings, *binder.finish()]:
        report.add_problem(f.seq, f.kind, f.message)
    covered = max((cp.heads[DELIVERIES].seq for cp in valid if DELIVERIES in cp.heads),
                  default=first - 1)
    if last is not None and covered < last.seq:
        report.add_problem(covered + 1, "uncovered", f"seq {covered + 1}..{last.seq}: no "
                           "checkpoint in the archive covers these rows")
    return report


# --- the database side ------------------------------------------------------------------------

_US = "round(extract(epoch FROM {0}) * 1000000)::bigint"
_ROWS = ("SELECT seq, event_id, channel, provider, recipient, resource_id, grant_id, fields, "
         f"masked_fields, topic, kafka_partition, kafka_offset, {_US.format('delivered_at')}, "
         f"{_US.format('logged_at')}, prev_hash, row_hash, content_sha256 FROM deliveries "
         "WHERE seq BETWEEN %s AND %s ORDER BY seq")


def _month(text: str) -> tuple[dt.datetime, dt.datetime]:
    try:
        start = dt.datetime.strptime(text, "%Y-%m").replace(tzinfo=dt.UTC)
    except ValueError as exc:
        raise ArchiveError(f"--month {text!r}: expected YYYY-MM") from exc
    end = (start + dt.timedelta(days=32)).replace(day=1)
    return start, end


def _range(cur: Any, start: dt.datetime, end: dt.datetime) -> tuple[int, int] | None:
    cur.execute("SELECT min(seq), max(seq) FROM deliveries WHERE logged_at >= %s AND "
                "logged_at < %s", (start, end))
    lo, hi = cur.fetchone()
    return None if lo is None else (int(lo), int(hi))


def _checkpoints(cur: Any, lo: int, hi: int) -> list[Checkpoint]:
    from govbus.delivery_log.checkpoint_store import _row

    cur.execute("SELECT number, body, key_id, signature FROM log_checkpoints ORDER BY number")
    found = [_row(*r) for r in cur.fetchall()]
    return [c for c in found if DELIVERIES in c.heads and lo <= c.heads[DELIVERIES].seq <= hi]


def _keys(cur: Any) -> dict[str, Ed25519PublicKey]:
    cur.execute("SELECT key_id, public_key FROM agency_keys WHERE agency = %s", (SIGNER,))
    return {str(k): signatures.public_from_raw(bytes(raw)) for k, raw in cur.fetchall()}


def export(cur: Any, lo: int, hi: int, out: TextIO, label: Mapping[str, Any]) -> str:
    """Write seqs ``lo``..``hi`` as an archive on ``out``; the file's SHA-256."""
    cur.execute(_ROWS, (lo, hi))
    rows = [LoggedRow(*r) for r in cur.fetchall()]
    if not rows or rows[0].seq != lo or rows[-1].seq != hi:
        raise ArchiveError(f"seq {lo}..{hi} is not wholly in the log (run `govbus log verify`)")
    header = dict(label) | {"first_seq": lo, "last_seq": hi, "prev_hash": rows[0].prev_hash,
                            "rows": len(rows),
                            "exported_at": dt.datetime.now(dt.UTC).isoformat()}
    return write(out, header, rows, _checkpoints(cur, lo, hi), _keys(cur))


@contextmanager
def _snapshot(dsn: str) -> Iterator[Any]:
    conn = db.connect(dsn)
    try:
        conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ,
                         readonly=True)
        with conn.cursor() as cur:
            yield cur
        conn.rollback()
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot read the delivery log: {exc}") from exc
    finally:
        conn.close()


def export_dates(dsn: str, start: dt.date, end: dt.date, path: Path) -> dict[str, Any]:
    """``govbus log export --from START --to END``: the rows logged on those days (UTC, END
    included), in one consistent snapshot, to ``path``."""
    lo_at = dt.datetime.combine(start, dt.time(), dt.UTC)
    hi_at = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), dt.UTC)
    with _snapshot(dsn) as cur:
        found = _range(cur, lo_at, hi_at)
        if found is None:
            raise ArchiveError(f"no rows were logged from {start} to {end}")
        lo, hi = found
        digest = _atomic_write(path, lambda out: export(
            cur, lo, hi, out, {"from": start.isoformat(), "to": end.isoformat()}))
    return {"file": str(path), "first_seq": lo, "last_seq": hi, "rows": hi - lo + 1,
            "sha256": digest}


def _atomic_write(path: Path, fill: Any) -> str:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            digest = str(fill(out))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return digest


def boundary(cur: Any) -> tuple[Head | None, list[dict[str, Any]]]:
    """The last row archived out of the database (the head verification starts from), and
    every archive recorded, oldest first."""
    cur.execute("SELECT month, first_seq, last_seq, last_row_hash, sha256, file, archived_at "
                "FROM log_archives ORDER BY last_seq")
    found = [{"month": r[0], "first_seq": int(r[1]), "last_seq": int(r[2]),
              "last_row_hash": r[3], "sha256": r[4], "file": r[5],
              "archived_at": r[6].isoformat()} for r in cur.fetchall()]
    if not found:
        return None, []
    return Head(found[-1]["last_seq"], found[-1]["last_row_hash"]), found


def archive_month(dsn: str, month: str, path: Path) -> dict[str, Any]:
    """Export the oldest month still in the database to ``path``, verify the file, and delete
    its rows, recording the boundary; refused when the month is not the oldest, when a row of
    it is not covered by a checkpoint yet, or when the file does not verify."""
    start, end = _month(month)
    conn = db.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("LOCK TABLE deliveries IN SHARE ROW EXCLUSIVE MODE")  # no writer now
            found = _range(cur, start, end)
            if found is None:
                raise ArchiveError(f"no rows of {month} are in the database")
            lo, hi = found
            cur.execute("SELECT min(seq) FROM deliveries")
            oldest = int(cur.fetchone()[0])
            if oldest != lo:
                raise ArchiveError(f"{month} starts at seq {lo}, but seq {oldest} is older: "
                                   "archive the months before it first")
            digest = _atomic_write(path, lambda out: export(cur, lo, hi, out, {"month": month}))
            report = verify(read(path))
            if not report.ok:
                problems = "; ".join(f"{p.kind} at seq {p.seq}" for p in report.problems[:3])
                raise ArchiveError(f"the archive of {month} does not verify ({problems}); "
                                   f"nothing deleted. {path} is kept for inspection")
            cur.execute("SELECT row_hash FROM deliveries WHERE seq = %s", (hi,))
            last_hash = str(cur.fetchone()[0])
            cur.execute("INSERT INTO log_archives (month, first_seq, last_seq, last_row_hash, "
                        "sha256, file) VALUES (%s, %s, %s, %s, %s, %s)",
                        (month, lo, hi, last_hash, digest, str(path)))
            cur.execute("DELETE FROM deliveries WHERE seq BETWEEN %s AND %s", (lo, hi))
            deleted = cur.rowcount
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot archive {month}: {exc}") from exc
    finally:
        conn.close()
    return {"month": month, "file": str(path), "first_seq": lo, "last_seq": hi,
            "deleted": deleted, "sha256": digest}


def digest_of(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


__all__ = ["FORMAT", "Archive", "ArchiveError", "archive_month", "boundary", "digest_of",
           "export", "export_dates", "read", "verify", "write"]
