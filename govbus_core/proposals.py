"""Catalogue changes are proposals the information center approves (Art. 13), and each agency
reviews its entries once a year (Art. 13).

Invariants:

- **Who proposes.** An agency proposes only contracts of resources it provides (Art. 4: who
  applies manages it): the resource id's agency and the contract's ``provider`` are the
  proposer. Anything else is refused (:class:`NotProvider`, 403) and nothing is stored.
- **Checked at once.** A readable contract is checked on arrival against the registered
  catalogue, with the rules of ``catalogue check`` (Art. 3, 4, 7, 8, 12, 13), the
  compatibility with the registered versions at the resource's level (its
  ``govbus.compatibility``, BACKWARD_TRANSITIVE by default, Art. 13) and the grants in force
  (:mod:`govbus.core.evolution`: a field a grant lists is not removed, renamed or retyped
  unless the proposal names that grant in ``amends_grants``, Art. 24);
  the findings that concern the proposal are stored with it and returned. A contract that
  cannot be read as an Avro record schema is refused (:class:`MalformedContract`, 422), naming
  what is wrong, and not stored.
- **Decided once, by the information center.** A pending proposal is approved or rejected
  (rejection needs a reason); a decided one stays decided (409). Approval checks again, in the
  registering transaction, against what is registered then: a proposal with error findings is
  never approved (409 naming them; its stored findings are refreshed), nor one whose resource
  changed since it was proposed (409: propose again).
- **Only an approved proposal is registered**, in its approving transaction and as
  ``catalogue sync`` registers one resource (:func:`govbus.core.registry._sync_one`): the
  entry in ``catalogue_resources``, its canonical attributes, a new schema version when its
  Avro schema changed. The stream apps read the registry, so it reaches them from there.
  The grants it amends are amended in the same transaction (the dropped fields removed from
  each, filed, Art. 18, each grantee told).
- **Yearly review.** An entry is due for review when a year (:data:`REVIEW_DAYS`) has passed
  since the last review its provider confirmed, else since its first registration.

The parsing and the choice of findings (:func:`parse_avsc`, :func:`proposal_findings`,
:func:`review_state`) are pure; the rest reads and writes PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import fastavro
import psycopg2
import psycopg2.extras

from govbus.core import db, evolution, sharing_store
from govbus.core.catalogue import META, Catalogue, Resource, resource_from_schema, strip_meta
from govbus.core.catalogue_check import (
    ERROR,
    REVIEW_DAYS,
    WARNING,
    Finding,
    check_catalogue,
    errors_only,
)
from govbus.core.errors import (
    ConflictError,
    DatabaseError,
    ForbiddenError,
    GovbusError,
    NotFoundError,
)
from govbus.core.sharing import Grant

PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"
STATUSES = (PENDING, APPROVED, REJECTED)
NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")  # an agency's or a resource's name (topic names)
CATALOGUE = "catalogue"  # where a catalogue-wide finding is, in a proposal's findings
REGISTRY_ROOT = Path("registered catalogue")

__all__ = ["ERROR", "WARNING", "REVIEW_DAYS", "STATUSES", "approve", "get", "list_proposals",
           "parse_avsc", "proposal_findings", "propose", "registered_catalogue", "reject",
           "review", "review_state", "reviews_due"]


class MalformedContract(GovbusError):
    """The proposed contract cannot be read as an Avro record schema (422)."""

    rule = "proposal.malformed"
    article = "Art. 7"


class NotProvider(ForbiddenError):
    """An agency proposed or reviewed another agency's resource (403)."""

    rule = "catalogue.not_provider"
    article = "Art. 13"


class ProposalNotFound(NotFoundError):
    rule = "proposal.not_found"
    article = "Art. 13"


class ProposalConflict(ConflictError):
    """The proposal's state or findings forbid the decision (409); ``findings`` lists the
    error findings that block an approval."""

    rule = "proposal.decided"
    article = "Art. 13"

    def __init__(self, message: str, *, rule: str | None = None,
                 findings: list[dict[str, str]] | None = None) -> None:
        super().__init__(message, rule=rule)
        self.findings = findings or []


# --- pure -------------------------------------------------------------------------------

