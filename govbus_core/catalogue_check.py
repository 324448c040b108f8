"""``catalogue check``: every rule the measures set for catalogue entries, as findings.

Each rule is one function registered with :func:`resource_rule` (looks at one contract) or
:func:`catalogue_rule` (looks across the catalogue); adding a rule is adding one function.
Errors make :func:`govbus.core.catalogue.load_catalogue` with ``strict=True`` refuse the
catalogue; warnings (an overdue review) are reported but do not block.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import fastavro

from govbus.core.catalogue import (
    DATABASE_CLASSES,
    META,
    PROVISION_METHODS,
    SHARE_CLASSES,
    Catalogue,
    Resource,
    parse_period,
    strip_meta,
)
from govbus.core.compat import LEVEL_ATTRIBUTE, InvalidLevel, check_level, parse_level
from govbus.core.identifiers import CHECKS

ERROR, WARNING = "error", "warning"
REVIEW_DAYS = 365  # Art. 13: each agency reviews its entries once a year
ENTITY_IDENTIFIERS = {  # Art. 12: the mandatory identifiers of a record's subject
    "person": ("resident_id", "name"),
    "enterprise": ("uscc", "name"),
}
_CANONICAL = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")  # kind.attribute
_FEE_KEY = re.compile(r"(^|_)(fee|fees|price|prices|charge|charges)(_|$)", re.IGNORECASE)


@dataclass(frozen=True)
class Finding:
    """One problem of the catalogue: where it is, which rule and article it breaks."""

    severity: str  # "error" | "warning"
    file: str  # the .avsc, or the catalogue root for catalogue-wide findings
    field: str  # field name, metadata key ("govbus.legal_basis") or "-"
    rule: str  # stable dotted name, e.g. "art7.missing_element"
    article: str  # e.g. "Art. 7"
    message: str

    def as_dict(self) -> dict[str, str]:
        """JSON-ready form for ``catalogue check --json``."""
        return {"severity": self.severity, "file": self.file, "field": self.field,
                "rule": self.rule, "article": self.article, "message": self.message}

    def __str__(self) -> str:
        return (f"{self.severity.upper()} {self.file}: {self.field}: {self.message} "
                f"({self.rule}, {self.article})")


@dataclass(frozen=True)
class _Context:
    catalogue: Catalogue
    registered: dict[str, list[dict[str, Any]]]
    today: dt.date


ResourceRule = Callable[[Resource, _Context], Iterable[Finding]]
CatalogueRule = Callable[[_Context], Iterable[Finding]]
RESOURCE_RULES: list[ResourceRule] = []
CATALOGUE_RULES: list[CatalogueRule] = []


def resource_rule(fn: ResourceRule) -> ResourceRule:
    """Register a rule run once per resource."""
    RESOURCE_RULES.append(fn)
    return fn


def catalogue_rule(fn: CatalogueRule) -> CatalogueRule:
    """Register a rule run once over the whole catalogue."""
    CATALOGUE_RULES.append(fn)
    return fn


def _error(res: Resource, field: str, rule: str, article: str, message: str) -> Finding:
    return Finding(ERROR, str(res.path), field, rule, article, message)


def _raw_fields(res: Resource) -> list[dict[str, Any]]:
    return [f for f in res.schema.get("fields") or [] if isinstance(f, dict)]


def _field_meta(raw: dict[str, Any]) -> dict[str, Any]:
    meta = raw.get(META)
    return meta if isinstance(meta, dict) else {}


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


# --- Art. 3, 4, 7: the schema-level catalogue entry -------------------------------------------

_ART7_TEXT = ("title", "provider", "data_format", "conditions")


@resource_rule
def art7_elements(res: Resource, ctx: _Context) -> Iterator[Finding]:
    """Art. 7: name, data format, provision method, conditions, provider, update period."""
    meta = res.meta
    for key in (*_ART7_TEXT, "share_class", "provision_methods", "update_period"):
        if key not in meta or _blank(meta[key]):
            yield _error(res, f"{META}.{key}", "art7.missing_element", "Art. 7",
                         f"catalogue element {key!r} is missing")
        elif key in _ART7_TEXT and not isinstance(meta[key], str):
            yield _error(res, f"{META}.{key}", "art7.invalid_element", "Art. 7",
                         f"{key!r} must be a text, not {meta[key]!r}")
    problem = {
        "share_class": _share_class_problem(meta.get("share_class")),
        "provision_methods": _methods_problem(meta.get("provision_methods"), res.share_class),
        "update_period": _period_problem(meta.get("update_period")),
    }
    for key, message in problem.items():
        if message and not _blank(meta.get(key)):
            yield _error(res, f"{META}.{key}", "art7.invalid_element", "Art. 7", message)


def _share_class_problem(value: object) -> str | None:
    if value in SHARE_CLASSES:
        return None
    return f"share class {value!r} is not one of {', '.join(SHARE_CLASSES)} (Art. 15)"


def _methods_problem(value: object, share_class: str | None) -> str | None:
    if not isinstance(value, list):
        return f"provision methods must be a list, not {value!r}"
    unknown = [m for m in value if m not in PROVISION_METHODS]
    if unknown:
        return (f"unknown provision method(s) {unknown!r}; "
                f"allowed: {', '.join(PROVISION_METHODS)} (Art. 17)")
    if not value and share_class != "not_shared":
        return "no provision method, but only a not_shared resource may have none (Art. 17)"
    return None


def _period_problem(value: object) -> str | None:
    if parse_period(value) is None:
        return f"update period {value!r} is not an ISO 8601 duration such as P1D or PT6H"
    return None


@resource_rule
def art3_database_class(res: Resource, ctx: _Context) -> Iterator[Finding]:
    """Art. 3: every entry belongs to one of the three kinds of database."""
    if res.database_class not in DATABASE_CLASSES:
        yield _error(res, f"{META}.database_class", "art3.database_class", "Art. 3",
                     f"database class {res.database_class!r} is not one of "
                     f"{', '.join(DATABASE_CLASSES)}")


@resource_rule
def provider_matches_folder(res: Resource, ctx: _Context) -> Iterator[Finding]:
    """Art. 4, 7: "who applies manages it" -- an agency files contracts only in its folder."""
    if isinstance(res.provider, str) and res.provider.strip() and res.provider != res.agency:
        yield _error(res, f"{META}.provider", "catalogue.provider_mismatch", "Art. 4",
                     f"provider {res.provider!r} differs from the agency folder {res.agency!r}")


@resource_rule
def art4_legal_basis(res: Resource, ctx: _Context) -> Iterator[Finding]:
    """Art. 4: sharing is the rule; restricting it needs a stated legal basis."""
    if res.share_class in ("on_application", "not_shared") and (
            not isinstance(res.legal_basis, str) or _blank(res.legal_basis)):
        yield _error(res, f"{META}.legal_basis", "art4.legal_basis_missing", "Art. 4",
                     f"a {res.share_class} resource must state its legal basis")


@resource_rule
def art4_free_of_charge(res: Resource, ctx: _Context) -> Iterator[Finding]:
    """Art. 4, 31: sharing between agencies is free, so no entry may carry a fee."""
    places = [(f"{META}.{k}", k) for k in res.meta]
    places += [(str(raw.get("name")), k) for raw in _raw_fields(res) for k in _field_meta(raw)]
    for where, key in places:
        if _FEE_KEY.search(str(key)):
            yield _error(res, where, "art4.fee", "Art. 4",
                         f"metadata key {key!r} suggests a charge; sharing is free of charge")


# --- Art. 12: the subject of a record and its identifiers -------------------------------------

@resource_rule
def art12_entity_key(res: Resource, ctx: _Context) -> Iterator[Finding]:
    """Art. 12: each record names its subject (person/enterprise) by a mandatory key field."""
    entity = res.meta.get("entity")
    kind = entity.get("kind") if isinstance(entity, dict) else None
    key = entity.get("key") if isinstance(entity, dict) else None
    if kind not in ENTITY_IDENTIFIERS:
        problem = f"entity kind {kind!r} is not one of {', '.join(ENTITY_IDENTIFIERS)}"
    else:
        spec = res.field(key) if isinstance(key, str) else None
        if spec is None:
            problem = f"entity key {key!r} is not a field of the record"
        elif spec.avro_type != "string" and not (
                isinstance(spec.avro_type, dict) and spec.avro_type.get("type") == "string"):
            problem = f"entity key {key!r} must be a non-nullable string, not {spec.avro_type!r}"
        else:
            return
    yield _error(res, f"{META}.entity", "art12.entity_key", "Art. 12", problem)


@resource_rule
def art12_identifiers(res: Resource, ctx: _Context) -> Iterator[Finding]:
    """Art. 12: mandatory identifiers per subject; only roles the bus can check."""
    for spec in res.fields:
        if spec.identifier is not None and spec.identifier not in CHECKS:
            yield _error(res, spec.name, "art12.identifier_unknown", "Art. 12",
                         f"identifier role {spec.identifier!r} is unknown; "
                         f"known: {', '.join(sorted(CHECKS))}")
    roles = {spec.identifier for spec in res.fields}
    for role in ENTITY_IDENTIFIERS.get(str(res.entity_kind), ()):
        if role not in roles:
            yield _error(res, "-", "art12.identifier_missing", "Art. 12",
                         f"a {res.entity_kind} record needs a field with identifier "
                         f"role {role!r}")


# --- Field markers (Art. 8, 25) and the Avro schema itself ------------------------------------

@resource_rule
def field_markers(res: Resource, ctx: _Context) -> Iterator[Finding]:
    """Art. 8, 25: markers are well-formed, so the source and masking rules can rely on them."""
    for raw in _raw_fields(res):
        name, meta = str(raw.get("name")), _field_meta(raw)
        for key, rule, article in (("source_of_record", "art8.marker_invalid", "Art. 8"),
                                   ("sensitive", "art25.marker_invalid", "Art. 25")):
            if key in meta and not isinstance(meta[key], bool):
                yield _error(res, name, rule, article,
                             f"{key} must be true or false, not {meta[key]!r}")
        canonical = meta.get("canonical")
        if canonical is not None and not (isinstance(canonical, str)
                                          and _CANONICAL.match(canonical)):
            yield _error(res, name, "art8.marker_invalid", "Art. 8",
                         f"canonical {canonical!r} must be lowercase 'kind.attribute'")
        elif meta.get("source_of_record") is True and canonical is None:
            yield _error(res, name, "art8.marker_invalid", "Art. 8",
                         "source_of_record needs the canonical attribute it is the source of")


@resource_rule
def avro_valid(res: Resource, ctx: _Context) -> Iterator[Finding]:
    """Art. 4 (one standard), Art. 7 (data format): the contract is a valid Avro schema."""
    try:
        fastavro.parse_schema(strip_meta(res.schema))
    except Exception as exc:  # fastavro raises several types (SchemaParseException, ...)
        yield _error(res, "-", "avro.invalid", "Art. 7", f"not a valid Avro schema: {exc}")


@resource_rule
def schema_compatible(res: Resource, ctx: _Context) -> Iterator[Finding]:
    """Art. 13: a changed contract keeps its resource's compatibility level (its
    ``govbus.compatibility``, BACKWARD_TRANSITIVE by default) with the registered versions;
    a value that is no level is an error of its own."""
    try:
        level = parse_level(res.meta.get(LEVEL_ATTRIBUTE))
    except InvalidLevel as exc:
        yield _error(res, f"{META}.{LEVEL_ATTRIBUTE}", exc.rule, exc.article, str(exc))
        return
    versions = ctx.registered.get(res.id)
    if not versions:
        return
    reasons = check_level(level, res.record_schema(), [strip_meta(v) for v in versions])
    for reason in reasons:
        m = re.search(r"field '([^'.\[{]+)", reason)
        yield _error(res, m.group(1) if m else "-", "schema.incompatible", "Art. 13",
                     f"breaks {level} compatibility with a registered version: {reason}")


@resource_rule
def art13_review(res: Resource, ctx: _Context) -> Iterator[Finding]:
    """Art. 13: each agency reviews its entries once a year."""
    raw = res.meta.get("reviewed")
    if _blank(raw) or res.reviewed is None:
        problem = "missing" if _blank(raw) else f"{raw!r} is not an ISO date (YYYY-MM-DD)"
        yield _error(res, f"{META}.reviewed", "art13.review_date", "Art. 13",
                     f"last review date {problem}")
        return
    age = (ctx.today - res.reviewed).days
    if age > REVIEW_DAYS:
        yield Finding(WARNING, str(res.path), f"{META}.reviewed", "art13.review_overdue",
                      "Art. 13", f"last reviewed {res.reviewed.isoformat()}, {age} days ago "
                                 f"(more than {REVIEW_DAYS}); the agency must review it")


# --- Catalogue-wide rules --------------------------------------------------------------------

@catalogue_rule
def catalogue_not_empty(ctx: _Context) -> Iterator[Finding]:
    """Art. 7: the catalogue records the resources; one with none is a misconfiguration."""
    if not ctx.catalogue.resources:
        yield Finding(ERROR, str(ctx.catalogue.root), "-", "catalogue.empty", "Art. 7",
                      "the catalogue has no resources (expected schemas/<agency>/<name>.avsc)")


@catalogue_rule
def art8_one_source(ctx: _Context) -> Iterator[Finding]:
    """Art. 8, one datum one source: each canonical attribute has exactly one source."""
    carriers: dict[str, list[tuple[Resource, str]]] = {}
    sources: dict[str, tuple[Resource, str]] = {}
    for res in ctx.catalogue:
        for spec in res.fields:
            if not isinstance(spec.canonical, str):
                continue
            carriers.setdefault(spec.canonical, []).append((res, spec.name))
            if spec.source_of_record is not True:
                continue
            first = sources.setdefault(spec.canonical, (res, spec.name))
            if first != (res, spec.name):
                yield _error(res, spec.name, "art8.two_sources", "Art. 8",
                             f"{spec.canonical} already has its source of record in "
                             f"{_ref(*first)}; {_ref(res, spec.name)} cannot claim it too")
    for canonical, held in sorted(carriers.items()):
        if canonical not in sources:
            yield Finding(ERROR, str(ctx.catalogue.root), canonical, "art8.no_source", "Art. 8",
                          f"{canonical} has no source of record; carried by "
                          f"{', '.join(_ref(r, f) for r, f in held)}")


def _ref(res: Resource, field: str) -> str:
    return f"{res.id}.{field}"


# --- Entry points ----------------------------------------------------------------------------

def check_catalogue(catalogue: Catalogue, registered: dict[str, list[dict[str, Any]]] | None = None,
                    today: dt.date | None = None) -> list[Finding]:
    """Every finding of every rule, resource by resource, then the catalogue-wide ones.

    ``registered`` maps a resource id to its registered schemas (oldest first); when given,
    each contract must be able to read all of them (Art. 13).
    """
    ctx = _Context(catalogue, registered or {}, today or dt.date.today())
    findings: list[Finding] = []
    for res in catalogue:
        for rule in RESOURCE_RULES:
            findings.extend(rule(res, ctx))
    for catalogue_rule_fn in CATALOGUE_RULES:
        findings.extend(catalogue_rule_fn(ctx))
    return findings


def errors_only(findings: list[Finding]) -> list[Finding]:
    """The findings that block the catalogue (severity ``error``)."""
    return [f for f in findings if f.severity == ERROR]
