"""Who is told what, for each control event: the notices rules. Pure: no I/O.

Invariants:

- **One notice per cause and recipient.** A notice's id is the SHA-256 of its control event's
  id and its recipient (:func:`notice_id`); the inbox keeps one row per id and
  ``notices.<agency>`` is keyed by it, so a replayed event or a timer that fires twice tells
  nobody twice.
- **What the control plane already wrote is adopted, not repeated.** The sharing store writes
  a notice in the transaction of a request filed with a provider, a decision on a request and
  a revoked grant (Art. 18); the rule of such a cause names that row (its kind and the id in
  its body), and the duties app gives it the notice's id instead of writing a second one.
- **What is overdue is escalated** to the information center and the municipal office
  (Art. 31), besides the agency that owes the answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from govbus.stream_apps.duties.events import ControlEvent

FORMAT = "govbus-notice/1"
CENTER, OFFICE = "information_center", "municipal_office"  # Art. 5-6: the two overseers
ESCALATED_TO = (CENTER, OFFICE)  # Art. 31: delays are faults the overseers act on


def notice_id(event_id: str, agency: str) -> str:
    """The id of the notice telling ``agency`` of control event ``event_id``."""
    return hashlib.sha256(f"{event_id}\n{agency}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Notice:
    """One notice to one agency, of one control event."""

    agency: str
    event: ControlEvent
    article: str
    text: str
    escalated: bool = False
    #: the control plane's own row telling the same: its kind, the body key and the id
    adopts: tuple[str, str, str] | None = None

    @property
    def notice_id(self) -> str:
        return notice_id(self.event.event_id, self.agency)

    def record(self, inbox_id: int | None = None) -> dict[str, Any]:
        """The notice as ``notices.<agency>`` carries it and the inbox keeps it (its body)."""
        return {"format": FORMAT, "notice_id": self.notice_id, "inbox_id": inbox_id,
                "agency": self.agency, "kind": self.event.kind,
                "event_id": self.event.event_id, "subject": self.event.subject,
                "article": self.article, "text": self.text, "escalated": self.escalated,
                "at": self.event.at.isoformat(), "deadline": self.event.deadline,
                "data": dict(self.event.data)}

    def to_bytes(self, inbox_id: int | None = None) -> bytes:
        return orjson.dumps(self.record(inbox_id), default=str)


def provider_of(resource_id: Any) -> str:
    """The provider of ``agency.resource``: the catalogue keeps each resource in its
    provider's folder (``govbus catalogue check``)."""
    return str(resource_id or "").split(".", 1)[0]


Roles = Callable[[Mapping[str, Any]], list[str]]


def _fields(*names: str) -> Roles:
    return lambda d: [str(d[n]) for n in names if d.get(n)]


def _provider(d: Mapping[str, Any]) -> list[str]:
    return [provider_of(d.get("resource_id"))] if d.get("resource_id") else []


def _both(a: Roles, b: Roles) -> Roles:
    return lambda d: a(d) + b(d)


@dataclass(frozen=True)
class Rule:
    """Who a kind of control event tells, under which article, in what words; ``adopts``:
    the kind of the row the control plane writes for the first recipient, and the body key
    naming the subject's id in it."""

    article: str
    told: Roles
    text: Callable[[ControlEvent], str]
    escalate: bool = False
    adopts: tuple[str, str] | None = None


def _id(e: ControlEvent) -> str:
    return e.subject.split(":", 1)[-1]


