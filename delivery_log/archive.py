"""Offline archives of the delivery log: a self-contained file that verifies with no database
and no broker, and the monthly archiving that lets the log stop growing (Art. 24, 26, 31).

An archive is JSON lines: a header (per shard of the log: its seq range and the hash its first
row links to, ``shards``), every row of those ranges (each shard's in seq order), every
checkpoint whose head of one of those shards lies in its range, and the information center's
public keys. :func:`verify` recomputes each row's hash and link from its shard's anchor, checks
every checkpoint's signature (against pinned keys when given, else the archive's own) and binds
each shard's rows to the hashes checkpointed for it; the first break is named by shard and seq.

:func:`archive_month` exports, for each shard, that shard's rows of the oldest month still in
the database, verifies the file, and only when every row of it is covered by a checkpoint
deletes those rows and records each shard's boundary in ``log_archives`` (the last seq and hash
archived, the file's digest), in one transaction. :func:`govbus.delivery_log.store.verify`
then starts each shard from its boundary, and says which archives hold the rows before it.
Rows are archived by seq range, not by a partitioned table: the unique key that makes a
replayed delivery log once, (event_id, recipient, channel), could not hold across partitions
(docs/adr/0009-archiving-the-log-by-seq-range.md).
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
    LEGACY,
    Head,
    LoggedRow,
    MalformedEntry,
    ShardedChecker,
    VerifyReport,
)
from govbus.delivery_log.checkpoints import (
    SIGNER,
    Binder,
    Checkpoint,
    check_series,
    from_dict,
    log_chain,
)

FORMAT = "govbus-log-archive"
VERSION = 2  # 2: a range per shard (``shards``); 1: one range of the legacy chain
READS = (1, 2)
_FIELDS = LoggedRow._fields
_OPTIONAL = {"shard"}  # not in version 1's rows (all of the legacy shard)


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
    if header.get("version") not in READS:
        raise ArchiveError(f"{path}: version {header.get('version')!r}, this govbus reads "
                           f"{', '.join(map(str, READS))}")
    found = Archive(header)
    for n, raw in enumerate(lines[1:], 2):
        try:
            obj = orjson.loads(raw)
            if "row" in obj:
                found.rows.append(LoggedRow(**{k: obj["row"][k] for k in _FIELDS
                                               if k in obj["row"] or k not in _OPTIONAL}))
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


def ranges(header: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each shard's range in an archive: ``first_seq``, ``last_seq``, ``prev_hash`` (what its
    first row links to); a version-1 header's one range is the legacy shard's."""
    shards = header.get("shards")
    if isinstance(shards, dict):
        return {str(s): dict(r) for s, r in shards.items()}
    return {LEGACY: {"first_seq": int(header.get("first_seq") or 1),
                     "last_seq": header.get("last_seq"),
                     "prev_hash": str(header.get("prev_hash") or GENESIS)}}


def verify(archive: Archive, pinned: Mapping[str, Ed25519PublicKey] | None = None
           ) -> VerifyReport:
    """Check an archive alone: each shard's rows hashed and linked from its anchor in the
    header, checkpoints signed (by ``pinned`` keys when given: an agency's own copy of the
    center's keys) and linked, each shard's rows bound to the hashes checkpointed for it
    within its range; a shard's rows after the last checkpoint in the archive that covers it
    are reported as not covered (``uncovered``)."""
    found = ranges(archive.header)
    starts = {s: Head(int(r.get("first_seq") or 1) - 1, str(r.get("prev_hash") or GENESIS))
              for s, r in found.items()}
    checker = ShardedChecker(starts=starts)
    valid, findings = check_series(archive.checkpoints, pinned or archive.keys)
    last: dict[str, LoggedRow] = {}
    for row in archive.rows:
        checker.feed(row)
        last[row.shard] = row
    binders = {s: Binder(log_chain(s), valid, floor=starts[s].seq,
                         ceiling=last[s].seq if s in last else starts[s].seq)
               for s in starts}
    for row in archive.rows:
        binder = binders.get(row.shard)
        if binder is not None:
            binder.feed(row.seq, row.row_hash)
    report = checker.finish({s: Head(r.seq, r.row_hash) for s, r in last.items()})
    for f in findings:
        report.add_problem(f.seq, f.kind, f.message)
    for s, b in sorted(binders.items()):
        for f in b.finish():
            report.add_problem(f.seq, f.kind, f.message, shard=s)
    for s, row in sorted(last.items()):
        first = starts[s].seq + 1 if s in starts else 1
        name = log_chain(s)
        covered = max((cp.heads[name].seq for cp in valid if name in cp.heads
                       and cp.heads[name].seq <= row.seq), default=first - 1)
        if covered < row.seq:
            report.add_problem(covered + 1, "uncovered", f"seq {covered + 1}..{row.seq}: no "
                               "checkpoint in the archive covers these rows", shard=s)
    return report


