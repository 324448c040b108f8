"""PostgreSQL's ``pgoutput`` logical replication messages, from bytes: a pure parser, no I/O.

The format is the one ``CREATE SUBSCRIPTION`` reads (protocol version 1: PostgreSQL's
"Logical Replication Message Formats"): every integer big-endian, every string
NUL-terminated, a row as *TupleData* (per column ``n`` null, ``u`` an unchanged TOAST value
the server did not send, ``t`` text, ``b`` binary). :func:`decode` turns one message into one
frozen dataclass; :class:`Relations` keeps the ``Relation`` messages, which every change
message refers to by oid, and turns a tuple into a column-name mapping.

Streamed (``S``, ``E``, ``c``, ``A``) and two-phase messages need protocol versions 2 and 3
and options the relay never asks for: they are refused, as is any unknown kind, rather than
skipped, since skipping one could lose a change.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from govbus.core.errors import GovbusError

#: PostgreSQL's epoch: timestamps on the wire are microseconds since 2000-01-01 UTC
PG_EPOCH: Final = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


class PgoutputError(GovbusError):
    """A message that is not pgoutput protocol version 1, or that is truncated."""


class _Unchanged:
    """The marker of an unchanged TOAST value: the column has a value the server did not send."""

    _instance: _Unchanged | None = None

    def __new__(cls) -> _Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"

    def __bool__(self) -> bool:
        return False


UNCHANGED: Final = _Unchanged()

#: one column of a tuple: None (SQL NULL), UNCHANGED, text, or bytes (binary format)
Value = str | bytes | _Unchanged | None


@dataclass(frozen=True)
class Column:
    name: str
    type_oid: int
    type_modifier: int
    key: bool  # part of the replica identity


@dataclass(frozen=True)
class Relation:
    """A table's description, sent before the first change of it in a session."""

    oid: int
    namespace: str
    name: str
    replica_identity: str  # d(efault), n(othing), f(ull), i(ndex)
    columns: tuple[Column, ...]

    @property
    def qualified(self) -> str:
        return f"{self.namespace}.{self.name}"


@dataclass(frozen=True)
class Begin:
    final_lsn: int  # the LSN of the transaction's commit record
    commit_time: dt.datetime
    xid: int


@dataclass(frozen=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int  # the position after the commit: confirmed, the transaction is not resent
    commit_time: dt.datetime


@dataclass(frozen=True)
class Origin:
    commit_lsn: int
    name: str


@dataclass(frozen=True)
class Type:
    oid: int
    namespace: str
    name: str


@dataclass(frozen=True)
class Insert:
    relation_oid: int
    new: tuple[Value, ...]


@dataclass(frozen=True)
class Update:
    relation_oid: int
    new: tuple[Value, ...]
    old: tuple[Value, ...] | None = None  # with REPLICA IDENTITY FULL or a changed key
    old_kind: str | None = None  # "O": the whole old row, "K": its key columns only


@dataclass(frozen=True)
class Delete:
    relation_oid: int
    old: tuple[Value, ...]
    old_kind: str  # "O" or "K", as for Update


@dataclass(frozen=True)
class Truncate:
    relation_oids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True)
class LogicalMessage:
    """``pg_logical_emit_message``'s message (with the ``messages`` option)."""

    transactional: bool
    lsn: int
    prefix: str
    content: bytes


Message = (Begin | Commit | Origin | Relation | Type | Insert | Update | Delete | Truncate
           | LogicalMessage)