def split_id(resource_id: str) -> tuple[str, str]:
    """``agency.resource`` as (agency, resource); MalformedContract naming the rule broken."""
    agency, dot, name = str(resource_id).partition(".")
    if not dot or not NAME.match(agency) or not NAME.match(name):
        raise MalformedContract(f"resource {resource_id!r}: name it as agency.resource, each "
                                "part lowercase letters, digits and _ starting with a letter "
                                "(e.g. tax.tax_registration)", rule="input.resource_id")
    return agency, name


def parse_avsc(raw: bytes | str) -> dict[str, Any]:
    """The contract of an ``.avsc`` text: a JSON object that is an Avro record schema whose
    ``govbus`` attributes, where present, are objects. MalformedContract says what is not."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedContract(f"the contract is not UTF-8 text: byte {exc.start} "
                                    f"({exc.reason})") from exc
    if not raw.strip():
        raise MalformedContract("the contract is empty: send the .avsc file's text")
    try:
        schema = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise MalformedContract(f"the contract is not valid JSON: {exc.msg} at line "
                                f"{exc.lineno} column {exc.colno}") from exc
    if not isinstance(schema, dict):
        raise MalformedContract(f"the contract must be a JSON object (an Avro record schema), "
                                f"not a JSON {type(schema).__name__}")
    if schema.get("type") != "record":
        raise MalformedContract(f"the contract must be an Avro record schema (\"type\": "
                                f"\"record\"), not type {schema.get('type')!r}")
    fields = schema.get("fields")
    if not isinstance(fields, list) or not fields:
        raise MalformedContract("the contract's \"fields\" must be a non-empty list of fields")
    for i, f in enumerate(fields):
        if not isinstance(f, dict) or not isinstance(f.get("name"), str):
            raise MalformedContract(f"fields[{i}] must be an object with a \"name\" text")
        if META in f and not isinstance(f[META], dict):
            raise MalformedContract(f"field {f['name']!r}: its {META!r} attribute must be an "
                                    "object")
    if not isinstance(schema.get(META), dict):
        raise MalformedContract(f"the contract needs its catalogue entry: a {META!r} object "
                                "on the record (title, provider, share_class, ...; Art. 7)")
    try:
        fastavro.parse_schema(strip_meta(schema), _write_hint=False)
    except Exception as exc:  # fastavro raises several types (SchemaParseException, ...)
        raise MalformedContract(f"not a valid Avro schema: {exc}") from exc
    return schema


def proposed_resource(resource_id: str, schema: dict[str, Any]) -> Resource:
    agency, name = split_id(resource_id)
    return resource_from_schema(agency, name, schema, Path(f"<proposal:{resource_id}>"))


def _where(f: Finding, paths: dict[str, str]) -> str:
    return paths.get(f.file, CATALOGUE)


def proposal_findings(res: Resource, registered: Catalogue,
                      versions: dict[str, list[dict[str, Any]]],
                      today: dt.date | None = None, grants: Sequence[Grant] = (),
                      amends: Collection[int] = ()) -> list[Finding]:
    """The findings that concern ``res`` proposed into ``registered``: every finding of the
    contract itself, and every other finding the catalogue has with it but not without it
    (a second source of record claimed by ``res`` against an entry checked later, an
    attribute left without a source), and those of the fields that ``grants`` (the grants in
    force on the resource) list, given the grants the proposal ``amends``. ``file`` names the
    resource id, or ``catalogue``."""
    others = {k: v for k, v in registered.resources.items() if k != res.id}
    before = Catalogue(registered.root, others)
    after = Catalogue(registered.root, others | {res.id: res})
    paths = {str(r.path): r.id for r in after.resources.values()}
    baseline_paths = {str(r.path): r.id for r in before.resources.values()}

    def key(f: Finding, where: str) -> tuple[str, ...]:
        return (f.severity, where, f.field, f.rule, f.message)

    baseline = {key(f, _where(f, baseline_paths))
                for f in check_catalogue(before, versions, today)} if before.resources else set()
    out = []
    for f in check_catalogue(after, versions, today):
        where = _where(f, paths)
        if where == res.id or key(f, where) not in baseline:
            out.append(Finding(f.severity, where, f.field, f.rule, f.article, f.message))
    current = registered.resources.get(res.id)
    if current is not None:
        out.extend(_unversioned_markers(res, current))
        out.extend(evolution.level_change(res.id, current.meta, res.meta))
        changes = evolution.field_changes(current.schema, res.schema)
        out.extend(evolution.granted_field_findings(res.id, changes, grants, amends))
    elif amends:
        out.extend(evolution.granted_field_findings(res.id, [], [], amends))
    return out


def _markers(res: Resource) -> dict[str, Any]:
    return {str(f.get("name")): f.get(META) for f in res.schema.get("fields") or []
            if isinstance(f, dict)}


def _unversioned_markers(res: Resource, current: Resource) -> list[Finding]:
    """Art. 8, 13, 25: the fields' markers (canonical attribute, source of record,
    sensitivity, identifier role) are recorded by a schema version; a change of them alone,
    with the same Avro schema, would register no version and so never take effect."""
    if strip_meta(res.schema) != strip_meta(current.schema):
        return []
    old, new = _markers(current), _markers(res)
    changed = sorted(n for n in set(old) | set(new) if old.get(n) != new.get(n))
    if not changed:
        return []
    return [Finding(ERROR, res.id, changed[0], "schema.markers_unversioned", "Art. 13",
                    f"the markers of {', '.join(changed)} change but the Avro schema does "
                    "not, so no schema version would record them: change the schema too "
                    "(a field's doc, say) so that a new version is registered")]


def review_state(registered_at: dt.datetime, last_review: dt.datetime | None,
                 as_of: dt.datetime) -> dict[str, Any]:
    """Art. 13: when an entry is due for review (a year after its last review, else after its
    registration), whether it is due at ``as_of`` and by how many days."""
    basis = last_review or registered_at
    due_at = basis + dt.timedelta(days=REVIEW_DAYS)
    overdue = as_of - due_at
    return {"since": "review" if last_review else "registration", "due_at": due_at,
            "due": as_of > due_at, "days_overdue": max(0, overdue.days)}


# --- PostgreSQL -------------------------------------------------------------------------

def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime | dt.date) else value


def read_registered(cur: Any) -> tuple[Catalogue, dict[str, list[dict[str, Any]]],
                                       dict[str, dict[str, Any]]]:
    """On the caller's cursor: the registered catalogue (each resource's latest version, its
    catalogue entry as ``catalogue_resources`` holds it now), every registered contract per
    resource (oldest first) and each resource's registration facts (schema id, version,
    versions, first registration)."""
    cur.execute("""SELECT v.resource_id, v.schema_id, v.version, v.contract, v.registered_at,
                          r.metadata
                   FROM schema_versions v JOIN catalogue_resources r USING (resource_id)
                   ORDER BY v.resource_id, v.version""")
    resources: dict[str, Resource] = {}
    contracts: dict[str, list[dict[str, Any]]] = {}
    facts: dict[str, dict[str, Any]] = {}
    for resource_id, schema_id, version, contract, registered_at, metadata in cur.fetchall():
        contracts.setdefault(resource_id, []).append(contract)
        info = facts.setdefault(resource_id, {"registered_at": registered_at, "versions": []})
        info["versions"].append({"version": version, "schema_id": schema_id,
                                 "registered_at": registered_at.isoformat()})
        info |= {"schema_id": schema_id, "version": version}
        schema = dict(contract)
        if isinstance(metadata, dict):
            schema[META] = metadata
        agency, name = resource_id.split(".", 1)
        resources[resource_id] = resource_from_schema(agency, name, schema,
                                                      Path(f"<registry:{schema_id}>"))
    return Catalogue(REGISTRY_ROOT, resources), contracts, facts


def registered_catalogue(dsn: str) -> Catalogue:
    """The catalogue as registered in PostgreSQL: what the service decides by."""
    try:
        with db.transaction(dsn) as conn, conn.cursor() as cur:
            return read_registered(cur)[0]
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot read the registered catalogue: {exc}") from exc


def registration(dsn: str, resource_id: str) -> dict[str, Any] | None:
    """A registered resource's versions (oldest first), first registration and last review."""
    try:
        with db.transaction(dsn) as conn, conn.cursor() as cur:
            cur.execute("""SELECT version, schema_id, registered_at FROM schema_versions
                           WHERE resource_id = %s ORDER BY version""", (resource_id,))
            versions = cur.fetchall()
            if not versions:
                return None
            cur.execute("""SELECT reviewed_at, agency, note FROM catalogue_reviews
                           WHERE resource_id = %s ORDER BY reviewed_at DESC, review_id DESC
                           LIMIT 1""", (resource_id,))
            last = cur.fetchone()
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot read the registration of {resource_id}: {exc}") from exc
    state = review_state(versions[0][2], last[0] if last else None, dt.datetime.now(dt.UTC))
    return {"versions": [{"version": v, "schema_id": s, "registered_at": at.isoformat()}
                         for v, s, at in versions],
            "registered_at": versions[0][2].isoformat(),
            "last_review": {"reviewed_at": last[0].isoformat(), "agency": last[1],
                            "note": last[2]} if last else None,
            "review_due_at": state["due_at"].isoformat(), "review_due": state["due"]}


