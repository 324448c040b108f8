"""The schema registry in PostgreSQL: contracts and their versions, by schema id.

``sync`` registers the catalogue (a new version when a contract's Avro schema changed, after a
backward-compatibility check against every registered version, Art. 13). Lookups by id are
cached: a schema id never changes meaning once assigned.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extras

from govbus.core import db
from govbus.core.catalogue import (
    Catalogue,
    CatalogueError,
    Resource,
    resource_from_schema,
    strip_meta,
)
from govbus.core.compat import BACKWARD_TRANSITIVE, level_incompatibilities
from govbus.core.envelope import FORMAT as ENVELOPE_FORMAT
from govbus.core.envelope import envelope_schema
from govbus.core.errors import DatabaseError, RegistryError
from govbus.core.serde import Codec
from govbus.core.validation import Acceptor, compile_acceptor


def fingerprint(resource: Resource) -> str:
    """Of the contract's Avro schema and the envelope format (:data:`envelope.FORMAT`): a
    contract registered under an earlier format is registered again, as a new version, by the
    next sync."""
    canonical = json.dumps(strip_meta(resource.schema), sort_keys=True, separators=(",", ":"))
    if ENVELOPE_FORMAT > 1:  # a format-1 version's fingerprint is the contract's alone
        canonical += f"\nenvelope {ENVELOPE_FORMAT}"
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class RegisteredSchema:
    schema_id: int
    resource_id: str
    version: int
    contract: dict[str, Any]
    codec: Codec
    resource: Resource

    @cached_property
    def accepts(self) -> Acceptor:
        """This version's :func:`~govbus.core.validation.compile_acceptor`, built once."""
        return compile_acceptor(self.resource)


@dataclass(frozen=True)
class SyncResult:
    resource_id: str
    version: int
    schema_id: int
    status: str  # registered | unchanged


class SchemaRegistry:
    """Read access to registered schemas, cached per process; thread-safe."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._by_id: dict[int, RegisteredSchema] = {}
        self._lock = threading.Lock()

    def fetch(self, schema_id: int | None = None, resource_id: str | None = None
              ) -> tuple[Any, ...] | None:
        """(schema id, resource id, version, contract, envelope schema) of ``schema_id``, or
        of the newest version of ``resource_id``; None if not registered. Overridden by a
        client that reads the registry through the HTTP service instead of the database."""
        where, params = (("schema_id = %s", (schema_id,)) if schema_id is not None else
                         ("resource_id = %s ORDER BY version DESC LIMIT 1", (resource_id,)))
        conn = db.connect(self.dsn)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT schema_id, resource_id, version, contract, envelope_schema "
                            f"FROM schema_versions WHERE {where}", params)
                return cur.fetchone()  # type: ignore[no-any-return]
        except psycopg2.Error as exc:
            raise DatabaseError(f"schema registry lookup failed: {exc}") from exc
        finally:
            conn.close()

    def _load(self, schema_id: int | None = None, resource_id: str | None = None
              ) -> RegisteredSchema | None:
        row = self.fetch(schema_id, resource_id)
        if row is None:
            return None
        agency, name = row[1].split(".", 1)
        resource = resource_from_schema(agency, name, row[3], Path(f"<registry:{row[0]}>"))
        reg = RegisteredSchema(row[0], row[1], row[2], row[3], Codec(row[4]), resource)
        with self._lock:
            self._by_id[reg.schema_id] = reg
        return reg

    def by_id(self, schema_id: int) -> RegisteredSchema:
        """The schema registered under ``schema_id``; RegistryError if none."""
        cached = self._by_id.get(schema_id)
        if cached is not None:
            return cached
        found = self._load(schema_id=schema_id)
        if found is None:
            raise RegistryError(f"schema id {schema_id} is not registered")
        return found

    def latest(self, resource_id: str) -> RegisteredSchema:
        """The newest version of a resource's contract; RegistryError if never synced."""
        found = self._load(resource_id=resource_id)
        if found is None:
            raise RegistryError(f"resource {resource_id} has no registered schema: run "
                                "`govbus catalogue sync`")
        return found


