"""The audit ledger: the control plane's decisions, hash-chained (Art. 13, 18, 19, 20, 24, 28,
29, 31; docs/evidence.md).

Every row written to an audited table (:data:`AUDITED`: sharing requests, grants, filings, the
catalogue, its schema versions, proposals and reviews, credentials, signing keys, cases,
objections and complaints and their history) is appended to ``audit_ledger`` by a trigger
(migrations 0012 and 0017) in the writing
transaction, with its before and after images, the table, the operation, the primary key and
the actor the writing code names (``govbus.actor``; NULL for anyone else).

Invariants:

- **Sealed rows form one chain.** :func:`seal` numbers the rows not sealed yet (``seq``,
  consecutive from 1, in arrival order) and sets ``row_hash = sha256(prev_hash +
  canonical(content))`` with :func:`govbus.delivery_log.chain.row_hash`: ``content`` is the
  row's ``seq``, ``id``, ``at_us`` (microseconds), ``actor``, ``table``, ``op``, ``row_key``,
  ``before`` and ``after`` (numbers as PostgreSQL writes them in the JSON, so nothing the
  database holds escapes the hash). ``prev_hash`` is the previous sealed row's ``row_hash``,
  :data:`GENESIS` for seq 1; ``audit_ledger_head`` holds the last one. The trigger does not
  hash: anyone can recompute the chain from the rows, in Python, without this code.
- **What verify reports** (:func:`verify`, one REPEATABLE READ snapshot): a row altered after
  sealing (hash mismatch), sealed rows deleted (missing seqs, the newest ones through the
  head too), a link that does not chain, rows beyond the head; an audited table without its
  enabled trigger (``unaudited``); a table row that differs from the ledger's last image of
  it (a NULL column and an absent one alike: a column a migration adds), or that the
  ledger does not know, or that the ledger has but the table lost
  (``unrecorded``: written with the trigger bypassed); a recorded change the bus never makes
  (``outside_rules``: a filing deleted or updated, a grant's fields or masking changed, a
  schema version rewritten; Art. 18, 25, 31). One change of a grant's fields is the bus's
  own: its narrowing by an approved catalogue proposal that names it in ``amends_grants``
  (Art. 13, 24), recorded after that approval, once per approval (:class:`Amendments`).
  Rows left unsealed for more than
  :data:`UNSEALED_GRACE_S` are a warning, not a break.
- **Detection, not prevention.** The database owner can write the ledger: a rewritten chain
  whose head is rewritten too, or the newest rows deleted with the head moved back, verifies
  here on its own. Signed checkpoints of :func:`head`, held by the agencies, anchor it:
  given to :func:`verify`, a row they cover that changed or went is found.

Depends on :mod:`govbus.core` and this package only.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
import psycopg2
import psycopg2.extensions
import psycopg2.extras

from govbus.core import db
from govbus.core.errors import DatabaseError
from govbus.delivery_log.chain import GENESIS, Problem, VerifyReport, row_hash
from govbus.delivery_log.checkpoints import AUDIT, Binder, Checkpoint

SEAL_LOCK_KEY = 0x60B0A0D1  # advisory lock of the sealer: one chain, one sealer at a time
BATCH = 5000  # rows sealed per transaction
UNSEALED_GRACE_S = 60.0  # older unsealed rows are reported: is anything calling seal()?
BASELINE_ACTOR = "migration 0012"  # rows present before the ledger


@dataclass(frozen=True)
class Audited:
    """One audited table: its primary key, its secret columns (recorded as their SHA-256),
    the columns whose change alone is not recorded, and the bus's own rules for it: the
    operations its code performs and, for an UPDATE, the columns it changes (None: any)."""

    table: str
    key: str
    secrets: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    ops: frozenset[str] = frozenset({"INSERT"})
    mutable: frozenset[str] | None = frozenset()

    @property
    def trigger_args(self) -> tuple[str, str, str]:
        """The arguments migration 0012 installs the trigger with."""
        return (self.key, ",".join(self.secrets), ",".join(self.ignored))


def _audited(*tables: Audited) -> dict[str, Audited]:
    return {t.table: t for t in tables}


_IU, _IUD = frozenset({"INSERT", "UPDATE"}), frozenset({"INSERT", "UPDATE", "DELETE"})
#: every audited table (migrations 0012 and 0017 install the trigger on each, with these
#: arguments)
AUDITED = _audited(
    Audited("catalogue_resources", "resource_id", ignored=("synced_at",), ops=_IU,
            mutable=None),  # Art. 7, 13: `catalogue sync` rewrites an entry
    Audited("schema_versions", "schema_id"),  # Art. 13: a schema id never changes once assigned
    Audited("sharing_requests", "request_id", ops=_IU,  # Art. 18: decided once
            mutable=frozenset({"status", "decided_at", "decided_by", "reason"})),
    Audited("grants", "grant_id", ops=_IU,  # Art. 24, 25: revoked, never widened
            mutable=frozenset({"revoked_at", "revoked_by", "revoke_reason", "changed_at"})),
    Audited("filings", "filing_id"),  # Art. 18: every response is filed, and stays filed
    Audited("agency_credentials", "agency", secrets=("salt", "token_hash"),
            ignored=("last_used_at",), ops=_IUD, mutable=None),  # Art. 24: issue, rotate, revoke
    Audited("agency_keys", "key_id", ops=_IU,  # Art. 8, 24: a revoked key stays revoked
            mutable=frozenset({"revoked_at", "revoked_by"})),
    Audited("cases", "id", ignored=("updated_at",), ops=_IU,  # Art. 20
            mutable=frozenset({"status", "values", "closed_at", "resolution", "note",
                               "resolved_by", "updated_at"})),
    Audited("objections", "id", ops=_IU,  # Art. 19, 29: answered once
            mutable=frozenset({"status", "answered_at", "answer", "answered_by"})),
    Audited("objection_events", "id"),  # Art. 19, 29: the history, append-only
    Audited("catalogue_proposals", "proposal_id", ops=_IU,  # Art. 13: decided once
            mutable=frozenset({"findings", "errors", "checked_at", "status", "decided_at",
                               "decided_by", "reason", "schema_id", "version"})),
    Audited("catalogue_reviews", "review_id"),  # Art. 13: the yearly reviews, append-only
    Audited("commitments", "number", ops=_IU,  # Art. 24, 25: registered, withdrawn once
            mutable=frozenset({"withdrawn_at", "withdrawn_by", "withdraw_reason"})),
)


# --- rows and hashes: pure --------------------------------------------------------------

class LedgerRow(NamedTuple):
    """A row of ``audit_ledger`` as hashed; ``at_us`` in microseconds since the epoch,
    ``before``/``after`` parsed by :func:`parse_image`. ``_replace`` gives an altered copy."""

    seq: int
    id: int
    at_us: int
    actor: str | None
    table: str
    op: str
    row_key: str
    before: Any
    after: Any
    prev_hash: str | None
    row_hash: str | None

    def content(self) -> dict[str, Any]:
        """What the hash covers: everything but the hashes themselves."""
        return {"seq": self.seq, "id": self.id, "at_us": self.at_us, "actor": self.actor,
                "table": self.table, "op": self.op, "row_key": self.row_key,
                "before": self.before, "after": self.after}


class Unsealed(NamedTuple):
    """A ledger row as the trigger wrote it: no seq, no hashes yet."""

    id: int
    at_us: int
    actor: str | None
    table: str
    op: str
    row_key: str
    before: Any
    after: Any


_INT_RANGE = range(-2**63, 2**64)  # what orjson writes as an integer


def _number(text: str) -> Any:
    return orjson.Fragment(text)


def _integer(text: str) -> Any:
    value = int(text)
    return value if value in _INT_RANGE else orjson.Fragment(text)


def parse_image(text: str | bytes | None) -> Any:
    """A row image (jsonb as PostgreSQL writes it) for hashing: every number that is not a
    64-bit integer is kept as written (``1.10`` stays ``1.10``), so that the canonical bytes
    differ whenever the stored value does."""
    if text is None:
        return None
    return json.loads(text, parse_float=_number, parse_int=_integer)


def link(rows: Sequence[Unsealed], head: tuple[int, str]) -> list[LedgerRow]:
    """``rows`` sealed after ``head`` (seq, row_hash): consecutive seqs, each hash linked."""
    out, (seq, prev) = [], head
    for r in rows:
        seq += 1
        content = LedgerRow(seq, r.id, r.at_us, r.actor, r.table, r.op, r.row_key, r.before,
                            r.after, prev, None)
        digest = row_hash(prev, content.content())
        out.append(content._replace(row_hash=digest))
        prev = digest
    return out


def _same(a: Any, b: Any) -> bool:
    try:
        return orjson.dumps(a, option=orjson.OPT_SORT_KEYS) == \
            orjson.dumps(b, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits, parsed by psycopg2
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def changed_columns(before: Any, after: Any) -> list[str]:
    """The columns an UPDATE changed, by their canonical values."""
    if not isinstance(before, Mapping) or not isinstance(after, Mapping):
        return []
    return sorted(k for k in set(before) | set(after) if not _same(before.get(k, _ABSENT),
                                                                   after.get(k, _ABSENT)))


_ABSENT = "\x00absent"  # no column value can be this: PostgreSQL text holds no NUL


def outside_rules(row: LedgerRow) -> str | None:
    """Why ``row`` records a change the bus's code never makes; None if it may."""
    rule = AUDITED.get(row.table)
    if rule is None:
        return None
    if row.op not in rule.ops:
        return f"{row.op} of {row.table} {row.row_key}: the bus never does this to a row of " \
               f"{row.table}"
    if row.op == "UPDATE" and rule.mutable is not None:
        foreign = [c for c in changed_columns(row.before, row.after) if c not in rule.mutable]
        if foreign:
            return (f"UPDATE of {row.table} {row.row_key} changed {', '.join(foreign)}: the bus "
                    f"never changes {'these' if len(foreign) > 1 else 'this'} once written")
    return None


