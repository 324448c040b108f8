"""Confluent's Schema Registry REST API over the catalogue's registry: which subject is which
resource, what each answer looks like, and how a candidate schema is tested.

Subjects follow Confluent's TopicNameStrategy, the value subject of a topic being
``<topic>-value``. A registered resource has two: ``ingest.<agency>.<resource>-value`` and
``validated.<agency>.<resource>-value`` (the hot path forwards the same bytes). Version *n* of
either is the resource's registered version *n*; its schema is that version's envelope schema
and its id the schema id the Confluent wire format carries. The registry is read-only: the
catalogue in PostgreSQL is the source of truth and changes only by an approved proposal
(Art. 13).

A delivery topic has one, ``deliver.<recipient>.<resource>-value``: its versions
are the projections of the recipient's grants (:mod:`govbus.core.deliveries`), registered by
the bus at their first delivery. A grant decides their fields, so their level is NONE, and
only the recipient, the resource's provider and the information center see them (Art. 24:
which fields an agency receives is its grant's business).

The compatibility level of a resource is its contract's ``govbus.compatibility`` attribute
(one of :data:`LEVELS`), :data:`DEFAULT_LEVEL` when it has none; the levels and how each
picks the versions to check are :mod:`govbus.core.compat`'s, which the proposals' checks share.

The mapping, the shapes and the checks are pure; the PostgreSQL reads are at the end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import fastavro
import psycopg2

from govbus.core import compat, db, topics
from govbus.core.compat import LEVEL_ATTRIBUTE, InvalidLevel, level_incompatibilities, level_of
from govbus.core.errors import DatabaseError, GovbusError

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"
VALUE_SUFFIX = "-value"
PROPOSAL_ROUTE = "POST /v1/catalogue/proposals"

# Confluent's error codes (its API reference, "Errors")
SUBJECT_NOT_FOUND, VERSION_NOT_FOUND, SCHEMA_NOT_FOUND = 40401, 40402, 40403
INVALID_SCHEMA, INVALID_VERSION, INVALID_LEVEL = 42201, 42202, 42203
OPERATION_NOT_PERMITTED = 42205
UNAUTHORIZED, FORBIDDEN, STORE_ERROR = 401, 40301, 50001

MAX_VERSION = 2**31 - 1
# the levels and how each picks its versions, shared with the proposals' checks
BACKWARD, FORWARD, FULL, NONE = compat.BACKWARD, compat.FORWARD, compat.FULL, compat.NONE
LEVELS, DEFAULT_LEVEL, against = compat.LEVELS, compat.DEFAULT_LEVEL, compat.against


class RegistryApiError(GovbusError):
    """A refusal of the Schema Registry API, in Confluent's terms: the HTTP status and
    Confluent's ``error_code``."""

    rule = "registry.refused"
    article = "Art. 13"

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.error_code = status, error_code

    def body(self) -> dict[str, Any]:
        return error_body(self.error_code, str(self))


def error_body(error_code: int, message: str) -> dict[str, Any]:
    """Confluent's error shape, which stock clients parse."""
    return {"error_code": error_code, "message": message}


@dataclass(frozen=True)
class SubjectVersion:
    """One registered version of a resource, as each of its subjects shows it (or, with
    ``subject``, a version of one delivery subject)."""

    resource_id: str
    version: int
    schema_id: int
    schema: dict[str, Any]  # the envelope schema records are framed with
    subject: str | None = None  # a delivery subject's; None: the resource's subjects

    @property
    def subjects(self) -> list[str]:
        return [self.subject] if self.subject else subjects_of(self.resource_id)

    @property
    def recipient(self) -> str | None:
        found = delivery_of(self.subject) if self.subject else None
        return found[0] if found else None

    @property
    def text(self) -> str:
        """The schema as Confluent answers it: a JSON text."""
        return schema_text(self.schema)


# --- subjects ---------------------------------------------------------------------------

def subjects_of(resource_id: str) -> list[str]:
    """The value subjects of a registered resource (``agency.resource``): of its ingest and
    its validated topic."""
    agency, _, name = resource_id.partition(".")
    return [f"{topic}{VALUE_SUFFIX}" for topic in (topics.ingest(agency, name),
                                                   topics.validated(resource_id))]


def resource_of(subject: str) -> str | None:
    """The resource id a subject is of; None if it is none of :func:`subjects_of`'s."""
    if not subject.endswith(VALUE_SUFFIX):
        return None
    topic = subject.removesuffix(VALUE_SUFFIX)
    for prefix in (topics.INGEST_PREFIX, topics.VALIDATED_PREFIX):
        if topic.startswith(prefix):
            resource_id = topic.removeprefix(prefix)
            agency, dot, name = resource_id.partition(".")
            if dot and agency and name and "." not in name:
                return resource_id
    return None


