"""The delivery log's records and hash chain, as pure functions: no I/O.

``row_hash = sha256(prev_hash + canonical(row))``: ``canonical`` is sorted-key, compact UTF-8
JSON of the row's content, including its ``seq`` (so renumbering shows) and its timestamps in
microseconds (PostgreSQL's resolution, so no representable change escapes the hash);
``prev_hash`` is the previous row's ``row_hash`` in the same shard, :data:`GENESIS` for a
shard's seq 1.

The log is a chain per shard: the ingest topic-partition a delivered event came from
(``"<topic>/<partition>"``), ``"query"`` for online queries, ``"backfill"`` for backfills, and
``""`` for the rows logged before shards existed (the legacy chain). Each shard numbers its rows
from 1 and links them on its own, so writers of disjoint shards never wait for each other; the
shard is in a row's hashed content (but for ``""``, whose rows keep their hashes), so moving a
row to another shard shows. :class:`ChainChecker` takes one shard's rows in seq order and
names every break (:class:`ShardedChecker` a checker per shard): an altered row (its hash no
longer matches its content), missing seqs (deleted rows, also the newest ones, through the
head), a link that does not chain (an inserted or replaced row), rows beyond the head.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from govbus.core.errors import GovbusError
from govbus.core.routing import Delivery

CHANNELS = ("exchange", "query", "backfill")  # Art. 17: online query, data exchange; backfills
GENESIS = "0" * 64
MAX_MS = 253402300799999  # 9999-12-31T23:59:59.999Z: what Python's datetime can read back
FIELDS = ("event_id", "channel", "provider", "recipient", "resource", "grant_id", "fields",
          "masked_fields", "topic", "partition", "offset", "delivered_ms")
#: the hash of what was delivered, byte for byte (the leaf hash of the delivery's signature:
#: topic, key, value, event id); in a row's content only when known, so that rows logged
#: before it was recorded keep their hashes
CONTENT = "content_sha256"
#: the chain a row belongs to; in a row's content only when not ``""`` (the legacy chain's rows,
#: logged before shards existed, keep their hashes)
SHARD = "shard"
LEGACY = ""
QUERY_SHARD, BACKFILL_SHARD = "query", "backfill"


def ingest_shard(topic: str, partition: int) -> str:
    """The shard of a delivery of an event consumed from ``topic``'s ``partition``."""
    return f"{topic}/{partition}"

Key = tuple[str, str, str]  # (event_id, recipient, channel)


class MalformedEntry(GovbusError):
    """A log entry read from outside (JSON) that is not one; never written to the log."""


# --- records and hashes: pure -------------------------------------------------------------

class LogEntry(NamedTuple):
    """One delivery as the log records it: who received what of which event, under which
    grant, by which channel, and where on the broker (none for a query).

    A named tuple rather than a frozen dataclass, like :class:`LoggedRow`: one is built per
    delivery on the hot path, and a frozen dataclass's ``__init__`` cost four times as much
    (1.5 against 0.35 µs for twelve fields, ``timeit``)."""

    event_id: str
    channel: str
    provider: str
    recipient: str
    resource: str
    grant_id: int
    fields: tuple[str, ...]
    masked_fields: tuple[str, ...]
    topic: str | None
    partition: int | None
    offset: int | None
    delivered_ms: int
    content_sha256: str | None = None  # hex; None for a query (no bytes on a topic)
    shard: str = LEGACY  # the chain it is logged in (see the module's docstring)

    @property
    def key(self) -> Key:
        return (self.event_id, self.recipient, self.channel)