_NARROWING = frozenset({"fields", "masked_fields", "changed_at"})


def approved_amendments(row: LedgerRow) -> list[tuple[str, str]]:
    """(resource, grant key) of each grant that ``row``'s approval of a catalogue proposal
    amends (its ``amends_grants``); [] for any other row."""
    before, after = row.before, row.after
    if row.table != "catalogue_proposals" or row.op != "UPDATE" or \
            not isinstance(before, Mapping) or not isinstance(after, Mapping):
        return []
    if before.get("status") != "pending" or after.get("status") != "approved":
        return []
    return [(str(after.get("resource_id")), str(g)) for g in after.get("amends_grants") or []]


def narrows_grant(row: LedgerRow) -> bool:
    """``row`` is an UPDATE of a grant that only drops fields (a masked field dropped from
    the fields too, so nothing is unmasked) and sets ``changed_at``: an amendment's shape."""
    before, after = row.before, row.after
    if row.table != "grants" or row.op != "UPDATE" or \
            not isinstance(before, Mapping) or not isinstance(after, Mapping):
        return False
    if not set(changed_columns(before, after)) <= _NARROWING:
        return False
    fields, was = set(after.get("fields") or []), set(before.get("fields") or [])
    masked, was_masked = set(after.get("masked_fields") or []), \
        set(before.get("masked_fields") or [])
    return fields <= was and masked <= was_masked and not (was_masked - masked) & fields


