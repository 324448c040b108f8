"""The catalogue: one Avro data contract per resource, carrying its catalogue metadata.

A contract is ``schemas/<agency>/<resource>.avsc``: a plain Avro record schema with an extra
``govbus`` object on the schema (Art. 3, 4, 7, 13: title, provider, database class, share class,
legal basis, sharing conditions, data format, provision methods, update period, last review,
entity) and on fields (Art. 8, 12, 25: canonical attribute, source of record, identifier role,
sensitivity). Loading is lenient, so that ``catalogue check`` can report every problem;
:func:`load_catalogue` with ``strict=True`` refuses a catalogue that check rejects.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from govbus.core import topics
from govbus.core.errors import GovbusError, NotFoundError

DATABASE_CLASSES = ("foundational", "thematic", "departmental")  # Art. 3
SHARE_CLASSES = ("unconditional", "on_application", "not_shared")  # Art. 15
PROVISION_METHODS = ("data_exchange", "online_query")  # Art. 17
META = "govbus"


class CatalogueError(GovbusError):
    """The catalogue cannot be loaded, or check found errors (``findings`` lists them)."""

    def __init__(self, message: str, findings: list[Any] | None = None) -> None:
        self.findings = findings or []
        super().__init__(message)


class UnknownResource(CatalogueError, NotFoundError):
    """A resource id the catalogue does not hold."""

    rule = "catalogue.unknown_resource"
    article = "Art. 7"


@dataclass(frozen=True)
class FieldSpec:
    """One field of a data contract and its catalogue metadata."""

    name: str
    avro_type: Any
    canonical: str | None = None
    source_of_record: bool = False
    sensitive: bool = False
    identifier: str | None = None

    @property
    def nullable(self) -> bool:
        return isinstance(self.avro_type, list) and "null" in self.avro_type


@dataclass(frozen=True)
class Resource:
    """A catalogue entry: the data contract of one resource of one provider agency."""

    agency: str
    name: str
    path: Path
    schema: dict[str, Any] = field(repr=False)
    fields: tuple[FieldSpec, ...] = field(repr=False)

    @property
    def id(self) -> str:
        return f"{self.agency}.{self.name}"

    @property
    def meta(self) -> dict[str, Any]:
        meta = self.schema.get(META)
        return meta if isinstance(meta, dict) else {}

    @property
    def provider(self) -> str | None:
        return self.meta.get("provider")

    @property
    def share_class(self) -> str | None:
        return self.meta.get("share_class")

    @property
    def database_class(self) -> str | None:
        return self.meta.get("database_class")

    @property
    def legal_basis(self) -> str | None:
        return self.meta.get("legal_basis")

    @property
    def title(self) -> str | None:
        return self.meta.get("title")

    @property
    def entity_kind(self) -> str | None:
        return (self.meta.get("entity") or {}).get("kind")

    @property
    def key_field(self) -> str | None:
        return (self.meta.get("entity") or {}).get("key")

    @property
    def update_period(self) -> dt.timedelta | None:
        return parse_period(self.meta.get("update_period"))

    @property
    def reviewed(self) -> dt.date | None:
        try:
            return dt.date.fromisoformat(str(self.meta.get("reviewed")))
        except ValueError:
            return None

    @property
    def ingest_topic(self) -> str:
        return topics.ingest(str(self.agency), self.name)

    @property
    def validated_topic(self) -> str:
        return topics.validated(self.id)

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)

    def record_schema(self) -> dict[str, Any]:
        """The plain Avro record schema, with every ``govbus`` attribute stripped."""
        return strip_meta(self.schema)

    def summary(self) -> dict[str, Any]:
        """JSON-ready description for ``catalogue list|show``."""
        return {
            "resource": self.id, "provider": self.provider, "title": self.title,
            "database_class": self.database_class, "share_class": self.share_class,
            "legal_basis": self.legal_basis, "conditions": self.meta.get("conditions"),
            "data_format": self.meta.get("data_format"),
            "provision_methods": self.meta.get("provision_methods"),
            "update_period": self.meta.get("update_period"), "reviewed": self.meta.get("reviewed"),
            "entity": self.meta.get("entity"), "file": str(self.path),
            "fields": [{"name": f.name, "type": f.avro_type, "canonical": f.canonical,
                        "source_of_record": f.source_of_record, "sensitive": f.sensitive,
                        "identifier": f.identifier} for f in self.fields],
        }


_PERIOD = re.compile(r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?)?$")


def parse_period(text: object) -> dt.timedelta | None:
    """An ISO 8601 duration (``P1D``, ``P1M``, ``PT6H``) as a timedelta; months are 30 days."""
    if not isinstance(text, str) or text in ("P", "PT"):
        return None
    m = _PERIOD.match(text)
    if not m:
        return None
    y, mo, w, d, h = (int(g) if g else 0 for g in m.groups())
    delta = dt.timedelta(days=365 * y + 30 * mo + 7 * w + d, hours=h)
    return delta or None


def strip_meta(node: Any) -> Any:
    """Remove ``govbus`` attributes at every level of a schema."""
    if isinstance(node, dict):
        return {k: strip_meta(v) for k, v in node.items() if k != META}
    if isinstance(node, list):
        return [strip_meta(v) for v in node]
    return node


def parse_contract(path: Path, root: Path | None = None) -> Resource:
    """Read one ``.avsc`` contract; the agency is its folder, the resource its file stem."""
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CatalogueError(f"{path}: not a readable JSON schema: {exc}") from exc
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise CatalogueError(f"{path}: a data contract must be an Avro record schema")
    return resource_from_schema(path.parent.name, path.stem, schema, path)


def resource_from_schema(agency: str, name: str, schema: dict[str, Any], path: Path
                         ) -> Resource:
    """A Resource from a contract already parsed (a file, or a registered version)."""
    fields = []
    for raw in schema.get("fields") or []:
        meta = raw.get(META) if isinstance(raw.get(META), dict) else {}
        fields.append(FieldSpec(
            name=str(raw.get("name")), avro_type=raw.get("type"),
            canonical=meta.get("canonical"), source_of_record=bool(meta.get("source_of_record")),
            sensitive=bool(meta.get("sensitive")), identifier=meta.get("identifier")))
    return Resource(agency=agency, name=name, path=path, schema=schema, fields=tuple(fields))


@dataclass(frozen=True)
class Catalogue:
    """Every resource of the catalogue, by id (``agency.resource``)."""

    root: Path
    resources: dict[str, Resource]

    def get(self, agency: str, name: str) -> Resource:
        res = self.resources.get(f"{agency}.{name}")
        if res is None:
            known = ", ".join(sorted(self.resources)) or "none"
            raise UnknownResource(f"catalogue.unknown_resource [Art. 7]: resource "
                                 f"{agency}.{name} is not in the catalogue "
                                 f"({self.root}); known: {known}")
        return res

    def by_topic(self, topic: str) -> Resource | None:
        parts = topic.split(".")
        if len(parts) != 3:
            return None
        return self.resources.get(f"{parts[1]}.{parts[2]}")

    @property
    def agencies(self) -> list[str]:
        return sorted({r.agency for r in self.resources.values()})

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(sorted(self.resources.values(), key=lambda r: r.id))


def default_schemas_dir() -> Path:
    """``schemas/`` beside the installed packages (the repository checkout)."""
    return Path(__file__).resolve().parent.parent / "schemas"


def load_catalogue(root: Path | None = None, *, strict: bool = True) -> Catalogue:
    """Load every contract under ``root``; with ``strict``, refuse one that check rejects."""
    root = Path(root) if root else default_schemas_dir()
    if not root.is_dir():
        raise CatalogueError(f"catalogue folder {root} does not exist")
    resources = {}
    for path in sorted(root.glob("*/*.avsc")):
        res = parse_contract(path, root)
        resources[res.id] = res
    catalogue = Catalogue(root=root, resources=resources)
    if strict:
        from govbus.core.catalogue_check import check_catalogue, errors_only

        errors = errors_only(check_catalogue(catalogue))
        if errors:
            lines = "\n".join(f"  {e}" for e in errors)
            raise CatalogueError(f"catalogue {root} has {len(errors)} error(s):\n{lines}", errors)
    return catalogue
