"""A Schema Registry API compatible with Confluent's, under ``/registry``, over the catalogue's
registry in PostgreSQL (Art. 13), so that stock clients (``SchemaRegistryClient``, the Avro
deserializers) look up the schema ids that ``ingest.*``, ``validated.*`` and ``deliver.*``
records carry.

Reading is open to every authenticated agency: contracts are the catalogue, public to the
agencies. A delivery subject (``deliver.<recipient>.<resource>-value``, the projections of a
grant) is seen only by its recipient, the resource's provider and the center; to anyone else
it does not exist (404). Credentials: the agency's token as ``Authorization: Bearer
<token>``, or HTTP Basic with the agency as user name and its token as password
(``basic.auth.user.info``). Nothing is registered here: an approved catalogue proposal
registers a schema. Refusals use Confluent's error shape (``{"error_code": …, "message":
…}``), which stock clients parse; the mapping and the shapes are :mod:`govbus.core.registry_api`.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.routing import Match

from govbus.api import errors
from govbus.api.auth import AGENCY, role_of
from govbus.api.deps import dsn
from govbus.core import registry_api as sr
from govbus.core.access import AccessError
from govbus.core.errors import DatabaseError, ForbiddenError, GovbusError

log = logging.getLogger("govbus.api.registry")
CHALLENGE = 'Basic realm="govbus registry", Bearer realm="govbus"'


class RegistryJSON(JSONResponse):
    media_type = sr.MEDIA_TYPE


def refusal(status: int, error_code: int, message: str) -> RegistryJSON:
    headers = {"WWW-Authenticate": CHALLENGE} if status == 401 else None
    return RegistryJSON(sr.error_body(error_code, message), status, headers=headers)


def _invalid(exc: RequestValidationError) -> RegistryJSON:
    problems = exc.errors()
    first = problems[0] if problems else {}
    where = tuple(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        return refusal(400, 400, f"the body is not valid JSON: {first.get('msg')}")
    if where[:1] == ("path",):
        return refusal(404, 404, "HTTP 404 Not Found")
    text = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                     for e in problems)
    if where[:1] == ("body",):
        return refusal(422, sr.INVALID_SCHEMA, f"Invalid schema request: {text}")
    return refusal(422, 422, text)


def confluent_error(request: Request, exc: Exception) -> RegistryJSON:
    """Any refusal of this prefix in Confluent's shape, with its status."""
    if isinstance(exc, sr.RegistryApiError):
        return refusal(exc.status, exc.error_code, str(exc))
    if isinstance(exc, AccessError):
        return refusal(401, sr.UNAUTHORIZED, str(exc))
    if isinstance(exc, ForbiddenError):
        return refusal(403, sr.FORBIDDEN, str(exc))
    if isinstance(exc, DatabaseError):
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return refusal(500, sr.STORE_ERROR, f"Error in the backend data store: {exc}")
    if isinstance(exc, GovbusError):
        status = errors.status_of(exc)
        return refusal(status, status, str(exc))
    if isinstance(exc, RequestValidationError):
        return _invalid(exc)
    if isinstance(exc, HTTPException):
        return refusal(exc.status_code, exc.status_code, str(exc.detail))
    log.exception("%s %s failed", request.method, request.url.path)
    return refusal(500, 500, "the service failed; the operator's log has the details")


class ConfluentRoute(APIRoute):
    """A route whose every refusal, its dependencies' included, is in Confluent's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # every refusal of this prefix answers Confluent's shape
                return confluent_error(request, exc)

        return route


def reader(request: Request) -> str:
    """The calling agency, by its token as a bearer token or as a Basic password (Art. 24)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    state = request.app.state
    url = dsn(request)
    if not header:
        raise AccessError("Unauthorized: send HTTP Basic credentials, the agency as user name "
                          "and its token as password (basic.auth.user.info), or "
                          "`Authorization: Bearer <token>` (Art. 24)", rule="access.no_token")
    if scheme.lower() == "basic":
        try:
            user, colon, token = base64.b64decode(value.strip(), validate=True).decode()\
                .partition(":")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise AccessError("Unauthorized: the Basic credentials are not base64 of "
                              "<agency>:<token>") from exc
        if not colon:
            raise AccessError("Unauthorized: the Basic credentials are not <agency>:<token>")
        agency = str(state.verified.agency(url, token or None))
        if user != agency:
            raise AccessError(f"Unauthorized: the user name {user!r} is not the agency the "
                              f"token is the credential of ({agency})")
        request.state.registry_reader = agency
        return agency
    if scheme.lower() != "bearer":
        raise AccessError(f"Unauthorized: Authorization scheme {scheme!r} is not accepted: "
                          "Basic <agency>:<token> or Bearer <token>")
    agency = str(state.verified.agency(url, value.strip() or None))
    request.state.registry_reader = agency
    return agency


def _sees(request: Request, version: sr.SubjectVersion) -> bool:
    """Whether the caller sees ``version`` (a delivery projection: recipient, provider or
    the center; :func:`govbus.core.registry_api.may_see`)."""
    agency = str(request.state.registry_reader)
    return sr.may_see(agency, version, role_of(agency) != AGENCY)