class Amendments:
    """The grant amendments the ledger's approvals admit so far: each approval of a proposal
    admits one narrowing (:func:`narrows_grant`) of each grant it names, recorded after it."""

    def __init__(self) -> None:
        self.admitted: dict[tuple[str, str], int] = {}

    def note(self, row: LedgerRow) -> None:
        for key in approved_amendments(row):
            self.admitted[key] = self.admitted.get(key, 0) + 1

    def admits(self, row: LedgerRow) -> bool:
        """Whether ``row`` is an admitted amendment (then it uses up its admission)."""
        if not narrows_grant(row):
            return False
        key = (str((row.after or {}).get("resource_id")), row.row_key)
        if self.admitted.get(key, 0) < 1:
            return False
        self.admitted[key] -= 1
        return True


# --- verification: pure -------------------------------------------------------------------

@dataclass
class AuditReport(VerifyReport):
    """What :func:`verify` found; ``ok`` when the chain is intact up to its head, every
    audited table has its trigger, every row is recorded and no change breaks the rules.
    ``warnings`` (unsealed rows) do not make it fail."""

    unsealed: int = 0
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return super().as_dict() | {"unsealed": self.unsealed, "warnings": self.warnings}

    def lines(self) -> list[str]:
        span = f"seq {self.first_seq}..{self.last_seq}" if self.rows else "empty"
        total = sum(self.counts.values())
        verdict = "intact" if self.ok else f"{total} problem(s): " + ", ".join(
            f"{n} {k}" for k, n in sorted(self.counts.items()))
        out = [f"audit ledger: {self.rows} sealed rows ({span}), head seq {self.head_seq} "
               f"{(self.head_hash or '-')[:16]}…, {self.unsealed} unsealed: {verdict}"]
        out += [f"  {'' if p.seq is None else f'seq {p.seq}: '}{p.kind}: {p.message}"
                for p in self.problems]
        if total > len(self.problems):
            out.append(f"  … and {total - len(self.problems)} more")
        out += [f"  warning: {w}" for w in self.warnings]
        return out