def delivery_of(subject: str) -> tuple[str, str] | None:
    """(recipient, resource name) of a delivery topic's value subject, else None."""
    if not subject.endswith(VALUE_SUFFIX):
        return None
    topic = subject.removesuffix(VALUE_SUFFIX)
    if not topic.startswith(topics.DELIVER_PREFIX):
        return None
    parts = topic.removeprefix(topics.DELIVER_PREFIX).split(".")
    if len(parts) != 2 or not all(parts):
        return None
    return parts[0], parts[1]


def may_see(agency: str, version: SubjectVersion, center: bool) -> bool:
    """Whether ``agency`` sees ``version``: every catalogue version; a delivery projection
    only as its recipient, its resource's provider or the information center (``center``)."""
    if version.subject is None:
        return True
    return center or agency in (version.recipient, version.resource_id.partition(".")[0])


def subject_not_found(subject: str) -> RegistryApiError:
    return RegistryApiError(404, SUBJECT_NOT_FOUND, f"Subject '{subject}' not found. The "
                            "subjects are ingest.<agency>.<resource>-value and "
                            "validated.<agency>.<resource>-value of the registered catalogue "
                            "and deliver.<recipient>.<resource>-value of the deliveries "
                            "you may see (GET /registry/subjects)")


def schema_not_found(schema_id: int) -> RegistryApiError:
    return RegistryApiError(404, SCHEMA_NOT_FOUND, f"Schema {schema_id} not found")


def page(items: list[Any], offset: int = 0, limit: int = -1) -> list[Any]:
    """Confluent's pagination: ``limit`` < 0 means all."""
    rest = items[max(offset, 0):]
    return rest if limit < 0 else rest[:limit]


# --- versions ---------------------------------------------------------------------------

def parse_version(text: str) -> int | None:
    """A version path segment: a number in [1, 2^31-1], or ``latest`` (also ``-1``), None."""
    if text in ("latest", "-1"):
        return None
    if text.isdigit() and 1 <= int(text) <= MAX_VERSION:
        return int(text)
    raise RegistryApiError(422, INVALID_VERSION, f"The specified version '{text}' is not a "
                           "valid version id. Allowed values are between [1, 2^31-1] and the "
                           "string \"latest\"")


def pick(subject: str, versions: list[SubjectVersion], text: str) -> SubjectVersion:
    """The version ``text`` names among a subject's ``versions`` (oldest first)."""
    number = parse_version(text)
    if not versions:
        raise subject_not_found(subject)
    if number is None:
        return versions[-1]
    for v in versions:
        if v.version == number:
            return v
    raise RegistryApiError(404, VERSION_NOT_FOUND, f"Version {number} not found. Subject "
                           f"'{subject}' has versions {[v.version for v in versions]}")


def version_body(subject: str, v: SubjectVersion) -> dict[str, Any]:
    """``GET /subjects/{subject}/versions/{version}``'s answer."""
    return {"subject": subject, "version": v.version, "id": v.schema_id, "schema": v.text}


def schema_text(schema: dict[str, Any]) -> str:
    return json.dumps(schema, ensure_ascii=False, separators=(",", ":"))


# --- candidate schemas ------------------------------------------------------------------

def parse_candidate(schema: str, schema_type: str | None = None,
                    references: list[Any] | None = None) -> dict[str, Any]:
    """A request's Avro schema, parsed; 42201 if it is not one."""
    if (schema_type or "AVRO").upper() != "AVRO":
        raise RegistryApiError(422, INVALID_SCHEMA, f"Invalid schema type {schema_type}: the "
                               "catalogue's contracts are Avro (schemaType AVRO)")
    if references:
        raise RegistryApiError(422, INVALID_SCHEMA, "Invalid schema: the catalogue's schemas "
                               "have no references")
    try:
        parsed = json.loads(schema)
    except json.JSONDecodeError as exc:
        raise RegistryApiError(422, INVALID_SCHEMA, f"Invalid schema: not JSON: {exc.msg} at "
                               f"line {exc.lineno} column {exc.colno}") from exc
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        raise RegistryApiError(422, INVALID_SCHEMA, "Invalid schema: the value schema of a "
                               "catalogue subject is an Avro record (the envelope)")
    try:
        fastavro.parse_schema(parsed, _write_hint=False)
    except Exception as exc:  # fastavro raises several types (SchemaParseException, ...)
        raise RegistryApiError(422, INVALID_SCHEMA, f"Invalid schema: {exc}") from exc
    return parsed


def _canonical(schema: dict[str, Any]) -> str:
    return str(fastavro.schema.to_parsing_canonical_form(
        fastavro.parse_schema(schema, _write_hint=False)))