class LoggedRow(NamedTuple):
    """A row of ``deliveries`` as hashed; timestamps in microseconds since the epoch. Immutable
    (a named tuple, for :class:`LogEntry`'s reason); ``_replace`` gives an altered copy."""

    seq: int
    event_id: str
    channel: str
    provider: str
    recipient: str
    resource: str
    grant_id: int
    fields: list[str]
    masked_fields: list[str]
    topic: str | None
    partition: int | None
    offset: int | None
    delivered_us: int | None
    logged_us: int | None
    prev_hash: str
    row_hash: str
    content_sha256: str | None = None
    shard: str = LEGACY

    def content(self) -> dict[str, Any]:
        """What the hash covers: everything but the hashes themselves (the shard only when
        not the legacy one, as the content hash only when known)."""
        found = {"seq": self.seq, "event_id": self.event_id, "channel": self.channel,
                 "provider": self.provider, "recipient": self.recipient,
                 "resource": self.resource, "grant_id": self.grant_id, "fields": self.fields,
                 "masked_fields": self.masked_fields, "topic": self.topic,
                 "partition": self.partition, "offset": self.offset,
                 "delivered_us": self.delivered_us, "logged_us": self.logged_us}
        if self.content_sha256 is not None:
            found[CONTENT] = self.content_sha256
        if self.shard != LEGACY:
            found[SHARD] = self.shard
        return found


@dataclass(frozen=True)
class Head:
    """The last row the writer appended (``seq`` 0 and :data:`GENESIS` when empty)."""

    seq: int
    row_hash: str
    logged_us: int | None = None


def _text(value: Any, name: str) -> str:
    if type(value) is not str or not value.strip():  # orjson gives str, never a subclass
        raise MalformedEntry(f"{name}: expected a non-empty string, got {value!r:.60}")
    if "\x00" in value:  # PostgreSQL text cannot hold it
        raise MalformedEntry(f"{name}: contains a NUL character")
    # no lone surrogate can be here: orjson refuses one in its input (parse_entry)
    return value