def _span(first: int, last: int) -> str:
    return f"seq {first}" if first == last else f"seq {first}..{last}"


class LedgerChecker:
    """Feed sealed rows in seq order, then :meth:`finish` with the head; keeps counts, not
    rows. Also :meth:`add` for problems found outside the chain (triggers, table state)."""

    def __init__(self, max_problems: int = 1000) -> None:
        self.report = AuditReport()
        self.max_problems = max_problems
        self._prev: LedgerRow | None = None
        self._amendments = Amendments()

    def add(self, seq: int | None, kind: str, message: str) -> None:
        self.report.counts[kind] += 1
        if len(self.report.problems) < self.max_problems:
            self.report.problems.append(Problem(seq, kind, message))

    def feed(self, row: LedgerRow) -> None:
        prev, rep = self._prev, self.report
        expected = prev.seq + 1 if prev else 1
        rep.rows += 1
        rep.first_seq = row.seq if rep.first_seq is None else rep.first_seq
        rep.last_seq = row.seq
        if row.seq > expected:
            self.add(expected, "missing", f"{_span(expected, row.seq - 1)} missing before "
                     f"seq {row.seq} (deleted rows)")
        elif row.seq < expected:
            self.add(row.seq, "out_of_order", f"seq {row.seq} below the first seq 1")
        else:
            want = prev.row_hash if prev else GENESIS
            if row.prev_hash != want:
                what = f"seq {prev.seq}'s row_hash" if prev else "the genesis hash"
                self.add(row.seq, "broken_link", f"prev_hash {str(row.prev_hash)[:16]}… is not "
                         f"{what} {str(want)[:16]}… (inserted or replaced row, or rewritten "
                         "hash)")
        if row_hash(str(row.prev_hash), row.content()) != row.row_hash:
            self.add(row.seq, "altered", f"row_hash does not match the row's content "
                     f"({row.op} of {row.table} {row.row_key} altered, or forged)")
        why = outside_rules(row)
        if why and not self._amendments.admits(row):
            self.add(row.seq, "outside_rules", why)
        self._amendments.note(row)
        self._prev = row

    def finish(self, head: tuple[int, str] | None) -> AuditReport:
        last, rep = self._prev, self.report
        if head is None:
            self.add(None, "head_mismatch", "audit_ledger_head has no row (removed?)")
            return rep
        rep.head_seq, rep.head_hash = head
        end = last.seq if last else 0
        if end < head[0]:
            self.add(end + 1, "missing", f"the ledger ends at seq {end} but its head is seq "
                     f"{head[0]}: {_span(end + 1, head[0])} missing (deleted newest rows)")
        elif end > head[0]:
            self.add(head[0] + 1, "head_mismatch", f"{_span(head[0] + 1, end)} beyond the "
                     f"head (seq {head[0]}): not sealed by seal()")
        elif last is not None and last.row_hash != head[1]:
            self.add(end, "head_mismatch", f"row_hash {str(last.row_hash)[:16]}… differs "
                     f"from the head's {head[1][:16]}…")
        elif last is None and head[1] != GENESIS:
            self.add(None, "head_mismatch", f"no sealed row, but the head's hash is "
                     f"{head[1][:16]}…, not the genesis hash")
        return rep