def matching(candidate: dict[str, Any], versions: list[SubjectVersion],
             normalize: bool = False) -> SubjectVersion | None:
    """The first registered version whose schema is ``candidate`` (as JSON; with
    ``normalize``, by Avro's Parsing Canonical Form), else None."""
    for v in versions:
        if v.schema == candidate:
            return v
    if normalize:
        wanted = _canonical(candidate)
        return next((v for v in versions if _canonical(v.schema) == wanted), None)
    return None


def refused_registration(subject: str) -> RegistryApiError:
    """Why ``POST /subjects/{subject}/versions`` registers nothing new."""
    return RegistryApiError(422, OPERATION_NOT_PERMITTED, f"Subject '{subject}' is in "
                            "read-only mode: the catalogue is the source of truth and only an "
                            "approved catalogue change registers a schema (Art. 13). Propose "
                            f"the resource's contract with {PROPOSAL_ROUTE} (or `govbus "
                            "catalogue propose`); once the information center approves it, "
                            "its schema is registered here and this request answers its id")


def refused_change(what: str) -> RegistryApiError:
    return RegistryApiError(422, OPERATION_NOT_PERMITTED, f"{what} is not permitted: the "
                            "registry is read-only, the catalogue is changed by approved "
                            f"proposals ({PROPOSAL_ROUTE}); a resource's compatibility level "
                            f"is its contract's govbus.{LEVEL_ATTRIBUTE} attribute")


# --- compatibility ----------------------------------------------------------------------

def compatibility_level(meta: dict[str, Any] | None) -> str:
    """A resource's level from its catalogue entry (``govbus.compatibility``); 42203 when it
    names none of :data:`LEVELS`."""
    try:
        return level_of(meta)
    except InvalidLevel as exc:
        raise RegistryApiError(422, INVALID_LEVEL, f"Invalid compatibility level in the "
                               f"catalogue entry: {exc}") from exc


def config_body(level: str) -> dict[str, Any]:
    return {"compatibilityLevel": level}


def incompatible(level: str, candidate: dict[str, Any],
                 versions: list[SubjectVersion]) -> list[str]:
    """Why ``candidate`` breaks ``level`` against each of ``versions``; [] if it does not
    (:func:`govbus.core.compat.level_incompatibilities`)."""
    return level_incompatibilities(level, candidate, [(v.version, v.schema) for v in versions])


def compatibility_body(level: str, reasons: list[str], verbose: bool) -> dict[str, Any]:
    """``POST /compatibility/...``'s answer; ``messages`` when ``verbose``, as Confluent."""
    out: dict[str, Any] = {"is_compatible": not reasons}
    if verbose:
        out["messages"] = [*reasons, f"compatibility: {level}"] if reasons else []
    return out


# --- PostgreSQL -------------------------------------------------------------------------

def _rows(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    try:
        with db.transaction(dsn) as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot read the schema registry: {exc}") from exc


def registered_resources(dsn: str) -> list[str]:
    """Every resource with a registered version, by id."""
    return [r[0] for r in _rows(dsn, "SELECT DISTINCT resource_id FROM schema_versions "
                                     "ORDER BY resource_id")]


def versions_of(dsn: str, resource_id: str
                ) -> tuple[list[SubjectVersion], dict[str, Any] | None]:
    """A resource's registered versions (oldest first) and its registered catalogue entry
    (whose level :func:`compatibility_level` reads)."""
    rows = _rows(dsn, """SELECT v.version, v.schema_id, v.envelope_schema, r.metadata
                         FROM schema_versions v LEFT JOIN catalogue_resources r
                         USING (resource_id) WHERE v.resource_id = %s ORDER BY v.version""",
                 (resource_id,))
    versions = [SubjectVersion(resource_id, r[0], r[1], r[2]) for r in rows]
    meta = rows[-1][3] if rows and isinstance(rows[-1][3], dict) else None
    return versions, meta


def by_schema_id(dsn: str, schema_id: int) -> SubjectVersion | None:
    rows = _rows(dsn, "SELECT resource_id, version, schema_id, envelope_schema, NULL "
                      "FROM schema_versions WHERE schema_id = %s UNION ALL "
                      "SELECT resource_id, version, schema_id, schema, subject "
                      "FROM delivery_schemas WHERE schema_id = %s", (schema_id, schema_id))
    return SubjectVersion(*rows[0]) if rows else None


def delivery_subjects(dsn: str) -> list[tuple[str, str]]:
    """(subject, resource id) of every delivery subject with a registered projection."""
    return [(r[0], r[1]) for r in _rows(dsn, "SELECT DISTINCT subject, resource_id FROM "
                                             "delivery_schemas ORDER BY subject")]


def delivery_versions(dsn: str, subject: str) -> list[SubjectVersion]:
    """A delivery subject's versions, oldest first."""
    rows = _rows(dsn, "SELECT resource_id, version, schema_id, schema, subject "
                      "FROM delivery_schemas WHERE subject = %s ORDER BY version", (subject,))
    return [SubjectVersion(*r) for r in rows]