_COLUMNS = ("proposal_id, resource_id, agency, kind, base_version, base_digest, contract, note, "
            "findings, "
            "errors, status, proposed_at, checked_at, decided_at, decided_by, reason, "
            "schema_id, version, amends_grants")


def _out(row: dict[str, Any], contract: bool = True) -> dict[str, Any]:
    out = {k: _iso(v) for k, v in row.items()}
    out["resource"] = out.pop("resource_id")
    out["warnings"] = sum(f.get("severity") == WARNING for f in out["findings"])
    out["amends_grants"] = list(out.get("amends_grants") or [])
    if not contract:
        out.pop("contract", None)
    return out


def _fingerprint(schema: dict[str, Any]) -> str:
    """Of the Avro schema, as the registry fingerprints a version."""
    return digest(strip_meta(schema))


def digest(schema: dict[str, Any]) -> str:
    """Of a whole contract, its catalogue entry included."""
    canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _actor(cur: Any, who: str) -> None:
    cur.execute("SELECT set_config('govbus.actor', %s, true)", (who,))


def check_provider(agency: str, resource_id: str, schema: dict[str, Any] | None = None) -> None:
    """Art. 4, 13: ``agency`` provides ``resource_id`` (and the contract names it provider);
    NotProvider otherwise."""
    owner, _ = split_id(resource_id)
    if owner != agency:
        raise NotProvider(f"{agency} cannot propose or review {resource_id}: its provider is "
                          f"{owner}, and an agency maintains only its own entries (Art. 4, 13)")
    named = (schema or {}).get(META, {}).get("provider")
    if isinstance(named, str) and named.strip() and named != agency:
        raise NotProvider(f"the contract names {named!r} as provider; {agency} proposes only "
                          "contracts it provides (Art. 4, 13)")