# --- PostgreSQL -------------------------------------------------------------------------

_US = "round(extract(epoch FROM {0}) * 1000000)::bigint"
_HEAD_SQL = "SELECT seq, row_hash FROM audit_ledger_head WHERE id = 1"
#: the session settings a row image is rendered under (the trigger function sets them too)
_RENDERING = ("SET LOCAL TimeZone = 'UTC'", "SET LOCAL IntervalStyle = 'postgres'",
              "SET LOCAL bytea_output = 'hex'")


def head(cur: Any) -> tuple[int, str]:
    """(seq, row_hash) of the last sealed row, on the caller's cursor; (0, GENESIS) when none
    is sealed. DatabaseError if the head's row is gone (run ``govbus audit verify``)."""
    cur.execute(_HEAD_SQL)
    found = cur.fetchone()
    if found is None:
        raise DatabaseError("audit_ledger_head has no row: migration 0012 not applied, or the "
                            "ledger was tampered with; run `govbus audit verify`")
    if isinstance(found, Mapping):
        return int(found["seq"]), str(found["row_hash"])
    return int(found[0]), str(found[1])


def _unsealed(rec: Sequence[Any]) -> Unsealed:
    return Unsealed(int(rec[0]), int(rec[1]), rec[2], str(rec[3]), str(rec[4]), str(rec[5]),
                    parse_image(rec[6]), parse_image(rec[7]))


def _seal_batch(conn: psycopg2.extensions.connection, batch: int) -> int:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM audit_ledger WHERE row_hash IS NULL LIMIT 1")
        if cur.fetchone() is None:  # the usual case when called often: no lock taken
            return 0
        cur.execute("SET LOCAL lock_timeout = '30s'")
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (SEAL_LOCK_KEY,))
        at = head(cur)
        cur.execute(f"SELECT id, {_US.format('at')}, actor, table_name, op, row_key, "
                    "before::text, after::text FROM audit_ledger WHERE row_hash IS NULL "
                    "ORDER BY id LIMIT %s", (batch,))
        rows = link([_unsealed(r) for r in cur.fetchall()], at)
        if not rows:
            return 0
        psycopg2.extras.execute_values(
            cur, "UPDATE audit_ledger AS l SET seq = v.seq, prev_hash = v.prev, "
                 "row_hash = v.hash FROM (VALUES %s) AS v(id, seq, prev, hash) "
                 "WHERE l.id = v.id AND l.row_hash IS NULL",
            [(r.id, r.seq, r.prev_hash, r.row_hash) for r in rows], page_size=len(rows))
        if cur.rowcount != len(rows):  # another sealer's rows, seen through an old snapshot
            raise DatabaseError("audit ledger: rows were sealed meanwhile; nothing sealed, "
                                "call seal() again")
        last = rows[-1]
        cur.execute("UPDATE audit_ledger_head SET seq = %s, row_hash = %s WHERE id = 1",
                    (last.seq, last.row_hash))
        return len(rows)


def seal(target: str | psycopg2.extensions.connection, batch: int = BATCH) -> int:
    """Seal the rows not sealed yet, in arrival order, after the head; the number sealed.

    ``target`` is a DSN or a connection not in the middle of other work (each batch of
    ``batch`` rows is its own transaction, committed on it). Cheap when there is nothing to
    seal: one indexed lookup and no lock; otherwise under the sealer's advisory lock, so that
    sealers never interleave.
    """
    if batch < 1:
        raise ValueError(f"batch must be positive, not {batch}")
    conn = db.connect(target) if isinstance(target, str) else target
    autocommit = conn.autocommit
    total = 0
    try:
        if autocommit:
            conn.autocommit = False
        while True:
            n = _seal_batch(conn, batch)
            total += n
            if n < batch:
                return total
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot seal the audit ledger: {exc}") from exc
    finally:
        if isinstance(target, str):
            conn.close()
        elif autocommit and not conn.closed:
            conn.autocommit = True