# --- the database side ------------------------------------------------------------------------

_US = "round(extract(epoch FROM {0}) * 1000000)::bigint"
_ROWS = ("SELECT seq, event_id, channel, provider, recipient, resource_id, grant_id, fields, "
         f"masked_fields, topic, kafka_partition, kafka_offset, {_US.format('delivered_at')}, "
         f"{_US.format('logged_at')}, prev_hash, row_hash, content_sha256, shard FROM deliveries "
         "WHERE shard = %s AND seq BETWEEN %s AND %s ORDER BY seq")

#: shard -> (first seq, last seq) of its rows in a range of time
Ranges = dict[str, tuple[int, int]]


def _month(text: str) -> tuple[dt.datetime, dt.datetime]:
    try:
        start = dt.datetime.strptime(text, "%Y-%m").replace(tzinfo=dt.UTC)
    except ValueError as exc:
        raise ArchiveError(f"--month {text!r}: expected YYYY-MM") from exc
    end = (start + dt.timedelta(days=32)).replace(day=1)
    return start, end


def _ranges(cur: Any, start: dt.datetime, end: dt.datetime) -> Ranges:
    """Each shard's rows logged from ``start`` to ``end`` (a shard's rows are logged in seq
    order, so they are one seq range)."""
    cur.execute("SELECT shard, min(seq), max(seq) FROM deliveries WHERE logged_at >= %s AND "
                "logged_at < %s GROUP BY shard ORDER BY shard", (start, end))
    return {str(s): (int(lo), int(hi)) for s, lo, hi in cur.fetchall()}


def _checkpoints(cur: Any, found: Ranges) -> list[Checkpoint]:
    """The checkpoints with a head of one of the shards in its range."""
    from govbus.delivery_log.checkpoint_store import read_all

    every = read_all(cur)
    names = {log_chain(s): r for s, r in found.items()}
    return [c for c in every if any(n in c.heads and lo <= c.heads[n].seq <= hi
                                    for n, (lo, hi) in names.items())]


def _keys(cur: Any) -> dict[str, Ed25519PublicKey]:
    cur.execute("SELECT key_id, public_key FROM agency_keys WHERE agency = %s", (SIGNER,))
    return {str(k): signatures.public_from_raw(bytes(raw)) for k, raw in cur.fetchall()}


def export(cur: Any, found: Ranges, out: TextIO, label: Mapping[str, Any]) -> str:
    """Write each shard's seqs ``lo``..``hi`` of ``found`` as an archive on ``out``; the
    file's SHA-256."""
    rows: list[LoggedRow] = []
    shards: dict[str, dict[str, Any]] = {}
    for shard, (lo, hi) in sorted(found.items()):
        cur.execute(_ROWS, (shard, lo, hi))
        mine = [LoggedRow(*r) for r in cur.fetchall()]
        if not mine or mine[0].seq != lo or mine[-1].seq != hi:
            raise ArchiveError(f"shard {shard!r} seq {lo}..{hi} is not wholly in the log (run "
                               "`govbus log verify`)")
        shards[shard] = {"first_seq": lo, "last_seq": hi, "prev_hash": mine[0].prev_hash,
                         "rows": len(mine)}
        rows += mine
    header = dict(label) | {"shards": shards, "rows": len(rows),
                            "exported_at": dt.datetime.now(dt.UTC).isoformat()}
    return write(out, header, rows, _checkpoints(cur, found), _keys(cur))


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


def describe(found: Mapping[str, Any]) -> str:
    """``seq 1..12`` for the legacy shard alone, else ``shard A seq 1..3, …``."""
    spans = {s: (r[0], r[1]) if isinstance(r, tuple) else (r["first_seq"], r["last_seq"])
             for s, r in sorted(found.items())}
    if set(spans) == {LEGACY}:
        return f"seq {spans[LEGACY][0]}..{spans[LEGACY][1]}"
    return ", ".join(f"shard {s or '(legacy)'} seq {lo}..{hi}" for s, (lo, hi) in spans.items())