def _int(value: Any, name: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:  # bool is not int here
        raise MalformedEntry(f"{name}: expected an integer in [{low}, {high}], "
                                f"got {value!r:.60}")
    return value


def _names(value: Any, name: str) -> tuple[str, ...]:
    if type(value) is not list:
        raise MalformedEntry(f"{name}: expected a list of field names, got {value!r:.60}")
    for v in value:
        _text(v, name)
    return tuple(value)


_MAX_INT64 = 2**63 - 1


def _digest(value: Any) -> str | None:
    if value is None:
        return None
    if type(value) is not str or len(value) != 64 or value.strip("0123456789abcdef"):
        raise MalformedEntry(f"{CONTENT}: expected 64 lowercase hex digits, got {value!r:.70}")
    return value


def _shard(value: Any) -> str:
    if type(value) is not str or "\x00" in value:
        raise MalformedEntry(f"{SHARD}: expected a string, got {value!r:.60}")
    return value


def entry(delivery: Delivery, channel: str, partition: int | None, offset: int | None,
          delivered_ms: int, topic: str | None = None, content_sha256: str | None = None,
          shard: str = LEGACY) -> LogEntry:
    """The log entry of one routed delivery: ``channel`` is exchange | query | backfill
    (Art. 17); a query has no topic, partition or offset."""
    value = delivery.value
    return LogEntry(value["event_id"], channel, delivery.provider, delivery.recipient,
                    value["resource"], delivery.grant_id, tuple(delivery.fields),
                    tuple(delivery.masked), topic, partition, offset, delivered_ms,
                    content_sha256, shard)


def parse_entry(value: bytes | str | None) -> LogEntry:
    """Parse and check one log entry as JSON (the keys of :data:`FIELDS`, as an export or an
    archive holds it); :class:`MalformedEntry` if bad.

    Every check here keeps an entry from failing later inside PostgreSQL (NUL characters,
    integers out of range, text that is not Unicode). Unknown keys are ignored.
    """
    if value is None:
        raise MalformedEntry("empty value (tombstone)")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        if "surrogate in string" in str(exc):  # a lone \\ud800 escape: not valid Unicode
            raise MalformedEntry(f"not valid Unicode: {exc}") from exc
        raise MalformedEntry(f"not JSON: {exc}") from exc
    if type(obj) is not dict:
        raise MalformedEntry(f"expected a JSON object, got {type(obj).__name__}")
    try:
        channel, topic, partition, offset = (obj["channel"], obj["topic"], obj["partition"],
                                             obj["offset"])
        d = LogEntry(_text(obj["event_id"], "event_id"), channel,
                     _text(obj["provider"], "provider"), _text(obj["recipient"], "recipient"),
                     _text(obj["resource"], "resource"),
                     _int(obj["grant_id"], "grant_id", -_MAX_INT64 - 1, _MAX_INT64),
                     _names(obj["fields"], "fields"),
                     _names(obj["masked_fields"], "masked_fields"),
                     None if topic is None else _text(topic, "topic"),
                     None if partition is None else _int(partition, "partition", 0, 2**31 - 1),
                     None if offset is None else _int(offset, "offset", 0, _MAX_INT64),
                     _int(obj["delivered_ms"], "delivered_ms", 0, MAX_MS),
                     _digest(obj.get(CONTENT)), _shard(obj.get(SHARD, LEGACY)))
    except KeyError:
        missing = [f for f in FIELDS if f not in obj]
        raise MalformedEntry(f"missing key(s): {', '.join(missing)}") from None
    if channel not in CHANNELS:  # also anything not a string
        raise MalformedEntry(f"channel: {channel!r:.60} is not one of {', '.join(CHANNELS)}")
    return d


def canonical(content: Mapping[str, Any]) -> bytes:
    """The bytes a row's hash covers: sorted-key, compact, UTF-8 JSON."""
    # orjson: the same bytes as json.dumps(sort_keys=True, separators=(",", ":"),
    # ensure_ascii=False) for the row's strings, integers, lists and nulls, in a fraction of
    # the time (the log writer hashes every row)
    return orjson.dumps(dict(content), option=orjson.OPT_SORT_KEYS)


def row_hash(prev_hash: str, content: Mapping[str, Any]) -> str:
    """``sha256(prev_hash + canonical(content))`` as 64 hex digits."""
    return hashlib.sha256(str(prev_hash).encode("utf-8") + canonical(content)).hexdigest()


def dedupe(deliveries: Iterable[LogEntry], present: set[Key]) -> list[LogEntry]:
    """The deliveries not logged yet, each key once (the first occurrence wins)."""
    seen, fresh = set(present), []
    for d in deliveries:
        if d.key not in seen:
            seen.add(d.key)
            fresh.append(d)
    return fresh


class Prepared(NamedTuple):
    """A delivery's canonical content rendered ahead, but for the two values only the log
    writer knows, under its lock: the row's ``seq`` and its ``logged_us``.

    ``canonical`` sorts the keys, so the content renders as ``head + "logged_us":<us>, + middle
    + "seq":<seq>, + tail``. Rendering it (and anything else of the row) before the lock keeps
    the lock for what must be serial: numbering and hashing. With two workers the lock had
    been held 0.3-0.6 s per batch, the other worker waiting 0.2-0.3 s of it (``make bench``)."""

    delivery: LogEntry
    fields: list[str]
    masked_fields: list[str]
    delivered_us: int
    head: bytes
    middle: bytes
    tail: bytes


_LOGGED, _SEQ = -1, -2  # placeholders; a key in front makes their bytes unique in the text
_AT_LOGGED, _AT_SEQ = b',"logged_us":-1,', b',"seq":-2,'


def prepare(d: LogEntry) -> Prepared:
    """``d``'s content rendered, but for ``seq`` and ``logged_us`` (see :class:`Prepared`)."""
    fields, masked, delivered_us = list(d.fields), list(d.masked_fields), d.delivered_ms * 1000
    content = {"seq": _SEQ, "event_id": d.event_id, "channel": d.channel,
               "provider": d.provider, "recipient": d.recipient, "resource": d.resource,
               "grant_id": d.grant_id, "fields": fields, "masked_fields": masked,
               "topic": d.topic, "partition": d.partition, "offset": d.offset,
               "delivered_us": delivered_us, "logged_us": _LOGGED}
    if d.content_sha256 is not None:
        content[CONTENT] = d.content_sha256
    if d.shard != LEGACY:
        content[SHARD] = d.shard
    text = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    # a string value cannot hold these bytes (its quotes would be escaped): each is found once
    i = text.index(_AT_LOGGED)
    j = text.index(_AT_SEQ, i)
    return Prepared(d, fields, masked, delivered_us, text[:i], text[i + len(_AT_LOGGED):j],
                    text[j + len(_AT_SEQ):])


def link(prepared: Sequence[Prepared], head: Head, logged_us: int) -> list[LoggedRow]:
    """Rows for ``prepared`` deliveries appended after ``head``: consecutive seqs, each hash
    linked. The log writer's serial step: two concatenations and a hash per row. Every
    delivery must be of ``head``'s shard (:func:`chain_shards` links a batch of several)."""
    rows, prev = [], head.row_hash
    sha256 = hashlib.sha256
    for seq, p in enumerate(prepared, start=head.seq + 1):
        content = b'%s,"logged_us":%d,%s,"seq":%d,%s' % (p.head, logged_us, p.middle, seq,
                                                          p.tail)
        digest = sha256(prev.encode() + content).hexdigest()
        d = p.delivery
        rows.append(LoggedRow(seq, d.event_id, d.channel, d.provider, d.recipient, d.resource,
                              d.grant_id, p.fields, p.masked_fields, d.topic, d.partition,
                              d.offset, p.delivered_us, logged_us, prev, digest,
                              d.content_sha256, d.shard))
        prev = digest
    return rows


def chain(deliveries: Sequence[LogEntry], head: Head, logged_us: int) -> list[LoggedRow]:
    """Rows for ``deliveries`` appended after ``head``: consecutive seqs, each hash linked,
    as :meth:`LoggedRow.content` and :func:`row_hash` define them
    (``tests/unit/delivery_log/test_delivery_log.py`` checks that they agree)."""
    return link([prepare(d) for d in deliveries], head, logged_us)


def chain_shards(deliveries: Sequence[LogEntry], heads: Mapping[str, Head], logged_us: int
                 ) -> dict[str, list[LoggedRow]]:
    """Rows for ``deliveries`` of any shards, each shard's chained after its head in
    ``heads`` (an empty shard's after seq 0 and :data:`GENESIS`), in the batch's order."""
    by_shard: dict[str, list[LogEntry]] = {}
    for d in deliveries:
        by_shard.setdefault(d.shard, []).append(d)
    return {s: chain(ds, heads.get(s) or Head(0, GENESIS), logged_us)
            for s, ds in sorted(by_shard.items())}


# --- verification: pure ---------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    """One break in a chain: which shard and seq, what kind, what was found."""

    seq: int | None
    kind: str  # altered | missing | broken_link | out_of_order | head_mismatch
    message: str
    shard: str = LEGACY

    def as_dict(self) -> dict[str, Any]:
        return {"shard": self.shard, "seq": self.seq, "kind": self.kind,
                "message": self.message}

    def where(self) -> str:
        """``[shard] seq N: `` (the legacy shard unnamed), as :meth:`VerifyReport.lines`
        prints it."""
        at = "" if self.seq is None else f"seq {self.seq}: "
        return f"[{self.shard}] {at}" if self.shard != LEGACY else at


@dataclass
class VerifyReport:
    """What :func:`verify` found; ``ok`` when every shard's chain is intact up to its head.

    ``heads`` has, per shard, its rows, first and last seq, head seq and hash; ``first_seq``,
    ``last_seq``, ``head_seq`` and ``head_hash`` are those of the only shard when there is
    one (a single chain: an archive of one shard, or a log written before shards), else
    None; ``rows``, ``counts`` and ``problems`` cover every shard."""

    rows: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head_seq: int | None = None
    head_hash: str | None = None
    problems: list[Problem] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    #: the months archived out of the database, oldest first (their rows verify offline)
    archives: list[dict[str, Any]] = field(default_factory=list)
    heads: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.counts

    def add_problem(self, seq: int | None, kind: str, message: str,
                    max_problems: int = 1000, shard: str = LEGACY) -> None:
        """A problem found besides the chain walk (a checkpoint's signature, say)."""
        self.counts[kind] += 1
        if len(self.problems) < max_problems:
            self.problems.append(Problem(seq, kind, message, shard))

    def summary(self) -> dict[str, Any]:
        return {"rows": self.rows, "first_seq": self.first_seq, "last_seq": self.last_seq,
                "head_seq": self.head_seq, "head_hash": self.head_hash}

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "rows": self.rows, "first_seq": self.first_seq,
                "last_seq": self.last_seq, "head_seq": self.head_seq,
                "head_hash": self.head_hash,
                "heads": {s: dict(h) for s, h in sorted(self.heads.items())},
                "problem_counts": dict(self.counts),
                "problems": [p.as_dict() for p in self.problems],
                "problems_omitted": sum(self.counts.values()) - len(self.problems),
                "archives": self.archives}

    def lines(self) -> list[str]:
        total = sum(self.counts.values())
        verdict = "intact" if self.ok else f"{total} problem(s): " + ", ".join(
            f"{n} {k}" for k, n in sorted(self.counts.items()))
        if len(self.heads) > 1:
            out = [f"delivery log: {self.rows} rows in {len(self.heads)} shards: {verdict}"]
            out += [f"  shard {s or '(legacy)'}: {_head_line(h)}"
                    for s, h in sorted(self.heads.items())]
        else:
            out = [f"delivery log: {_head_line(self.summary())}: {verdict}"]
        if self.archives:
            last = self.archives[-1]
            months, files = ({a["month"] for a in self.archives},
                             {a["file"] for a in self.archives})
            out.append(f"  {len(months)} month(s) archived in {len(files)} file(s), the latest "
                       f"{last['file']} (sha256 {last['sha256'][:16]}…): `govbus log verify "
                       "--archive FILE` checks each")
        out += [f"  {p.where()}{p.kind}: {p.message}" for p in self.problems]
        if total > len(self.problems):
            out.append(f"  … and {total - len(self.problems)} more")
        return out