_ROW_SQL = (f"SELECT seq, id, {_US.format('at')}, actor, table_name, op, row_key, "
            "before::text, after::text, prev_hash, row_hash FROM audit_ledger "
            "WHERE seq IS NOT NULL ORDER BY seq")
_ROW_TYPE = 1 | 4 | 8 | 16  # pg_trigger.tgtype: FOR EACH ROW, INSERT, DELETE, UPDATE
_STATE_SQL = """
WITH now_held AS (
    SELECT t.image ->> %(key)s AS row_key, t.image - %(ignored)s::text[] AS image
    FROM (SELECT govbus_audit_image(to_jsonb(x), %(secrets)s::text[]) AS image
          FROM {table} x) AS t),
recorded AS (
    SELECT DISTINCT ON (row_key) row_key, seq, id, after - %(ignored)s::text[] AS image
    FROM audit_ledger WHERE table_name = %(table)s ORDER BY row_key, id DESC)
SELECT coalesce(n.row_key, r.row_key), r.seq, r.id, n.image IS NULL, r.id IS NULL
FROM now_held n FULL JOIN recorded r USING (row_key)
WHERE jsonb_strip_nulls(n.image) IS DISTINCT FROM jsonb_strip_nulls(r.image)
ORDER BY 1
"""


def _check_triggers(cur: Any, checker: LedgerChecker) -> None:
    cur.execute("SELECT c.relname, t.tgenabled, t.tgtype, t.tgargs FROM pg_trigger t "
                "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_proc p ON p.oid = t.tgfoid "
                "WHERE p.proname = 'govbus_audit' AND NOT t.tgisinternal")
    installed: dict[str, list[tuple[str, int, tuple[str, ...]]]] = {}
    for name, enabled, kind, args in cur.fetchall():
        parts = tuple(a.decode() for a in bytes(args).split(b"\x00")[:-1])
        installed.setdefault(str(name), []).append((str(enabled), int(kind), parts))
    for table, rule in AUDITED.items():
        found = installed.get(table, [])
        if not any(e in ("O", "A") and k & _ROW_TYPE == _ROW_TYPE and not k & 2
                   and a == rule.trigger_args for e, k, a in found):
            what = "has no audit trigger" if not found else \
                "has its audit trigger disabled or changed"
            checker.add(None, "unaudited", f"{table} {what}: its changes are not recorded "
                        "(ALTER TABLE … DISABLE TRIGGER? re-create it as migration 0012 does)")


def _check_state(cur: Any, checker: LedgerChecker) -> None:
    for table, rule in AUDITED.items():
        cur.execute(_STATE_SQL.format(table=psycopg2.extensions.quote_ident(table, cur)),
                    {"key": rule.key, "ignored": list(rule.ignored),
                     "secrets": list(rule.secrets), "table": table})
        for row_key, seq, ledger_id, gone, unknown in cur.fetchall():
            last = "the ledger's last record of it" + ("" if seq is not None else
                                                       f" (id {ledger_id}, not sealed yet)")
            if unknown:
                why = "the ledger has no record of it"
            elif gone:
                why = f"gone from the table, but {last} has it"
            else:
                why = f"it differs from {last}"
            checker.add(seq, "unrecorded", f"{table} {row_key}: {why} (written with the "
                        "audit trigger bypassed)")