def registered_contracts(dsn: str) -> dict[str, list[dict[str, Any]]]:
    """Every registered contract per resource, oldest first (for compatibility checks)."""
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT resource_id, contract FROM schema_versions "
                    "ORDER BY resource_id, version")
        out: dict[str, list[dict[str, Any]]] = {}
        for resource_id, contract in cur.fetchall():
            out.setdefault(resource_id, []).append(contract)
    return out


def sync(dsn: str, catalogue: Catalogue, actor: str | None = None) -> list[SyncResult]:
    """Register the catalogue in one transaction; refuse it whole if check finds an error.
    ``actor`` (the information center importing it) is who the audit ledger records."""
    from govbus.core.catalogue_check import check_catalogue, errors_only

    errors = errors_only(check_catalogue(catalogue, registered_contracts(dsn)))
    if errors:
        lines = "\n".join(f"  {e}" for e in errors)
        raise CatalogueError(f"catalogue refused, nothing registered:\n{lines}", errors)
    results = []
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        cur.execute("LOCK TABLE schema_versions IN EXCLUSIVE MODE")
        if actor:
            cur.execute("SELECT set_config('govbus.actor', %s, true)", (actor,))
        for res in catalogue:
            results.append(_sync_one(cur, res))
    return results


def _sync_one(cur: Any, res: Resource) -> SyncResult:
    meta = res.meta
    cur.execute(
        """INSERT INTO catalogue_resources (resource_id, provider, title, database_class,
               share_class, legal_basis, update_period, reviewed, metadata)
           VALUES (%s, %s, %s, %s, %s, %s, %s::interval, %s, %s)
           ON CONFLICT (resource_id) DO UPDATE SET provider = EXCLUDED.provider,
               title = EXCLUDED.title, database_class = EXCLUDED.database_class,
               share_class = EXCLUDED.share_class, legal_basis = EXCLUDED.legal_basis,
               update_period = EXCLUDED.update_period, reviewed = EXCLUDED.reviewed,
               metadata = EXCLUDED.metadata, synced_at = now()""",
        (res.id, res.provider, res.title, res.database_class, res.share_class, res.legal_basis,
         res.update_period, res.reviewed, psycopg2.extras.Json(meta)))
    cur.execute("DELETE FROM canonical_attributes WHERE resource_id = %s", (res.id,))
    for f in res.fields:
        if f.canonical:
            cur.execute("INSERT INTO canonical_attributes VALUES (%s, %s, %s, %s)",
                        (f.canonical, res.id, f.name, f.source_of_record))
    fp = fingerprint(res)
    cur.execute("SELECT schema_id, version FROM schema_versions WHERE resource_id = %s "
                "AND fingerprint = %s", (res.id, fp))
    row = cur.fetchone()
    if row:
        return SyncResult(res.id, row[1], row[0], "unchanged")
    envelope = envelope_schema(res)
    cur.execute("SELECT version, envelope_schema FROM schema_versions WHERE resource_id = %s "
                "ORDER BY version", (res.id,))
    registered = cur.fetchall()
    # the contract was checked at its own level (check_catalogue); the envelope around it,
    # the bus's format, must read every event already on the bus: backward, transitively
    reasons = level_incompatibilities(BACKWARD_TRANSITIVE, envelope, registered)
    if reasons:
        raise CatalogueError(f"{res.id}: the envelope of the new version is not compatible "
                             "with the registered ones: " + "; ".join(reasons[:5]))
    version = (registered[-1][0] if registered else 0) + 1
    cur.execute("""INSERT INTO schema_versions (resource_id, version, fingerprint, contract,
                       envelope_schema) VALUES (%s, %s, %s, %s, %s) RETURNING schema_id""",
                (res.id, version, fp, psycopg2.extras.Json(res.schema),
                 psycopg2.extras.Json(envelope)))
    return SyncResult(res.id, version, cur.fetchone()[0], "registered")