def _head_line(h: Mapping[str, Any]) -> str:
    span = f"seq {h['first_seq']}..{h['last_seq']}" if h["rows"] else "empty"
    return (f"{h['rows']} rows ({span}), head seq {h['head_seq']} "
            f"{(h['head_hash'] or '-')[:16]}…")


def _span(first: int, last: int) -> str:
    return f"seq {first}" if first == last else f"seq {first}..{last}"


class ChainChecker:
    """Feed one shard's rows in seq order, then :meth:`finish` with its head; keeps counts,
    not rows."""

    def __init__(self, max_problems: int = 1000, start: Head | None = None,
                 shard: str = LEGACY) -> None:
        """``start``: the row the first one fed links to, when the rows before it are not fed
        (archived out of the database, or a range in an archive); seq 0 and GENESIS else."""
        self.report = VerifyReport()
        self.max_problems = max_problems
        self._prev: LoggedRow | None = None
        self.start = start or Head(0, GENESIS)
        self.shard = shard

    def add(self, seq: int | None, kind: str, message: str) -> None:
        """Count a problem of ``kind``; keep it while fewer than ``max_problems`` are kept."""
        self.report.counts[kind] += 1
        if len(self.report.problems) < self.max_problems:
            self.report.problems.append(Problem(seq, kind, message, self.shard))

    def feed(self, row: LoggedRow) -> None:
        prev, rep = self._prev, self.report
        expected = prev.seq + 1 if prev else self.start.seq + 1
        rep.rows += 1
        rep.first_seq = row.seq if rep.first_seq is None else rep.first_seq
        rep.last_seq = row.seq
        if row.seq > expected:  # a gap: the link is broken because rows are gone
            self.add(expected, "missing", f"{_span(expected, row.seq - 1)} missing before "
                      f"seq {row.seq} (deleted rows)")
        elif row.seq < expected:
            self.add(row.seq, "out_of_order", f"seq {row.seq} below the first seq "
                     f"{self.start.seq + 1}")
        else:
            want = prev.row_hash if prev else self.start.row_hash
            if row.prev_hash != want:
                what = (f"seq {prev.seq}'s row_hash" if prev else "the genesis hash"
                        if self.start.seq == 0 else f"the archived seq {self.start.seq}'s hash")
                self.add(row.seq, "broken_link", f"prev_hash {str(row.prev_hash)[:16]}… is not "
                          f"{what} {want[:16]}… (inserted or replaced row, or rewritten hash)")
        if row_hash(row.prev_hash, row.content()) != row.row_hash:
            self.add(row.seq, "altered", "row_hash does not match the row's content "
                      "(altered, or forged row)")
        if prev and row.logged_us is not None and prev.logged_us is not None \
                and row.logged_us < prev.logged_us:
            self.add(row.seq, "out_of_order", f"logged before seq {prev.seq}, which precedes it")
        self._prev = row

    def finish(self, head: Head | None) -> VerifyReport:
        last, rep = self._prev, self.report
        if head is None:
            if last is not None:
                self.add(None, "head_mismatch", "delivery_log_head has no row for this "
                         "shard (removed?)")
            rep.heads = {self.shard: rep.summary()}
            return rep
        rep.head_seq, rep.head_hash = head.seq, head.row_hash
        end = last.seq if last else self.start.seq
        if end < head.seq:
            self.add(end + 1, "missing", f"the log ends at seq {end} but its head is seq "
                      f"{head.seq}: {_span(end + 1, head.seq)} missing (deleted newest rows)")
        elif end > head.seq:
            self.add(head.seq + 1, "head_mismatch", f"{_span(head.seq + 1, end)} beyond the "
                      f"head (seq {head.seq}): not appended by the log writer")
        elif last is not None and last.row_hash != head.row_hash:
            self.add(end, "head_mismatch", f"row_hash {last.row_hash[:16]}… differs from the "
                      f"head's {head.row_hash[:16]}…")
        rep.heads = {self.shard: rep.summary()}
        return rep


