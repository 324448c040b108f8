"""The pgoutput parser on byte strings, as the server sends them (protocol version 1)."""

from __future__ import annotations

import datetime as dt
import struct

import pytest

from govbus.producers.pgoutput import (
    PG_EPOCH,
    UNCHANGED,
    Begin,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Origin,
    PgoutputError,
    Relation,
    Relations,
    Truncate,
    Type,
    Update,
    decode,
    lsn_text,
    parse_lsn,
)

WHEN = dt.datetime(2026, 3, 1, 8, 30, 15, 123456, tzinfo=dt.UTC)
MICROS = (WHEN - PG_EPOCH) // dt.timedelta(microseconds=1)


def s(text: str) -> bytes:
    return text.encode() + b"\0"


def text(value: str) -> bytes:
    raw = value.encode()
    return b"t" + struct.pack(">i", len(raw)) + raw


def tup(*cols: bytes) -> bytes:
    return struct.pack(">h", len(cols)) + b"".join(cols)


RELATION = (b"R" + struct.pack(">I", 16390) + s("ps_1a2b") + s("ps_residents") + b"f"
            + struct.pack(">h", 3)
            + b"\x01" + s("resident_id") + struct.pack(">Ii", 25, -1)
            + b"\x00" + s("name") + struct.pack(">Ii", 1043, 104)
            + b"\x00" + s("photo") + struct.pack(">Ii", 17, -1))


def test_relation() -> None:
    rel = decode(RELATION)
    assert isinstance(rel, Relation)
    assert (rel.oid, rel.qualified, rel.replica_identity) == (16390, "ps_1a2b.ps_residents", "f")
    assert [(c.name, c.type_oid, c.type_modifier, c.key) for c in rel.columns] == [
        ("resident_id", 25, -1, True), ("name", 1043, 104, False), ("photo", 17, -1, False)]


def test_begin_and_commit() -> None:
    begin = decode(b"B" + struct.pack(">Qqi", 0x16B374D848, MICROS, 7781))
    assert begin == Begin(final_lsn=0x16B374D848, commit_time=WHEN, xid=7781)
    commit = decode(b"C" + struct.pack(">BQQq", 0, 0x16B374D848, 0x16B374D878, MICROS))
    assert commit == Commit(flags=0, commit_lsn=0x16B374D848, end_lsn=0x16B374D878,
                            commit_time=WHEN)


def test_xid_above_two_billion_is_unsigned() -> None:
    begin = decode(b"B" + struct.pack(">QqI", 1, 0, 3_000_000_000))
    assert isinstance(begin, Begin) and begin.xid == 3_000_000_000


def test_insert_with_null_and_non_ascii_text() -> None:
    msg = decode(b"I" + struct.pack(">I", 16390) + b"N"
                 + tup(text("360502199001011234"), text("王芳"), b"n"))
    assert msg == Insert(16390, ("360502199001011234", "王芳", None))


def test_update_with_old_row_and_unchanged_toast() -> None:
    msg = decode(b"U" + struct.pack(">I", 16390)
                 + b"O" + tup(text("k1"), text("old"), text("a long photo"))
                 + b"N" + tup(text("k1"), text("new"), b"u"))
    assert isinstance(msg, Update)
    assert msg.old_kind == "O" and msg.old == ("k1", "old", "a long photo")
    assert msg.new == ("k1", "new", UNCHANGED)
    assert msg.new[2] is UNCHANGED and not msg.new[2]  # falsy, but not None
    assert repr(UNCHANGED) == "UNCHANGED"


def test_update_without_old_row_and_with_key_only() -> None:
    plain = decode(b"U" + struct.pack(">I", 5) + b"N" + tup(text("a")))
    assert plain == Update(5, ("a",), None, None)
    keyed = decode(b"U" + struct.pack(">I", 5) + b"K" + tup(text("a")) + b"N" + tup(text("b")))
    assert keyed == Update(5, ("b",), ("a",), "K")