def verify(dsn: str, max_problems: int = 1000, checkpoints: Sequence[Checkpoint] = ()
           ) -> AuditReport:
    """Check the whole ledger in one consistent snapshot: the chain up to its head, the
    triggers, every audited table's rows against their last record, the bus's rules; and
    each sealed row at a seq that ``checkpoints`` cover must have the hash they signed (their
    signatures checked by the caller, :func:`govbus.delivery_log.checkpoints.check_series`):
    what a consistent rewrite or a head moved back cannot hide."""
    checker = LedgerChecker(max_problems)
    binder = Binder(AUDIT, checkpoints, max_problems) if checkpoints else None
    conn = db.connect(dsn)
    try:
        conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ,
                         readonly=True)
        with conn.cursor() as cur:
            for statement in _RENDERING:
                cur.execute(statement)
            cur.execute(_HEAD_SQL)
            found = cur.fetchone()
            cur.execute("SELECT count(*), min(id), extract(epoch FROM clock_timestamp() - "
                        "min(at)) FROM audit_ledger WHERE seq IS NULL")
            unsealed, oldest, age = cur.fetchone()
        with conn.cursor(name="govbus_audit_verify") as cur:
            cur.itersize = 10000
            cur.execute(_ROW_SQL)
            for rec in cur:
                checker.feed(LedgerRow(int(rec[0]), int(rec[1]), int(rec[2]), rec[3], rec[4],
                                       rec[5], rec[6], parse_image(rec[7]),
                                       parse_image(rec[8]), rec[9], rec[10]))
                if binder is not None:
                    binder.feed(int(rec[0]), str(rec[10]))
        report = checker.finish((int(found[0]), str(found[1])) if found else None)
        for f in binder.finish() if binder is not None else ():
            checker.add(f.seq, f.kind, f.message)
        with conn.cursor() as cur:  # after the chain's problems: the tables' against it
            _check_triggers(cur, checker)
            _check_state(cur, checker)
        conn.rollback()
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot read the audit ledger: {exc}") from exc
    finally:
        conn.close()
    report.unsealed = int(unsealed)
    if unsealed and age is not None and float(age) > UNSEALED_GRACE_S:
        report.warnings.append(f"{unsealed} row(s) not sealed, the oldest (id {oldest}) for "
                               f"{float(age):.0f} s: is the sealer running?")
    return report


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def list_entries(dsn: str, table: str | None = None, since: dt.datetime | dt.date | None = None,
                 limit: int = 100) -> list[dict[str, Any]]:
    """Ledger entries, newest first (unsealed ones, then by seq): ``seq`` (None until
    sealed), ``id``, ``at`` (ISO), ``actor``, ``table``, ``op``, ``row_key``, ``before``,
    ``after``, ``row_hash``; only ``table``'s, only from ``since`` (a date: from its midnight
    UTC) on."""
    if limit < 1:
        raise ValueError(f"limit must be positive, not {limit}")
    where: list[str] = []
    params: list[Any] = []
    if table is not None:
        where.append("table_name = %s")
        params.append(table)
    if since is not None:
        if not isinstance(since, dt.datetime):
            since = dt.datetime.combine(since, dt.time(), dt.UTC)
        elif since.tzinfo is None:
            since = since.replace(tzinfo=dt.UTC)
        where.append("at >= %s")
        params.append(since)
    sql = ("SELECT seq, id, at, actor, table_name AS table, op, row_key, before, after, "
           f"row_hash FROM audit_ledger WHERE {' AND '.join(where) or 'true'} "
           "ORDER BY seq DESC NULLS FIRST, id DESC LIMIT %s")
    try:
        with db.transaction(dsn) as conn, conn.cursor(
                cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(sql, [*params, limit])
            rows = [dict(r) for r in cur.fetchall()]
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot list the audit ledger: {exc}") from exc
    for r in rows:
        r["at"] = _iso(r["at"])
    return rows


def history(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per entry, for a terminal: what changed, by whom, when (values unescaped:
    the caller makes them printable)."""
    out = []
    for e in entries:
        seq = "-" if e["seq"] is None else str(e["seq"])
        what = f"{e['op']} {e['table']} {e['row_key']}"
        if e["op"] == "UPDATE":
            cols = changed_columns(e["before"], e["after"])
            what += ": " + "; ".join(
                f"{c} {_short(e['before'].get(c))} → {_short(e['after'].get(c))}" for c in cols)
        out.append(f"{seq:>6} {str(e['at'])[:19]} {e['actor'] or '-'}: {what}")
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:59] + "…"