router = APIRouter(prefix="/registry", tags=["schema registry"], route_class=ConfluentRoute,
                   default_response_class=RegistryJSON, dependencies=[Depends(reader)])


class SchemaBody(BaseModel):
    """A schema as Confluent's clients send it; properties they add (metadata, ruleSet) are
    ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    schema_: str = Field(alias="schema", description="the Avro schema, as a JSON text")
    schemaType: str | None = None
    references: list[Any] = []


def _registered(request: Request, subject: str
                ) -> tuple[list[sr.SubjectVersion], dict[str, Any] | None]:
    """A subject's versions and the catalogue entry whose level applies (None for a
    delivery subject, whose level is NONE)."""
    if sr.delivery_of(subject) is not None:
        delivered = sr.delivery_versions(dsn(request), subject)
        if not delivered or not _sees(request, delivered[0]):
            raise sr.subject_not_found(subject)
        return delivered, None
    resource_id = sr.resource_of(subject)
    if resource_id is None:
        raise sr.subject_not_found(subject)
    versions, meta = sr.versions_of(dsn(request), resource_id)
    if not versions:
        raise sr.subject_not_found(subject)
    return versions, meta


def _subject(request: Request, subject: str) -> list[sr.SubjectVersion]:
    return _registered(request, subject)[0]


def _with_level(request: Request, subject: str) -> tuple[list[sr.SubjectVersion], str]:
    """A subject's versions and its level (42203 if its catalogue entry names an unknown
    one)."""
    versions, meta = _registered(request, subject)
    if versions[0].subject is not None:
        return versions, sr.NONE  # a grant decides a delivery's fields
    return versions, sr.compatibility_level(meta)


def _schema(request: Request, schema_id: int) -> sr.SubjectVersion:
    found = sr.by_schema_id(dsn(request), schema_id)
    if found is None or not _sees(request, found):
        raise sr.schema_not_found(schema_id)
    return found


# --- schemas ----------------------------------------------------------------------------

@router.get("/schemas/types", summary="the schema types served (AVRO)")
def schema_types() -> list[str]:
    return ["AVRO"]


@router.get("/schemas/ids/{schema_id}", summary="a registered schema by its id (the id the "
            "wire format carries)")
def schema_by_id(schema_id: int, request: Request, subject: str | None = None,
                 format: str | None = None) -> dict[str, Any]:
    return {"schema": _schema(request, schema_id).text}


@router.get("/schemas/ids/{schema_id}/schema", summary="a registered schema by its id, the "
            "schema alone")
def raw_schema_by_id(schema_id: int, request: Request) -> Response:
    return Response(_schema(request, schema_id).text, media_type=sr.MEDIA_TYPE)


@router.get("/schemas/ids/{schema_id}/subjects", summary="the subjects a schema id is "
            "registered under")
def subjects_by_id(schema_id: int, request: Request, subject: str | None = None,
                   offset: int = 0, limit: int = -1) -> list[str]:
    found = _schema(request, schema_id)
    names = [s for s in found.subjects if subject in (None, s)]
    return sr.page(names, offset, limit)


@router.get("/schemas/ids/{schema_id}/versions", summary="the subject-version pairs of a "
            "schema id")
def versions_by_id(schema_id: int, request: Request, subject: str | None = None,
                   offset: int = 0, limit: int = -1) -> list[dict[str, Any]]:
    found = _schema(request, schema_id)
    pairs = [{"subject": s, "version": found.version} for s in found.subjects
             if subject in (None, s)]
    return sr.page(pairs, offset, limit)


# --- subjects ---------------------------------------------------------------------------

@router.get("/subjects", summary="every subject: the ingest and validated value subject of "
            "each registered resource, and the delivery subjects the caller may see")
def subjects(request: Request, subjectPrefix: str = "", offset: int = 0,
             limit: int = -1) -> list[str]:
    url = dsn(request)
    names = [s for r in sr.registered_resources(url) for s in sr.subjects_of(r)]
    names += [s for s, resource_id in sr.delivery_subjects(url) if _sees(
        request, sr.SubjectVersion(resource_id, 0, 0, {}, s))]
    names = [s for s in names if s.startswith(subjectPrefix)]
    return sr.page(sorted(names), offset, limit)


@router.get("/subjects/{subject}/versions", summary="a subject's versions")
def subject_versions(subject: str, request: Request, offset: int = 0,
                     limit: int = -1) -> list[int]:
    versions = _subject(request, subject)
    return sr.page([v.version for v in versions], offset, limit)


@router.get("/subjects/{subject}/versions/{version}", summary="a version of a subject "
            "(a number or latest): its schema id and schema")
def subject_version(subject: str, version: str, request: Request) -> dict[str, Any]:
    versions = _subject(request, subject)
    return sr.version_body(subject, sr.pick(subject, versions, version))


@router.get("/subjects/{subject}/versions/{version}/schema", summary="a version of a "
            "subject, the schema alone")
def subject_version_schema(subject: str, version: str, request: Request) -> Response:
    versions = _subject(request, subject)
    return Response(sr.pick(subject, versions, version).text, media_type=sr.MEDIA_TYPE)


@router.post("/subjects/{subject}", summary="whether a schema is registered under a "
             "subject: its version and id")
def lookup(subject: str, body: SchemaBody, request: Request,
           normalize: bool = False) -> dict[str, Any]:
    versions = _subject(request, subject)
    candidate = sr.parse_candidate(body.schema_, body.schemaType, body.references)
    found = sr.matching(candidate, versions, normalize)
    if found is None:
        raise sr.RegistryApiError(404, sr.SCHEMA_NOT_FOUND, "Schema not found: it is none of "
                                  f"the registered versions of '{subject}'")
    return sr.version_body(subject, found)


@router.post("/subjects/{subject}/versions", summary="register a schema: answers the id of "
             "an approved, registered catalogue version; anything else is refused (42205)")
def register(subject: str, body: SchemaBody, request: Request,
             normalize: bool = False) -> dict[str, Any]:
    resource_id = sr.resource_of(subject)
    versions = sr.versions_of(dsn(request), resource_id)[0] if resource_id else []
    if sr.delivery_of(subject) is not None:
        versions = [v for v in sr.delivery_versions(dsn(request), subject)
                    if _sees(request, v)]
    candidate = sr.parse_candidate(body.schema_, body.schemaType, body.references)
    found = sr.matching(candidate, versions, normalize)
    if found is None:
        raise sr.refused_registration(subject)
    return {"id": found.schema_id}


@router.delete("/subjects/{subject}", summary="delete a subject: refused (42205), the "
               "registry is read-only")
def delete_subject(subject: str) -> None:
    raise sr.refused_change(f"Deleting subject '{subject}'")


@router.delete("/subjects/{subject}/versions/{version}", summary="delete a version: refused "
               "(42205), the registry is read-only")
def delete_version(subject: str, version: str) -> None:
    raise sr.refused_change(f"Deleting version {version} of subject '{subject}'")


# --- config, mode, compatibility --------------------------------------------------------

@router.get("/config", summary="the default compatibility level (BACKWARD_TRANSITIVE)")
def config() -> dict[str, Any]:
    return sr.config_body(sr.DEFAULT_LEVEL)


@router.get("/config/{subject}", summary="a subject's compatibility level: its resource's "
            "govbus.compatibility, else the default")
def subject_config(subject: str, request: Request, defaultToGlobal: bool = True
                   ) -> dict[str, Any]:
    return sr.config_body(_with_level(request, subject)[1])


@router.put("/config", summary="change the default level: refused (42205)")
def put_config() -> None:
    raise sr.refused_change("Changing the default compatibility level")


@router.put("/config/{subject}", summary="change a subject's level: refused (42205), it is "
            "a catalogue attribute")
def put_subject_config(subject: str) -> None:
    raise sr.refused_change(f"Changing the compatibility level of '{subject}'")


@router.get("/mode", summary="the registry's mode (READONLY)")
def mode() -> dict[str, str]:
    return {"mode": "READONLY"}


@router.get("/mode/{subject}", summary="a subject's mode (READONLY)")
def subject_mode(subject: str, request: Request) -> dict[str, str]:
    _subject(request, subject)
    return {"mode": "READONLY"}


@router.post("/compatibility/subjects/{subject}/versions/{version}", summary="test a schema "
             "against one version of a subject, by the subject's level")
def compatible_with_version(subject: str, version: str, body: SchemaBody, request: Request,
                            verbose: bool = False, normalize: bool = False) -> dict[str, Any]:
    versions, level = _with_level(request, subject)
    target = sr.pick(subject, versions, version)
    candidate = sr.parse_candidate(body.schema_, body.schemaType, body.references)
    reasons = [] if level == sr.NONE else sr.incompatible(level, candidate, [target])
    return sr.compatibility_body(level, reasons, verbose)


@router.post("/compatibility/subjects/{subject}/versions", summary="test a schema against a "
             "subject's versions as its level says (every version when transitive)")
def compatible_with_subject(subject: str, body: SchemaBody, request: Request,
                            verbose: bool = False, normalize: bool = False) -> dict[str, Any]:
    versions, level = _with_level(request, subject)
    candidate = sr.parse_candidate(body.schema_, body.schemaType, body.references)
    reasons = sr.incompatible(level, candidate, sr.against(level, versions))
    return sr.compatibility_body(level, reasons, verbose)


@router.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"],
                  include_in_schema=False)
def unmatched(rest: str, request: Request) -> None:
    """Confluent's 404 (or 405) for a path of this prefix no route serves; the last route of
    the prefix (a stock deserializer's association lookup gets its 404 here and falls back to
    the TopicNameStrategy)."""
    partial = any(r is not request.scope.get("route") and isinstance(r, APIRoute)
                  and r.matches(request.scope)[0] == Match.PARTIAL for r in router.routes)
    if partial:
        raise sr.RegistryApiError(405, 405, "HTTP 405 Method Not Allowed")
    raise sr.RegistryApiError(404, 404, "HTTP 404 Not Found")
