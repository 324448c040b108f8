"""Avro in the Confluent wire format: magic byte 0, a 4-byte big-endian schema id, then the
Avro binary body. Every payload govbus puts on an ingest topic is framed; decoding says
exactly what is wrong with a payload that is not (for the DLQ).

Schemas are parsed and records validated by fastavro. Bodies are written and read by cavro
where the schema has no logical type, in less than half fastavro's time: the hot path decodes
every event and writes every delivery (docs/adr/0015-cavro-on-the-hot-path.md). cavro writes
fastavro's bytes and reads fastavro's values (tests/unit/core/test_serde.py checks both on
generated schemas and records), but for an int whose encoding runs past 32 bits, which no Avro
writer makes: cavro keeps the low 32 bits, as Apache Avro's Java decoder does, where fastavro
returns a number no int holds. A schema with a logical type is written and read by fastavro
alone, whose conversions (dates, decimals, ...) the rest of the bus expects.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import cavro
import fastavro
import orjson

from govbus.core.errors import SerdeError, Violation

MAGIC = 0
HEADER = struct.Struct(">bI")


def frame(schema_id: int, body: bytes) -> bytes:
    return HEADER.pack(MAGIC, schema_id) + body


def unframe(data: bytes | None) -> tuple[int, bytes]:
    """Split a framed payload into (schema id, body)."""
    if not data or len(data) < HEADER.size:
        raise SerdeError(Violation("wire.too_short", "payload", "Art. 7",
                                   f"{len(data or b'')} bytes; a framed event has at least 5"))
    magic, schema_id = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SerdeError(Violation("wire.magic_byte", "payload", "Art. 7",
                                   f"first byte is {data[0]:#04x}, expected 0x00 "
                                   "(Confluent wire format)"))
    return schema_id, data[HEADER.size:]


#: how cavro is asked to behave as fastavro does: records read as plain dicts, a union branch
#: named by fastavro's tuple notation, ``(name, value)``
_CAVRO = cavro.Options(record_decodes_to_dict=True, allow_tuple_notation=True)
#: read after a record: reaches the end of the body, or finds the bytes left after it
_ONE_BYTE = cavro.Schema({"type": "fixed", "name": "govbus.Trailing", "size": 1})


def _has_logical_type(schema: Any) -> bool:
    if isinstance(schema, list):
        return any(_has_logical_type(s) for s in schema)
    if not isinstance(schema, dict):
        return False
    return "logicalType" in schema or any(
        _has_logical_type(v) for k, v in schema.items()
        if k in ("type", "items", "values")) or any(
        _has_logical_type(f.get("type")) for f in schema.get("fields", ()))


def _fast(parsed: Any) -> cavro.Schema | None:
    """cavro's form of a parsed schema, or None where fastavro alone writes and reads it."""
    if _has_logical_type(parsed):
        return None
    try:
        return cavro.Schema(parsed, options=_CAVRO)
    except Exception:  # a schema cavro does not take: fastavro, which parsed it, does it all
        return None


class Codec:
    """One parsed schema, reused for every encode and decode."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = fastavro.parse_schema(schema)
        self._fast = _fast(self.schema)

    def validate(self, datum: dict[str, Any]) -> None:
        fastavro.validation.validate(datum, self.schema, raise_errors=True)

    def encode(self, datum: dict[str, Any]) -> bytes:
        if self._fast is not None:
            try:
                return self._fast.binary_encode(datum)  # type: ignore[no-any-return]
            except Exception:  # fastavro writes it, or says what is wrong with it
                pass
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, self.schema, datum)
        return buf.getvalue()

    def decode(self, body: bytes) -> dict[str, Any]:
        fast = self._fast
        if fast is not None:
            reader = cavro.MemoryReader(body)
            try:
                datum = fast.binary_read(reader)
            except Exception:  # fastavro reads it again below, to say what is wrong
                pass
            else:
                try:
                    _ONE_BYTE.binary_read(reader)
                except EOFError:  # the record was the whole body
                    return datum  # type: ignore[no-any-return]
        return self._strict(body)

    def _strict(self, body: bytes) -> dict[str, Any]:
        """fastavro's reading of ``body``, which names what is wrong with it."""
        buf = io.BytesIO(body)
        try:
            datum = fastavro.schemaless_reader(buf, self.schema, None)
        except (EOFError, StopIteration, ValueError, IndexError, KeyError, TypeError,
                UnicodeDecodeError, OverflowError, MemoryError) as exc:
            raise SerdeError(Violation("avro.decode", "payload", "Art. 7",
                                       f"not a valid Avro record of this schema: "
                                       f"{type(exc).__name__}: {exc}")) from exc
        if buf.tell() != len(body):
            raise SerdeError(Violation("avro.trailing_bytes", "payload", "Art. 7",
                                       f"{len(body) - buf.tell()} bytes after the record"))
        return datum  # type: ignore[return-value]


def _json_default(value: Any) -> str:
    return value.hex() if isinstance(value, bytes) else str(value)


def json_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON; bytes and other non-JSON Avro values as strings.

    orjson, not ``json.dumps``: the hot path encodes a document per delivery, and the
    standard encoder was about a sixth of its time (``make bench``). Same bytes as
    ``json.dumps(value, ensure_ascii=False, separators=(",", ":"))``, except that a float
    may print its exponent differently (``1.5e-7``, not ``1.5e-07``): the same number."""
    return orjson.dumps(value, default=_json_default,
                        option=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS)