class _Reader:
    """A cursor over one message's bytes; every read checks the length first."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise PgoutputError(f"message truncated: {n} bytes wanted at offset {self.pos} "
                                f"of {len(self.data)}")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str) -> int:
        value: int = struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]
        return value

    def int8(self) -> int:
        return self.unpack(">B")

    def int16(self) -> int:
        return self.unpack(">h")

    def int32(self) -> int:
        return self.unpack(">i")

    def uint32(self) -> int:
        return self.unpack(">I")

    def int64(self) -> int:
        return self.unpack(">q")

    def lsn(self) -> int:
        return self.unpack(">Q")

    def char(self) -> str:
        return chr(self.int8())

    def string(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise PgoutputError(f"string not terminated at offset {self.pos}")
        value = _text(self.data[self.pos:end])
        self.pos = end + 1
        return value

    def timestamp(self) -> dt.datetime:
        return PG_EPOCH + dt.timedelta(microseconds=self.int64())

    def tuple(self) -> tuple[Value, ...]:
        values: list[Value] = []
        for _ in range(self.int16()):
            kind = self.char()
            if kind == "n":
                values.append(None)
            elif kind == "u":
                values.append(UNCHANGED)
            elif kind in "tb":
                raw = self.take(self.int32())
                values.append(_text(raw) if kind == "t" else raw)
            else:
                raise PgoutputError(f"unknown tuple column kind {kind!r}")
        return tuple(values)

    def done(self) -> None:
        if self.pos != len(self.data):
            raise PgoutputError(f"{len(self.data) - self.pos} bytes left over after the message")


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:  # the relay asks for UTF-8 (client_encoding)
        raise PgoutputError(f"a text column that is not UTF-8: {exc}") from exc


def _relation(r: _Reader) -> Relation:
    oid, namespace, name, identity = r.uint32(), r.string(), r.string(), r.char()
    columns = []
    for _ in range(r.int16()):
        flags, col_name = r.int8(), r.string()
        columns.append(Column(col_name, r.uint32(), r.int32(), bool(flags & 1)))
    return Relation(oid, namespace, name, identity, tuple(columns))


def _old_then_new(r: _Reader) -> tuple[str | None, tuple[Value, ...] | None, tuple[Value, ...]]:
    kind = r.char()
    old_kind, old = None, None
    if kind in "KO":
        old_kind, old = kind, r.tuple()
        kind = r.char()
    if kind != "N":
        raise PgoutputError(f"update: expected the new tuple ('N'), got {kind!r}")
    return old_kind, old, r.tuple()


def _update(r: _Reader) -> Update:
    oid = r.uint32()
    old_kind, old, new = _old_then_new(r)
    return Update(oid, new, old, old_kind)


def _delete(r: _Reader) -> Delete:
    oid, kind = r.uint32(), r.char()
    if kind not in "KO":
        raise PgoutputError(f"delete: expected the old tuple ('K' or 'O'), got {kind!r}")
    return Delete(oid, r.tuple(), kind)


def _insert(r: _Reader) -> Insert:
    oid, kind = r.uint32(), r.char()
    if kind != "N":
        raise PgoutputError(f"insert: expected the new tuple ('N'), got {kind!r}")
    return Insert(oid, r.tuple())


def _truncate(r: _Reader) -> Truncate:
    count, options = r.int32(), r.int8()
    return Truncate(tuple(r.uint32() for _ in range(count)), bool(options & 1),
                    bool(options & 2))


def _message(r: _Reader) -> LogicalMessage:
    flags, lsn, prefix = r.int8(), r.lsn(), r.string()
    return LogicalMessage(bool(flags & 1), lsn, prefix, r.take(r.int32()))


_DECODERS: dict[str, Callable[[_Reader], Message]] = {
    "B": lambda r: Begin(r.lsn(), r.timestamp(), r.uint32()),
    "C": lambda r: Commit(r.int8(), r.lsn(), r.lsn(), r.timestamp()),
    "O": lambda r: Origin(r.lsn(), r.string()),
    "R": _relation,
    "Y": lambda r: Type(r.uint32(), r.string(), r.string()),
    "I": _insert,
    "U": _update,
    "D": _delete,
    "T": _truncate,
    "M": _message,
}


def decode(payload: bytes) -> Message:
    """One pgoutput message (protocol version 1) from its bytes; PgoutputError otherwise."""
    if not payload:
        raise PgoutputError("empty message")
    kind = chr(payload[0])
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise PgoutputError(f"unsupported pgoutput message kind {kind!r} (protocol version 1 "
                            "without streaming or two-phase commit is read)")
    reader = _Reader(bytes(payload[1:]))
    message: Message = decoder(reader)
    reader.done()
    return message


class Relations:
    """The relations a replication session has described, by oid."""

    def __init__(self) -> None:
        self.by_oid: dict[int, Relation] = {}

    def add(self, relation: Relation) -> None:
        self.by_oid[relation.oid] = relation  # a later Relation replaces it (DDL)

    def get(self, oid: int) -> Relation:
        relation = self.by_oid.get(oid)
        if relation is None:
            raise PgoutputError(f"a change of relation {oid} before its Relation message")
        return relation

    def row(self, oid: int, values: tuple[Value, ...]) -> dict[str, Value]:
        """``values`` by column name; PgoutputError when they do not fit the relation."""
        relation = self.get(oid)
        if len(values) != len(relation.columns):
            raise PgoutputError(f"{relation.qualified}: {len(values)} values for "
                                f"{len(relation.columns)} columns")
        return {c.name: v for c, v in zip(relation.columns, values, strict=True)}


def lsn_text(lsn: int) -> str:
    """An LSN as PostgreSQL writes it (``16/B374D848``)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """``16/B374D848`` as an integer."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)