def test_binary_column_stays_bytes() -> None:
    msg = decode(b"I" + struct.pack(">I", 5) + b"N"
                 + tup(b"b" + struct.pack(">i", 3) + b"\x00\x01\xff"))
    assert msg == Insert(5, (b"\x00\x01\xff",))


def test_delete_full_and_key() -> None:
    full = decode(b"D" + struct.pack(">I", 16390) + b"O" + tup(text("k1"), text("n"), b"n"))
    assert full == Delete(16390, ("k1", "n", None), "O")
    key = decode(b"D" + struct.pack(">I", 16390) + b"K" + tup(text("k1"), b"n", b"n"))
    assert key == Delete(16390, ("k1", None, None), "K")


def test_truncate() -> None:
    msg = decode(b"T" + struct.pack(">iB", 2, 3) + struct.pack(">II", 16390, 16400))
    assert msg == Truncate((16390, 16400), cascade=True, restart_identity=True)
    plain = decode(b"T" + struct.pack(">iB", 1, 0) + struct.pack(">I", 16390))
    assert plain == Truncate((16390,), cascade=False, restart_identity=False)


def test_origin_type_and_logical_message() -> None:
    assert decode(b"O" + struct.pack(">Q", 99) + s("node_a")) == Origin(99, "node_a")
    assert decode(b"Y" + struct.pack(">I", 70001) + s("public") + s("mood")) == Type(
        70001, "public", "mood")
    content = b'{"a": 1}'
    msg = decode(b"M" + struct.pack(">BQ", 1, 0x20) + s("govbus.snapshot")
                 + struct.pack(">i", len(content)) + content)
    assert msg == LogicalMessage(True, 0x20, "govbus.snapshot", content)


@pytest.mark.parametrize("payload, says", [
    (b"", "empty"),
    (b"S" + struct.pack(">I", 1), "unsupported pgoutput message kind 'S'"),
    (b"B" + struct.pack(">Q", 1), "truncated"),
    (b"I" + struct.pack(">I", 5) + b"N" + tup(b"x"), "unknown tuple column kind 'x'"),
    (b"I" + struct.pack(">I", 5) + b"K" + tup(text("a")), "expected the new tuple"),
    (b"D" + struct.pack(">I", 5) + b"N" + tup(text("a")), "expected the old tuple"),
    (b"U" + struct.pack(">I", 5) + b"O" + tup(text("a")) + b"X", "expected the new tuple"),
    (b"I" + struct.pack(">I", 5) + b"N" + struct.pack(">h", 1) + b"t" + struct.pack(">i", 9)
     + b"abc", "truncated"),
    (b"O" + struct.pack(">Q", 1) + b"no terminator", "not terminated"),
    (b"C" + struct.pack(">BQQq", 0, 1, 2, 3) + b"\0", "1 bytes left over"),
])
def test_malformed_messages_are_refused(payload: bytes, says: str) -> None:
    with pytest.raises(PgoutputError, match=says):
        decode(payload)


def test_relations_map_columns_by_name() -> None:
    relations = Relations()
    with pytest.raises(PgoutputError, match="before its Relation message"):
        relations.row(16390, ("a",))
    rel = decode(RELATION)
    assert isinstance(rel, Relation)
    relations.add(rel)
    assert relations.row(16390, ("k", None, UNCHANGED)) == {
        "resident_id": "k", "name": None, "photo": UNCHANGED}
    with pytest.raises(PgoutputError, match="2 values for 3 columns"):
        relations.row(16390, ("k", None))


def test_lsn_text_round_trip() -> None:
    assert lsn_text(0x16B374D848) == "16/B374D848"
    assert parse_lsn("16/B374D848") == 0x16B374D848
    assert parse_lsn(lsn_text(0)) == 0


def test_text_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(PgoutputError, match="not UTF-8"):
        decode(b"I" + struct.pack(">I", 5) + b"N" + tup(b"t" + struct.pack(">i", 1) + b"\xff"))