class ShardedChecker:
    """Feed rows of any shards, each shard's in seq order (``ORDER BY shard, seq``, or
    interleaved), then :meth:`finish` with every shard's head: one :class:`ChainChecker` per
    shard, from its own start, merged into one :class:`VerifyReport`."""

    def __init__(self, max_problems: int = 1000, starts: Mapping[str, Head] | None = None
                 ) -> None:
        self.max_problems = max_problems
        self.starts = dict(starts or {})
        self.checkers: dict[str, ChainChecker] = {}

    def checker(self, shard: str) -> ChainChecker:
        found = self.checkers.get(shard)
        if found is None:
            found = self.checkers[shard] = ChainChecker(self.max_problems,
                                                        self.starts.get(shard), shard)
        return found

    def feed(self, row: LoggedRow) -> None:
        self.checker(row.shard).feed(row)

    def finish(self, heads: Mapping[str, Head | None]) -> VerifyReport:
        """Every shard that has a head, rows or a start is finished with its head (None when
        it has none: rows no writer accounted for)."""
        for s in {*heads, *self.starts}:
            self.checker(s)
        merged = VerifyReport()
        for s, c in sorted(self.checkers.items()):
            rep = c.finish(heads.get(s))
            merged.rows += rep.rows
            merged.counts.update(rep.counts)
            merged.heads.update(rep.heads)
            for p in rep.problems:
                if len(merged.problems) < self.max_problems:
                    merged.problems.append(p)
        if len(merged.heads) == 1:
            (only,) = merged.heads.values()
            merged.first_seq, merged.last_seq = only["first_seq"], only["last_seq"]
            merged.head_seq, merged.head_hash = only["head_seq"], only["head_hash"]
        return merged