def _in_force(cur: Any, resource_id: str) -> list[Grant]:
    """On the caller's cursor: the grants in force on ``resource_id`` now."""
    at = dt.datetime.now(dt.UTC)
    return [g for g in sharing_store.read_grants(cur, resource_id) if g.in_force(at)]


def _amends(ids: Collection[int] | None) -> list[int]:
    try:
        return sorted({int(i) for i in ids or ()})
    except (TypeError, ValueError) as exc:
        raise GovbusError(f"amends_grants lists grant ids (numbers), not {list(ids or ())!r}",
                          rule="input.invalid", article="Art. 13") from exc


def propose(dsn: str, agency: str, resource_id: str, raw: bytes | str,
            note: str | None = None, today: dt.date | None = None,
            amends_grants: Collection[int] | None = None) -> dict[str, Any]:
    """File ``agency``'s proposal of the contract ``raw`` for ``resource_id``, checked now;
    the stored proposal with its findings. ``amends_grants``: the grants in force whose
    fields the change removes, renames or retypes, which an approval amends."""
    amends = _amends(amends_grants)
    split_id(resource_id)
    check_provider(agency, resource_id)
    schema = parse_avsc(raw)
    check_provider(agency, resource_id, schema)
    res = proposed_resource(resource_id, schema)
    try:
        with db.transaction(dsn) as conn, conn.cursor(
                cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            _actor(cur, agency)
            with conn.cursor() as plain:
                registered, versions, facts = read_registered(plain)
                grants = _in_force(plain, resource_id)
            current = registered.resources.get(resource_id)
            if current is not None and current.schema == schema:
                raise ProposalConflict(f"the contract is {resource_id} as registered (v"
                                       f"{facts[resource_id]['version']}): nothing to propose",
                                       rule="proposal.unchanged")
            findings = proposal_findings(res, registered, versions, today, grants, amends)
            cur.execute(f"""INSERT INTO catalogue_proposals (resource_id, agency, kind,
                                base_version, base_digest, contract, fingerprint, note,
                                findings, errors, amends_grants)
                            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                            RETURNING {_COLUMNS}""",
                        (resource_id, agency, "change" if current is not None else "new",
                         facts[resource_id]["version"] if current is not None else None,
                         digest(current.schema) if current is not None else None,
                         psycopg2.extras.Json(schema), _fingerprint(schema), note,
                         psycopg2.extras.Json([f.as_dict() for f in findings]),
                         len(errors_only(findings)), amends or None))
            return _out(dict(cur.fetchone()))
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot store the proposal: {exc}") from exc


def _select(cur: Any, where: str, params: list[Any], lock: bool = False) -> list[dict[str, Any]]:
    cur.execute(f"SELECT {_COLUMNS} FROM catalogue_proposals WHERE {where} "
                f"ORDER BY proposal_id{' FOR UPDATE' if lock else ''}", params)
    return [dict(r) for r in cur.fetchall()]


def _read(dsn: str, where: str, params: list[Any]) -> list[dict[str, Any]]:
    try:
        with db.transaction(dsn) as conn, conn.cursor(
                cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            return _select(cur, where, params)
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot read the proposals: {exc}") from exc


def get(dsn: str, proposal_id: int) -> dict[str, Any]:
    rows = _read(dsn, "proposal_id = %s", [proposal_id])
    if not rows:
        raise ProposalNotFound(f"no catalogue proposal {proposal_id}")
    return _out(rows[0])


def list_proposals(dsn: str, agency: str | None = None, status: str | None = None,
                   resource_id: str | None = None) -> list[dict[str, Any]]:
    """Proposals, oldest first (without their contracts): ``agency``'s only, when named."""
    if status is not None and status not in STATUSES:
        raise GovbusError(f"status {status!r} is not one of {', '.join(STATUSES)}",
                          rule="input.invalid", article="Art. 13")
    where, params = ["true"], []
    for column, value in (("agency", agency), ("status", status), ("resource_id", resource_id)):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    return [_out(r, contract=False) for r in _read(dsn, " AND ".join(where), params)]


def _pending(cur: Any, proposal_id: int) -> dict[str, Any]:
    rows = _select(cur, "proposal_id = %s", [proposal_id], lock=True)
    if not rows:
        raise ProposalNotFound(f"no catalogue proposal {proposal_id}")
    row = rows[0]
    if row["status"] != PENDING:
        raise ProposalConflict(f"proposal {proposal_id} was already {row['status']} by "
                               f"{row['decided_by']} on {_iso(row['decided_at'])}: a proposal "
                               "is decided once (Art. 13)")
    return row


def _summary(findings: list[dict[str, str]]) -> str:
    return "; ".join(f"{f['field']}: {f['message']} ({f['rule']}, {f['article']})"
                     for f in findings)


def approve(dsn: str, proposal_id: int, by: str, reason: str | None = None,
            today: dt.date | None = None) -> dict[str, Any]:
    """Approve and register a pending proposal (the information center, Art. 13): checked
    again against what is registered now, in the registering transaction."""
    from govbus.core.registry import _sync_one

    blocked: list[dict[str, str]] = []
    try:
        with db.transaction(dsn) as conn, conn.cursor(
                cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            _actor(cur, by)
            cur.execute("LOCK TABLE schema_versions IN EXCLUSIVE MODE")  # as sync does
            row = _pending(cur, proposal_id)
            plain = conn.cursor()
            registered, versions, facts = read_registered(plain)
            now = registered.resources.get(row["resource_id"])
            if (digest(now.schema) if now is not None else None) != row["base_digest"]:
                was = f"v{row['base_version']}" if row["base_version"] else "not registered"
                is_ = f"v{facts[row['resource_id']]['version']}" if now else "not registered"
                raise ProposalConflict(
                    f"{row['resource_id']} was registered again since proposal {proposal_id} "
                    f"was made (then {was}, now {is_}, its entry changed): the provider must "
                    "propose again against what is registered (Art. 13)",
                    rule="proposal.stale")
            res = proposed_resource(row["resource_id"], row["contract"])
            grants = _in_force(plain, res.id)
            amends = list(row["amends_grants"] or [])
            findings = proposal_findings(res, registered, versions, today, grants, amends)
            errors = errors_only(findings)
            if errors:
                blocked = [f.as_dict() for f in errors]
                cur.execute("""UPDATE catalogue_proposals SET findings = %s, errors = %s,
                                   checked_at = now() WHERE proposal_id = %s""",
                            (psycopg2.extras.Json([f.as_dict() for f in findings]),
                             len(errors), proposal_id))
            else:
                result = _sync_one(plain, res)
                cur.execute(f"""UPDATE catalogue_proposals SET status = 'approved',
                                    decided_at = now(), decided_by = %s, reason = %s,
                                    schema_id = %s, version = %s, checked_at = now(),
                                    findings = %s, errors = 0
                                WHERE proposal_id = %s RETURNING {_COLUMNS}""",
                            (by, reason, result.schema_id, result.version,
                             psycopg2.extras.Json([f.as_dict() for f in findings]),
                             proposal_id))
                out = _out(dict(cur.fetchone()))
                out["registered"] = result.status
                out["amended"] = _amend(cur, out, now, grants, by)
                return out
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot approve proposal {proposal_id}: {exc}") from exc
    raise ProposalConflict(f"proposal {proposal_id} cannot be approved: its checks found "
                           f"{len(blocked)} error(s): {_summary(blocked)}",
                           rule="proposal.checks_failed", findings=blocked)


def _amend(cur: Any, proposal: dict[str, Any], registered: Resource | None,
           grants: Sequence[Grant], by: str) -> list[dict[str, Any]]:
    """The approval's amendments of the grants it names, after its own row is approved (the
    audit ledger admits a grant's narrowing that follows its proposal's approval)."""
    if registered is None or not proposal["amends_grants"]:
        return []
    new = proposal["contract"]
    changes = evolution.field_changes(registered.schema, new)
    out = []
    for a in evolution.amendments(changes, grants, proposal["amends_grants"]):
        detail = "; ".join(f"{c.name} {c.detail}" for c in changes
                           if c.name in (*a.dropped, *a.retyped))
        reason = (f"catalogue proposal {proposal['proposal_id']} of {proposal['resource']} "
                  f"approved (Art. 13): {detail}")
        sharing_store.amend_grant(cur, a.grant_id, list(a.fields), list(a.masked_fields), by,
                                  reason, {"proposal_id": proposal["proposal_id"],
                                           "resource": proposal["resource"],
                                           "dropped": list(a.dropped),
                                           "retyped": list(a.retyped),
                                           "version": proposal["version"]})
        out.append({"grant_id": a.grant_id, "recipient": a.recipient, "fields": list(a.fields),
                    "masked_fields": list(a.masked_fields), "dropped": list(a.dropped),
                    "retyped": list(a.retyped)})
    return out


def reject(dsn: str, proposal_id: int, by: str, reason: str) -> dict[str, Any]:
    """Reject a pending proposal with a reason (the information center, Art. 13)."""
    if not isinstance(reason, str) or not reason.strip():
        raise GovbusError("a rejection needs a reason the provider can act on (Art. 13)",
                          rule="proposal.reason_missing", article="Art. 13")
    try:
        with db.transaction(dsn) as conn, conn.cursor(
                cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            _actor(cur, by)
            _pending(cur, proposal_id)
            cur.execute(f"""UPDATE catalogue_proposals SET status = 'rejected',
                                decided_at = now(), decided_by = %s, reason = %s
                            WHERE proposal_id = %s RETURNING {_COLUMNS}""",
                        (by, reason, proposal_id))
            return _out(dict(cur.fetchone()))
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot reject proposal {proposal_id}: {exc}") from exc


# --- the yearly review (Art. 13) --------------------------------------------------------

def review(dsn: str, resource_id: str, agency: str, note: str) -> dict[str, Any]:
    """``agency`` confirms its yearly review of its entry ``resource_id``, with a note."""
    split_id(resource_id)
    check_provider(agency, resource_id)
    if not isinstance(note, str) or not note.strip():
        raise GovbusError("a review needs a note: what was reviewed, what was found (Art. 13)",
                          rule="review.note_missing", article="Art. 13")
    try:
        with db.transaction(dsn) as conn, conn.cursor(
                cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            _actor(cur, agency)
            cur.execute("SELECT provider FROM catalogue_resources WHERE resource_id = %s",
                        (resource_id,))
            found = cur.fetchone()
            if found is None:
                raise NotFoundError(f"{resource_id} is not registered in the catalogue",
                                    rule="catalogue.unknown_resource", article="Art. 7")
            if found["provider"] != agency:
                raise NotProvider(f"{agency} cannot review {resource_id}: its provider is "
                                  f"{found['provider']} (Art. 13)")
            cur.execute("""INSERT INTO catalogue_reviews (resource_id, agency, note)
                           VALUES (%s, %s, %s)
                           RETURNING review_id, resource_id, agency, note, reviewed_at""",
                        (resource_id, agency, note))
            row = {k: _iso(v) for k, v in dict(cur.fetchone()).items()}
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot record the review of {resource_id}: {exc}") from exc
    row["resource"] = row.pop("resource_id")
    row["next_due_at"] = _iso(dt.datetime.fromisoformat(row["reviewed_at"])
                              + dt.timedelta(days=REVIEW_DAYS))
    return row


def reviews(dsn: str, agency: str | None = None,
            as_of: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Every registered entry's review state at ``as_of`` (default now), ``agency``'s only
    when named."""
    as_of = as_of or dt.datetime.now(dt.UTC)
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=dt.UTC)
    try:
        with db.transaction(dsn) as conn, conn.cursor() as cur:
            cur.execute("""SELECT r.resource_id, r.provider, r.title,
                                  (SELECT min(v.registered_at) FROM schema_versions v
                                   WHERE v.resource_id = r.resource_id),
                                  last.reviewed_at, last.agency, last.note
                           FROM catalogue_resources r
                           LEFT JOIN LATERAL (
                               SELECT reviewed_at, agency, note FROM catalogue_reviews c
                               WHERE c.resource_id = r.resource_id
                               ORDER BY reviewed_at DESC, review_id DESC LIMIT 1) last ON true
                           WHERE %(agency)s::text IS NULL OR r.provider = %(agency)s
                           ORDER BY r.resource_id""", {"agency": agency})
            rows = cur.fetchall()
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot read the catalogue's reviews: {exc}") from exc
    out = []
    for resource_id, provider, title, registered_at, reviewed_at, by, note in rows:
        if registered_at is None:
            continue
        state = review_state(registered_at, reviewed_at, as_of)
        out.append({"resource": resource_id, "provider": provider, "title": title,
                    "registered_at": _iso(registered_at),
                    "last_review": {"reviewed_at": _iso(reviewed_at), "agency": by,
                                    "note": note} if reviewed_at else None,
                    "since": state["since"], "due_at": _iso(state["due_at"]),
                    "due": state["due"], "days_overdue": state["days_overdue"]})
    return out


def reviews_due(dsn: str, agency: str | None = None,
                as_of: dt.datetime | None = None) -> list[dict[str, Any]]:
    """The entries not reviewed within a year at ``as_of`` (Art. 13), most overdue first."""
    due = [r for r in reviews(dsn, agency, as_of) if r["due"]]
    return sorted(due, key=lambda r: (-r["days_overdue"], r["resource"]))
