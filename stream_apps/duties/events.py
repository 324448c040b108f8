"""Control events: what happened in the control plane, as the duties app reads it from
``govbus.control``. Pure: no I/O.

A control event names one fact once. Its id is ``<kind>:<subject>`` for a fact that happens
once to its subject (a request is filed once, decided once; a case opened once, resolved
once), and ``<kind>:<subject>:<deadline>`` for a fact of time (a deadline that passes, a
review that falls due): the same fact always gets the same id, so a relay that publishes it
again after a crash, or a timer that fires twice, publishes the same record under the same key
of the compacted topic, and every notice derived from it keeps its id too.

:func:`from_change` turns one audited row change (the audit ledger's table, operation, before
and after images) into the control events it means; a change that means nothing to anyone
(a catalogue sync, a key registered) gives none.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

FORMAT = "govbus-control/1"


@dataclass(frozen=True)
class ControlEvent:
    """One fact of the control plane: ``kind`` (``request.filed``, ``case.overdue``, …),
    ``subject`` (``request:42``), when it happened (UTC), and the fields its notices need."""

    kind: str
    subject: str
    at: dt.datetime
    data: Mapping[str, Any] = field(default_factory=dict)
    deadline: str | None = None  # for a fact of time: the deadline or day it is about

    @property
    def event_id(self) -> str:
        """The id of this fact, the same whoever derives it (the key on ``govbus.control``)."""
        base = f"{self.kind}:{self.subject}"
        return f"{base}:{self.deadline}" if self.deadline else base

    def to_bytes(self) -> bytes:
        return orjson.dumps({"format": FORMAT, "event_id": self.event_id, "kind": self.kind,
                             "subject": self.subject, "at": self.at.isoformat(),
                             "deadline": self.deadline, "data": dict(self.data)},
                            default=str)

    @classmethod
    def from_bytes(cls, raw: bytes) -> ControlEvent:
        """The event a record's value holds; ValueError if it is none."""
        try:
            doc = orjson.loads(raw)
            event = cls(str(doc["kind"]), str(doc["subject"]),
                        dt.datetime.fromisoformat(doc["at"]), dict(doc.get("data") or {}),
                        doc.get("deadline"))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a control event: {exc}") from exc
        if doc.get("event_id") not in (None, event.event_id):
            raise ValueError(f"event id {doc.get('event_id')!r} does not name its fact")
        return event


@dataclass(frozen=True)
class Change:
    """One row change of an audited table, as the audit ledger records it."""

    seq: int
    at: dt.datetime
    table: str
    op: str  # INSERT | UPDATE | DELETE
    key: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None


def _pick(row: Mapping[str, Any], *names: str) -> dict[str, Any]:
    return {n: row.get(n) for n in names}


_REQUEST = ("request_id", "requester", "resource_id", "purpose", "share_class", "status",
            "due_at", "reason", "decided_by")
# how a request was filed (Art. 18): on application it waits for its provider; unconditional
# and on the platform it is granted at once and the provider told; else answered at once
_FILED = {"pending": "request.filed", "granted": "request.granted_at_once",
          "rejected": "request.refused_at_once", "refused": "request.refused_at_once"}


def _requests(c: Change) -> list[ControlEvent]:
    after, before = c.after or {}, c.before or {}
    subject = f"request:{c.key}"
    if c.op == "INSERT" and after.get("status") in _FILED:
        return [ControlEvent(_FILED[after["status"]], subject, c.at, _pick(after, *_REQUEST))]
    if (c.op == "UPDATE" and before.get("status") == "pending"
            and after.get("status") in ("granted", "rejected")):
        return [ControlEvent("request.decided", subject, c.at, _pick(after, *_REQUEST))]
    return []


def _grants(c: Change) -> list[ControlEvent]:
    after, before = c.after or {}, c.before or {}
    if c.op == "UPDATE" and before.get("revoked_at") is None and after.get("revoked_at"):
        return [ControlEvent("grant.revoked", f"grant:{c.key}", c.at, _pick(
            after, "grant_id", "request_id", "recipient", "resource_id", "revoked_by",
            "revoke_reason"))]
    return []


_CASE = ("id", "case_key", "entity_key", "attribute", "owner_agency", "other_agency",
         "status", "deadline", "resolution", "resolved_by")


def _cases(c: Change) -> list[ControlEvent]:
    after, before = c.after or {}, c.before or {}
    subject = f"case:{c.key}"
    if c.op == "INSERT" and after.get("status") == "open":
        return [ControlEvent("case.opened", subject, c.at, _pick(after, *_CASE))]
    if (c.op == "UPDATE" and before.get("status") == "open"
            and after.get("status") in ("closed", "resolved")):
        return [ControlEvent("case.resolved", subject, c.at, _pick(after, *_CASE))]
    return []


_OBJECTION = ("id", "kind", "filed_by", "against_agency", "resource", "handler", "status",
              "deadline", "answered_by")


def _objections(c: Change) -> list[ControlEvent]:
    after, before = c.after or {}, c.before or {}
    kind = after.get("kind") if after.get("kind") in ("objection", "complaint") else "objection"
    subject = f"{kind}:{c.key}"
    if c.op == "INSERT" and after.get("status") == "open":
        return [ControlEvent(f"{kind}.filed", subject, c.at, _pick(after, *_OBJECTION))]
    if (c.op == "UPDATE" and before.get("status") == "open"
            and after.get("status") in ("answered", "withdrawn")):
        return [ControlEvent(f"{kind}.answered", subject, c.at, _pick(after, *_OBJECTION))]
    return []


_PROPOSAL = ("proposal_id", "resource_id", "agency", "kind", "status", "decided_by", "reason",
             "version")


def _proposals(c: Change) -> list[ControlEvent]:
    after, before = c.after or {}, c.before or {}
    subject = f"proposal:{c.key}"
    if c.op == "INSERT" and after.get("status") == "pending":
        return [ControlEvent("proposal.filed", subject, c.at, _pick(after, *_PROPOSAL))]
    if (c.op == "UPDATE" and before.get("status") == "pending"
            and after.get("status") in ("approved", "rejected")):
        return [ControlEvent("proposal.decided", subject, c.at, _pick(after, *_PROPOSAL))]
    return []


def _commitments(c: Change) -> list[ControlEvent]:
    after, before = c.after or {}, c.before or {}
    if c.op == "UPDATE" and before.get("withdrawn_at") is None and after.get("withdrawn_at"):
        return [ControlEvent("commitment.withdrawn", f"commitment:{c.key}", c.at, _pick(
            after, "number", "kind", "agency", "withdrawn_by", "withdraw_reason"))]
    return []


#: the audited tables whose changes tell someone something, and how
_BY_TABLE: dict[str, Callable[[Change], list[ControlEvent]]] = {
    "sharing_requests": _requests,   # Art. 18
    "grants": _grants,               # Art. 24
    "cases": _cases,                 # Art. 20
    "objections": _objections,       # Art. 19, 29
    "catalogue_proposals": _proposals,  # Art. 13
    "commitments": _commitments,     # Art. 24, 25
}
BASELINE_ACTOR = "migration 0012"  # rows that predate the ledger: history, not news


def from_change(change: Change, actor: str | None = None) -> list[ControlEvent]:
    """The control events one audited row change means (none for most)."""
    if actor == BASELINE_ACTOR:
        return []
    decide = _BY_TABLE.get(change.table)
    return decide(change) if decide else []