def export_dates(dsn: str, start: dt.date, end: dt.date, path: Path) -> dict[str, Any]:
    """``govbus log export --from START --to END``: the rows logged on those days (UTC, END
    included), every shard's, in one consistent snapshot, to ``path``."""
    lo_at = dt.datetime.combine(start, dt.time(), dt.UTC)
    hi_at = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), dt.UTC)
    with _snapshot(dsn) as cur:
        found = _ranges(cur, lo_at, hi_at)
        if not found:
            raise ArchiveError(f"no rows were logged from {start} to {end}")
        digest = _atomic_write(path, lambda out: export(
            cur, found, out, {"from": start.isoformat(), "to": end.isoformat()}))
    return {"file": str(path), "shards": found, "span": describe(found),
            "rows": sum(hi - lo + 1 for lo, hi in found.values()), "sha256": digest}


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


def boundary(cur: Any) -> tuple[dict[str, Head], list[dict[str, Any]]]:
    """Each shard's last row archived out of the database (the head its verification starts
    from), and every archive recorded (a row per month and shard), oldest first."""
    cur.execute("SELECT month, shard, first_seq, last_seq, last_row_hash, sha256, file, "
                "archived_at FROM log_archives ORDER BY month, shard")
    found = [{"month": r[0], "shard": r[1], "first_seq": int(r[2]), "last_seq": int(r[3]),
              "last_row_hash": r[4], "sha256": r[5], "file": r[6],
              "archived_at": r[7].isoformat()} for r in cur.fetchall()]
    starts: dict[str, Head] = {}
    for a in found:
        if a["shard"] not in starts or starts[a["shard"]].seq < a["last_seq"]:
            starts[a["shard"]] = Head(a["last_seq"], a["last_row_hash"])
    return starts, found


def archive_month(dsn: str, month: str, path: Path) -> dict[str, Any]:
    """Export, for each shard, its rows of the oldest month still in the database to
    ``path``, verify the file, and delete those rows, recording each shard's boundary;
    refused when a shard has rows older than the month, when a row of it is not covered by a
    checkpoint yet, or when the file does not verify."""
    start, end = _month(month)
    conn = db.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("LOCK TABLE deliveries IN SHARE ROW EXCLUSIVE MODE")  # no writer now
            found = _ranges(cur, start, end)
            if not found:
                raise ArchiveError(f"no rows of {month} are in the database")
            cur.execute("SELECT shard, min(seq) FROM deliveries WHERE shard = ANY(%s) "
                        "GROUP BY shard", (list(found),))
            for shard, oldest in cur.fetchall():
                lo = found[str(shard)][0]
                if int(oldest) != lo:
                    where = f" of shard {shard}" if shard else ""
                    raise ArchiveError(f"{month} starts at seq {lo}{where}, but seq {oldest} "
                                       "is older: archive the months before it first")
            digest = _atomic_write(path, lambda out: export(cur, found, out, {"month": month}))
            report = verify(read(path))
            if not report.ok:
                problems = "; ".join(f"{p.kind} at {p.where()}".rstrip(": ")
                                     for p in report.problems[:3])
                raise ArchiveError(f"the archive of {month} does not verify ({problems}); "
                                   f"nothing deleted. {path} is kept for inspection")
            deleted = 0
            for shard, (lo, hi) in sorted(found.items()):
                cur.execute("SELECT row_hash FROM deliveries WHERE shard = %s AND seq = %s",
                            (shard, hi))
                last_hash = str(cur.fetchone()[0])
                cur.execute("INSERT INTO log_archives (month, shard, first_seq, last_seq, "
                            "last_row_hash, sha256, file) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                            (month, shard, lo, hi, last_hash, digest, str(path)))
                cur.execute("DELETE FROM deliveries WHERE shard = %s AND seq BETWEEN %s AND %s",
                            (shard, lo, hi))
                deleted += cur.rowcount
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot archive {month}: {exc}") from exc
    finally:
        conn.close()
    return {"month": month, "file": str(path), "shards": found, "span": describe(found),
            "deleted": deleted, "sha256": digest}


def digest_of(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


__all__ = ["FORMAT", "Archive", "ArchiveError", "archive_month", "boundary", "describe",
           "digest_of", "export", "export_dates", "ranges", "read", "verify", "write"]