def _rules() -> dict[str, Rule]:
    d = lambda e, k: e.data.get(k)  # noqa: E731
    requester = _fields("requester")
    return {
        "request.filed": Rule("Art. 18", _provider, lambda e: (
            f"request {_id(e)} by {d(e, 'requester')} for {d(e, 'resource_id')} waits for "
            f"your decision by {d(e, 'due_at')}"), adopts=("request_pending", "request_id")),
        "request.granted_at_once": Rule("Art. 18", _provider, lambda e: (
            f"{d(e, 'resource_id')} is provided to {d(e, 'requester')} at once (request "
            f"{_id(e)}, unconditional)"), adopts=("request_granted", "request_id")),
        "request.refused_at_once": Rule("Art. 18", _provider, lambda e: (
            f"request {_id(e)} by {d(e, 'requester')} for {d(e, 'resource_id')} was "
            f"answered at once: {d(e, 'status')} ({d(e, 'reason')})"),
            adopts=("request_{status}", "request_id")),
        "request.decided": Rule("Art. 18", requester, lambda e: (
            f"your request {_id(e)} for {d(e, 'resource_id')} was {d(e, 'status')} by "
            f"{d(e, 'decided_by')}: {d(e, 'reason') or 'no reason given'}"),
            adopts=("request_{status}", "request_id")),
        "request.due_soon": Rule("Art. 18", _provider, lambda e: (
            f"request {_id(e)} by {d(e, 'requester')} must be answered by {e.deadline}")),
        "request.overdue": Rule("Art. 18, 31", _provider, lambda e: (
            f"request {_id(e)} by {d(e, 'requester')} for {d(e, 'resource_id')} is "
            f"unanswered past its deadline {e.deadline}"), escalate=True),
        "grant.revoked": Rule("Art. 24", _fields("recipient"), lambda e: (
            f"grant {_id(e)} on {d(e, 'resource_id')} was revoked by {d(e, 'revoked_by')}: "
            f"{d(e, 'revoke_reason')}"), adopts=("grant_revoked", "grant_id")),
        "grant.expired": Rule("Art. 24", _both(_fields("recipient"), _provider), lambda e: (
            f"grant {_id(e)} on {d(e, 'resource_id')} to {d(e, 'recipient')} expired at "
            f"{e.deadline}")),
        "commitment.expiring": Rule("Art. 24, 25", _fields("agency"), lambda e: (
            f"{d(e, 'kind')} commitment {_id(e)} expires on {e.deadline}: the grants resting "
            "on it lapse then")),
        "commitment.withdrawn": Rule("Art. 24, 25", _fields("agency"), lambda e: (
            f"{d(e, 'kind')} commitment {_id(e)} was withdrawn by {d(e, 'withdrawn_by')}: "
            f"{d(e, 'withdraw_reason')}; the grants resting on it have lapsed")),
        "case.opened": Rule("Art. 20", _fields("owner_agency", "other_agency"), lambda e: (
            f"case {_id(e)}: {d(e, 'attribute')} of {d(e, 'entity_key')} differs; the "
            f"source of record {d(e, 'owner_agency')} verifies it by {d(e, 'deadline')}")),
        "case.resolved": Rule("Art. 20", _fields("owner_agency", "other_agency"), lambda e: (
            f"case {_id(e)} ({d(e, 'attribute')}) is {d(e, 'status')}: "
            f"{d(e, 'resolution')}")),
        "case.due_soon": Rule("Art. 20", _fields("owner_agency"), lambda e: (
            f"case {_id(e)} ({d(e, 'attribute')}) must be verified by {e.deadline}")),
        "case.overdue": Rule("Art. 20, 31", _fields("owner_agency"), lambda e: (
            f"case {_id(e)} ({d(e, 'attribute')}) owned by {d(e, 'owner_agency')} is open "
            f"past its deadline {e.deadline}"), escalate=True),
        "objection.filed": Rule("Art. 19", _fields("against_agency", "handler"), lambda e: (
            f"objection {_id(e)} by {d(e, 'filed_by')} against {d(e, 'against_agency')}: "
            f"answer by {d(e, 'deadline')}")),
        "objection.answered": Rule("Art. 19", _fields("filed_by", "handler"), lambda e: (
            f"objection {_id(e)} was {d(e, 'status')} by {d(e, 'answered_by')}")),
        "objection.due_soon": Rule("Art. 19", _fields("against_agency"), lambda e: (
            f"objection {_id(e)} by {d(e, 'filed_by')} must be answered by {e.deadline}")),
        "objection.overdue": Rule("Art. 19, 31", _fields("against_agency"), lambda e: (
            f"objection {_id(e)} against {d(e, 'against_agency')} is unanswered past "
            f"{e.deadline}"), escalate=True),
        "complaint.filed": Rule("Art. 29", _fields("against_agency", "handler"), lambda e: (
            f"complaint {_id(e)} by {d(e, 'filed_by')} against {d(e, 'against_agency')}: "
            f"answer by {d(e, 'deadline')}")),
        "complaint.answered": Rule("Art. 29", _fields("filed_by", "against_agency"),
                                   lambda e: f"complaint {_id(e)} was {d(e, 'status')} by "
                                             f"{d(e, 'answered_by')}"),
        "complaint.due_soon": Rule("Art. 29", _fields("handler"), lambda e: (
            f"complaint {_id(e)} against {d(e, 'against_agency')} must be answered by "
            f"{e.deadline}")),
        "complaint.overdue": Rule("Art. 29, 31", _fields("handler", "against_agency"),
                                  lambda e: f"complaint {_id(e)} against "
                                            f"{d(e, 'against_agency')} is unanswered past "
                                            f"{e.deadline}", escalate=True),
        "proposal.filed": Rule("Art. 13", lambda _d: [CENTER], lambda e: (
            f"{d(e, 'agency')} proposes a {d(e, 'kind')} entry {d(e, 'resource_id')} "
            f"(proposal {_id(e)}): the information center confirms it")),
        "proposal.decided": Rule("Art. 13", _fields("agency"), lambda e: (
            f"proposal {_id(e)} for {d(e, 'resource_id')} was {d(e, 'status')} by "
            f"{d(e, 'decided_by')}" + (f": {d(e, 'reason')}" if d(e, 'reason') else ""))),
        "review.due": Rule("Art. 13", _provider, lambda e: (
            f"{d(e, 'resource_id')} was last reviewed {d(e, 'last_reviewed')}: its yearly "
            f"review was due {e.deadline}")),
        "resource.stale": Rule("Art. 14, 31", _provider, lambda e: (
            f"{d(e, 'resource_id')} has not changed within its update period since "
            f"{e.deadline}"), escalate=True),
        "reports.drafted": Rule("Art. 26, 28", lambda _d: [CENTER], lambda e: (
            f"the annual report and the evaluation of {d(e, 'year')} are drafted")),
    }


RULES = _rules()


def notices_for(event: ControlEvent) -> list[Notice]:
    """The notices ``event`` gives, one per recipient, in a stable order; none for a kind no
    rule knows (a newer relay's: it is skipped, not failed)."""
    rule = RULES.get(event.kind)
    if rule is None:
        return []
    told = [a for a in dict.fromkeys(rule.told(event.data)) if a]
    extra = [a for a in ESCALATED_TO if rule.escalate and a not in told]
    text = rule.text(event)
    out = []
    for i, agency in enumerate(told + extra):
        adopts = None
        if rule.adopts and i == 0:
            kind, key = rule.adopts
            adopts = (kind.format(**event.data), key, _id(event))
        out.append(Notice(agency, event, rule.article, text, escalated=agency in extra,
                          adopts=adopts))
    return out
