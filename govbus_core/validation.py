"""Contract rules for change events: pure functions, shared by the publisher (refuse before
sending) and the gate (route to the DLQ). Each rule registers itself with ``@rule``; adding a
rule is adding a function. A rule returns the violations it finds, never raises.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import fastavro
import fastavro.validation
from fastavro._validate_common import ValidationError

from govbus.core.catalogue import Resource
from govbus.core.errors import Violation
from govbus.core.identifiers import CHECKS, REASON_RULES, check_division_code

Event = dict[str, Any]
Rule = Callable[[Resource, Event, str], Iterator[Violation]]
RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
    RULES.append(fn)
    return fn


def check_event(resource: Resource, event: Event, sender: str, *, now_ms: int | None = None,
                max_skew_ms: int = 0) -> list[Violation]:
    """Every violation of ``event`` against ``resource``'s contract; ``sender`` is the agency
    whose ingest topic carried it (or that calls the publish API). With ``now_ms`` (the
    checker's clock, epoch ms) also :func:`occurred_in_time`: ``occurred_ms`` at most
    ``max_skew_ms`` ahead of it. The gate always passes its clock."""
    found = [v for fn in RULES for v in fn(resource, event, sender)]
    if now_ms is not None:
        found.extend(occurred_in_time(event, now_ms, max_skew_ms))
    return found


def image(event: Event) -> dict[str, Any] | None:
    """The row image the event is about: ``after``, or ``before`` for a delete (None for a
    truncate, which is about no one row)."""
    op = event.get("op")
    if op == "t":
        return None
    return event.get("before") if op == "d" else event.get("after")


@rule
def registered_provider(resource: Resource, event: Event, sender: str) -> Iterator[Violation]:
    """Art. 7-8: only the catalogued provider publishes a resource."""
    claimed = (event.get("source") or {}).get("agency")
    if sender != resource.provider:
        yield Violation("provider.not_registered", "sender", "Art. 8",
                        f"{sender!r} is not the registered provider of {resource.id} "
                        f"({resource.provider!r})")
    elif claimed != sender:
        yield Violation("provider.source_mismatch", "source.agency", "Art. 8",
                        f"event claims {claimed!r} but was sent by {sender!r}")
    if event.get("resource") not in (None, resource.id):
        yield Violation("envelope.resource_mismatch", "resource", "Art. 7",
                        f"event is for {event.get('resource')!r}, topic carries {resource.id}")


@rule
def locality(resource: Resource, event: Event, sender: str) -> Iterator[Violation]:
    """Art. 12: every record states its locality as an administrative division code."""
    reason = check_division_code((event.get("source") or {}).get("locality"))
    if reason:
        yield Violation("locality.invalid", "source.locality", "Art. 12", reason)


@rule
def row_image(resource: Resource, event: Event, sender: str) -> Iterator[Violation]:
    """A create/update/snapshot carries ``after``; a delete carries ``before``; the key is the
    entity's identifier (Art. 12). A truncate (op ``t``) is about the whole resource, no one
    entity: it carries neither image and an empty key (Art. 7), so that no recipient takes a
    row of it for an entity's state."""
    op = event.get("op")
    if op == "t":
        yield from _truncate_shape(event)
        return
    row = image(event)
    if row is None:
        part = "before" if op == "d" else "after"
        yield Violation("envelope.image_missing", part, "Art. 7",
                        f"op {op!r} needs the {part!r} row image")
        return
    key_field = resource.key_field or ""
    if event.get("key") != row.get(key_field):
        yield Violation("envelope.key_mismatch", "key", "Art. 12",
                        f"key {event.get('key')!r} differs from {key_field} "
                        f"{row.get(key_field)!r}")


def _truncate_shape(event: Event) -> Iterator[Violation]:
    for part in ("before", "after"):
        if event.get(part) is not None:
            yield Violation("envelope.truncate_image", part, "Art. 7",
                            f"a truncate (op 't') carries no row image, but {part!r} is set")
    if event.get("key") != "":
        yield Violation("envelope.truncate_key", "key", "Art. 7",
                        f"a truncate (op 't') names no entity: its key must be empty, not "
                        f"{event.get('key')!r}")


@rule
def identifiers(resource: Resource, event: Event, sender: str) -> Iterator[Violation]:
    """Art. 12 mandatory identifiers, present and well-formed with their check digits."""
    row = image(event)
    if row is None:
        return
    yield from row_identifiers(resource, row)


def row_identifiers(resource: Resource, row: dict[str, Any]) -> Iterator[Violation]:
    """The Art. 12 identifier violations of one row image (fields named as in the row)."""
    for spec in resource.fields:
        if not spec.identifier or spec.identifier not in CHECKS:
            continue
        value = row.get(spec.name)
        if value is None or value == "":
            if not spec.nullable:
                yield Violation("identifier.missing", spec.name, "Art. 12",
                                f"mandatory {spec.identifier} is missing")
            continue
        reason = CHECKS[spec.identifier](value)
        if reason:
            yield Violation(f"identifier.{REASON_RULES.get(reason, spec.identifier)}",
                            spec.name, "Art. 12", reason)


MAX_TEXT_CHARS = 4096  # a catalogue text field; longer is a faulty adapter, not data (Art. 7)
MAX_ENVELOPE_CHARS = 128  # event id, key, agency, locality, system, table
# PostgreSQL's text and jsonb cannot hold U+0000: such a value would stall every writer of the
# delivery log and of entity_state, so it is turned back at the gate
NUL = "contains a NUL character (U+0000), which no text column can store"


@rule
def field_sizes(resource: Resource, event: Event, sender: str) -> Iterator[Violation]:
    """Art. 7 data format: no text field larger than the catalogue's format allows, so an
    oversized value can neither bloat every recipient's copy nor the delivery log."""
    for part in ("before", "after"):
        row = event.get(part)
        if not isinstance(row, dict):
            continue
        for name, value in row.items():
            if isinstance(value, (str, bytes)) and len(value) > MAX_TEXT_CHARS:
                yield Violation("field.too_long", f"{part}.{name}", "Art. 7",
                                f"{len(value)} characters; at most {MAX_TEXT_CHARS}")
            elif isinstance(value, str) and "\x00" in value:
                yield Violation("field.nul_character", f"{part}.{name}", "Art. 7", NUL)
    source = event.get("source") if isinstance(event.get("source"), dict) else {}
    for name, value in [("event_id", event.get("event_id")), ("key", event.get("key"))] + [
            (f"source.{k}", v) for k, v in (source or {}).items()]:
        if isinstance(value, str) and len(value) > MAX_ENVELOPE_CHARS:
            yield Violation("field.too_long", name, "Art. 7",
                            f"{len(value)} characters; at most {MAX_ENVELOPE_CHARS}")
        elif isinstance(value, str) and "\x00" in value:
            yield Violation("field.nul_character", name, "Art. 7", NUL)


@rule
def event_id_present(resource: Resource, event: Event, sender: str) -> Iterator[Violation]:
    """Art. 19: every event is named by its id (the ``event_id`` header recipients de-duplicate
    by, the delivery log's entry, the reuse check): an empty or blank id names nothing."""
    event_id = event.get("event_id")
    if not isinstance(event_id, str) or not event_id or event_id.isspace():
        yield Violation("envelope.event_id_blank", "event_id", "Art. 19",
                        f"event id {event_id!r} is empty or blank; every event needs a unique "
                        "id")


@rule
def before_image(resource: Resource, event: Event, sender: str) -> Iterator[Violation]:
    """Art. 12: a ``before`` image sent with a create, update or snapshot is held to the same
    identifier rules as ``after`` (a delete's ``before`` is its row image, checked as such):
    every recipient is delivered it as the entity's previous state."""
    before = event.get("before")
    if before is None or event.get("op") == "d":
        return
    if not isinstance(before, dict):
        yield Violation("envelope.before_invalid", "before", "Art. 7",
                        f"the before image is a {type(before).__name__}, not a record")
        return
    for v in row_identifiers(resource, before):
        yield Violation("envelope.before_invalid", f"before.{v.field}", v.article,
                        f"{v.rule}: {v.message}")


def occurred_in_time(event: Event, now_ms: int, max_skew_ms: int) -> Iterator[Violation]:
    """Art. 19 accuracy: ``occurred_ms`` at most ``max_skew_ms`` (GOVBUS_MAX_CLOCK_SKEW_MS)
    ahead of ``now_ms``. Later state wins by ``occurred_ms`` (``entity_state``, the online
    query, the reconciler), so one event from the future would shadow every true correction of
    its entity until that time. Not a ``@rule``: it needs the checker's clock, passed in."""
    occurred = event.get("occurred_ms")
    if isinstance(occurred, (int, float)) and not isinstance(occurred, bool) and \
            occurred > now_ms + max_skew_ms:
        yield Violation("envelope.occurred_in_future", "occurred_ms", "Art. 19",
                        f"occurred_ms {occurred} ({_utc(occurred)}) is "
                        f"{(occurred - now_ms) / 1000:.0f} s ahead of the gate's clock "
                        f"({_utc(now_ms)}); at most {max_skew_ms} ms is allowed")


def _utc(ms: float) -> str:
    try:
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return "not a representable time"


COMPILED_RULES = (registered_provider, locality, row_image, identifiers, field_sizes,
                  event_id_present, before_image)
#: (event, sender, latest_ms): latest_ms is the latest ``occurred_ms`` accepted, the gate's
#: clock plus the allowed skew (:func:`occurred_in_time`)
Acceptor = Callable[[Event, str, int], bool]
LOCALITY_MEMO = 4096  # valid division codes an acceptor remembers (a city uses a few hundred)


def compile_acceptor(resource: Resource) -> Acceptor:
    """A predicate that is True only for an event in which :func:`check_event` finds nothing.

    The gate's hot loop. :func:`check_event` interprets the catalogue for every event (the
    rule list, each field's metadata, a generator per rule); this looks all of that up once
    per resource and runs the same rules as straight-line checks, stopping at the first doubt.
    False means "look closer", never "reject": the caller then runs :func:`check_event`, which
    stays the one authority and names the violations. So the predicate only has to be sound
    (True implies no violation), which ``tests/unit/test_validation.py`` checks on arbitrary
    events; any exception (an event not shaped like a decoded envelope) counts as doubt.
    """
    if tuple(RULES) != COMPILED_RULES:  # a rule added since: this predicate would miss it
        return _doubt
    rid, provider, key_field = resource.id, resource.provider, resource.key_field or ""
    ids = tuple((spec.name, CHECKS[spec.identifier], spec.nullable)
                for spec in resource.fields if spec.identifier and spec.identifier in CHECKS)
    valid_localities: set[str] = set()

    def ids_ok(row: dict[str, Any]) -> bool:  # before_image: the identifiers rule's loop
        for name, check, nullable in ids:
            value = row.get(name)
            if value is None or value == "":
                if not nullable:
                    return False
            elif check(value):
                return False
        return True

    def accept(event: Event, sender: str, latest_ms: int) -> bool:
        try:
            source = event["source"]
            if sender != provider or source["agency"] != sender or \
                    event.get("resource") not in (None, rid):
                return False  # registered_provider
            locality = source.get("locality")
            if locality not in valid_localities:  # locality
                if check_division_code(locality):
                    return False
                if len(valid_localities) < LOCALITY_MEMO:
                    valid_localities.add(locality)
            before = event.get("before")
            op = event.get("op")
            if op == "t":
                return False  # row_image's truncate shape: rare, the rules decide
            delete = op == "d"
            row = before if delete else event.get("after")
            if row is None or event.get("key") != row.get(key_field):
                return False  # row_image
            for name, check, nullable in ids:  # identifiers (inline: the hot loop)
                value = row.get(name)
                if value is None or value == "":
                    if not nullable:
                        return False
                elif check(value):
                    return False
            if before is not None and not delete and not ids_ok(before):
                return False  # before_image (a non-record raises: doubt)
            event_id = event["event_id"]  # event_id_present
            if not isinstance(event_id, str) or not event_id or event_id.isspace():
                return False
            occurred = event["occurred_ms"]  # occurred_in_time
            if type(occurred) is not int or occurred > latest_ms:
                return False
            return _sizes_ok(event, source)  # field_sizes
        except (KeyError, TypeError, AttributeError, ValueError):
            return False

    return accept


def _doubt(event: Event, sender: str, latest_ms: int) -> bool:
    return False


def _sizes_ok(event: Event, source: dict[str, Any]) -> bool:
    """No value :func:`field_sizes` would object to."""
    for part in (event.get("before"), event.get("after")):
        if isinstance(part, dict):
            for value in part.values():
                if isinstance(value, str):
                    if len(value) > MAX_TEXT_CHARS or "\x00" in value:
                        return False
                elif isinstance(value, bytes) and len(value) > MAX_TEXT_CHARS:
                    return False
    if not isinstance(source, dict):
        return False
    for value in (event.get("event_id"), event.get("key"), *source.values()):
        if isinstance(value, str) and (len(value) > MAX_ENVELOPE_CHARS or "\x00" in value):
            return False
    return True


def check_record_types(resource: Resource, parsed: Any, record: dict[str, Any]
                       ) -> list[Violation]:
    """Avro type conformance of one record, naming each offending field (Art. 7 data format).

    ``parsed`` is the parsed record schema (parse it once per resource)."""
    if not isinstance(record, dict):
        return [Violation("contract.not_a_record", "record", "Art. 7",
                          f"expected a JSON object, got {type(record).__name__}")]
    known = {f.name for f in resource.fields}
    found = [Violation("contract.unknown_field", k, "Art. 7",
                       f"{k!r} is not a field of {resource.id}") for k in record if k not in known]
    for spec in resource.fields:
        value = record.get(spec.name)
        try:
            ok = fastavro.validation.validate(value, parsed_field(parsed, spec.name),
                                              raise_errors=False)
        except (ValidationError, ValueError, TypeError):
            ok = False
        if not ok:
            expected = spec.avro_type if isinstance(spec.avro_type, str) else \
                fastavro_type_name(spec.avro_type)
            what = "missing" if spec.name not in record else f"{value!r:.60}"
            found.append(Violation("contract.type", spec.name, "Art. 7",
                                   f"{what} does not conform to {expected}"))
    return found


def parsed_field(parsed: Any, name: str) -> Any:
    for f in parsed["fields"]:
        if f["name"] == name:
            return f["type"]
    raise KeyError(name)


def fastavro_type_name(avro_type: Any) -> str:
    if isinstance(avro_type, list):
        return " | ".join(fastavro_type_name(t) for t in avro_type)
    if isinstance(avro_type, dict):
        if avro_type.get("type") == "enum":
            return "one of " + ", ".join(avro_type.get("symbols", []))
        if avro_type.get("type") == "array":
            return f"array of {fastavro_type_name(avro_type.get('items'))}"
        return str(avro_type.get("type"))
    return str(avro_type)
