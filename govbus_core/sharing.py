"""Sharing requests and grants (Art. 15, 18, 24, 25, 31): decisions as pure functions, and
the store that files every response with the municipal office.

- unconditional: granted at once, the provider is notified (Art. 18);
- on application: pending until the provider approves or rejects, with a reason, within a
  deadline counted in working days on the official calendar (Art. 31: delay is a fault);
- not shared: refused, quoting the catalogue's legal basis (Art. 4, 15).
A request must name a registered security commitment of the requester, in force, whose scope
covers the resource (Art. 24; :mod:`govbus.core.commitments`); sensitive fields are delivered
in clear only with a registered confidentiality agreement, and masked otherwise (Art. 25). A
grant lapses with the commitment or agreement it rests on, and carries the date by which its
data must be provided (Art. 31).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from govbus.core.catalogue import Resource
from govbus.core.commitments import RESTRICTIONS, lapses_at, use_header
from govbus.core.errors import ConflictError, ForbiddenError, GovbusError, NotFoundError
from govbus.core.settings_spec import Deadlines
from govbus.core.workdays import add_working_days

PLATFORM = "information_center"  # the operator decides what the rules decide (Art. 18)


class SharingError(GovbusError):
    """A request, decision or revocation that the rules do not allow; says which rule."""

    article = "Art. 18"


class SharingNotFound(SharingError, NotFoundError):
    """The request or grant named does not exist."""


class SharingForbidden(SharingError, ForbiddenError):
    """The agency may not decide or revoke what it names (Art. 18, 24)."""


class SharingConflict(SharingError, ConflictError):
    """The request is already decided, or the grant already revoked."""


@dataclass(frozen=True)
class RequestDecision:
    status: str                    # granted | pending | refused
    fields: tuple[str, ...]
    masked_fields: tuple[str, ...]
    reason: str


def deadline_days() -> int:
    """``GOVBUS_REQUEST_DEADLINE_DAYS``: working days the provider has to decide (Art. 18)."""
    return Deadlines.from_env().request_deadline_days


def due_at(requested: dt.datetime) -> dt.datetime:
    return add_working_days(requested, deadline_days())


def decide_request(resource: Resource, requester: str, fields: list[str] | None,
                   commitment_ref: str | None, confidentiality_ref: str | None
                   ) -> RequestDecision:
    """What the rules say about a request, before any provider looks at it."""
    if requester == resource.provider:
        raise SharingError(f"{requester} is the provider of {resource.id}; it needs no grant")
    if not (commitment_ref or "").strip():
        raise SharingError("a request needs the reference of the requester's signed security "
                           "commitment (--commitment, Art. 24)")
    names = [f.name for f in resource.fields]
    wanted = list(dict.fromkeys(fields or names))
    unknown = [f for f in wanted if f not in names]
    if unknown:
        raise SharingError(f"{', '.join(unknown)}: not field(s) of {resource.id}; "
                           f"fields are {', '.join(names)}")
    key = resource.key_field
    if key and key not in wanted:
        wanted.insert(0, key)  # a record without its identifier is useless (Art. 12)
    sensitive = [f.name for f in resource.fields if f.sensitive and f.name in wanted]
    masked = () if (confidentiality_ref or "").strip() else tuple(sensitive)
    note = (f"; sensitive field(s) {', '.join(masked)} masked: no confidentiality agreement "
            "(Art. 25)") if masked else ""
    if resource.share_class == "not_shared":
        return RequestDecision("refused", tuple(wanted), masked,
                               f"{resource.id} is not shared: {resource.legal_basis} (Art. 15)")
    if resource.share_class == "unconditional":
        return RequestDecision("granted", tuple(wanted), masked,
                               f"unconditional sharing, granted at once (Art. 18){note}")
    return RequestDecision("pending", tuple(wanted), masked,
                           f"on application: awaiting the provider's decision (Art. 18){note}")


@dataclass(frozen=True)
class Grant:
    """A grant as routing, the online query and the ACL plan see it.

    Its effective end (:attr:`ends_at`) is the earliest of its own ``valid_until`` and the end
    of the commitment and agreement it rests on (``lapses_at``: their ``valid_until`` or
    withdrawal, Art. 24, 25), computed where grants are loaded, so every reader agrees.
    ``use`` is its deliveries' ``govbus-use`` header, built once per load (Art. 24)."""

    grant_id: int
    recipient: str
    resource_id: str
    fields: tuple[str, ...]
    masked_fields: tuple[str, ...]
    valid_from: dt.datetime
    valid_until: dt.datetime | None
    revoked_at: dt.datetime | None
    commitment: str | None = None
    confidentiality: str | None = None
    restrictions: tuple[str, ...] = RESTRICTIONS
    provide_by: dt.datetime | None = None
    lapses_at: dt.datetime | None = None
    #: how its deliveries are written: framed Avro, or ``json`` (govbus.core.deliveries)
    delivery_format: str = "avro"
    ends_at: dt.datetime | None = field(init=False, compare=False, repr=False)
    use: bytes = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ends_at", lapses_at((self.valid_until, self.lapses_at)))
        object.__setattr__(self, "use", use_header(self.restrictions, self.commitment,
                                                   self.confidentiality))

    def in_force(self, at: dt.datetime) -> bool:
        return (self.revoked_at is None or at < self.revoked_at) and self.valid_from <= at and \
            (self.ends_at is None or at < self.ends_at)

    def state(self, at: dt.datetime) -> str:
        """``in_force``, ``revoked``, ``lapsed`` (its commitment or agreement ended first) or
        ``expired``."""
        if self.in_force(at):
            return "in_force"
        if self.revoked_at is not None and self.revoked_at <= at:
            return "revoked"
        if self.lapses_at is not None and self.lapses_at <= at and (
                self.valid_until is None or self.lapses_at < self.valid_until):
            return "lapsed"
        return "expired"

    def as_dict(self) -> dict[str, Any]:
        def iso(t: dt.datetime | None) -> str | None:
            return t.isoformat() if t else None

        return {"grant_id": self.grant_id, "recipient": self.recipient,
                "resource": self.resource_id, "fields": list(self.fields),
                "masked_fields": list(self.masked_fields),
                "valid_from": self.valid_from.isoformat(),
                "valid_until": iso(self.valid_until), "revoked_at": iso(self.revoked_at),
                "commitment": self.commitment, "confidentiality": self.confidentiality,
                "restrictions": list(self.restrictions), "ends_at": iso(self.ends_at),
                "provide_by": iso(self.provide_by), "delivery_format": self.delivery_format}


def provide_deadline(granted_at: dt.datetime, at_once: bool) -> dt.datetime:
    """The date by which a grant's data must be provided (the 2025 regulation; Art. 18, 31):
    ``GOVBUS_PROVIDE_DEADLINE_DAYS`` working days when granted at once (unconditional),
    ``GOVBUS_COMPLETION_DEADLINE_DAYS`` after the provider's consent."""
    limits = Deadlines.from_env()
    days = limits.provide_deadline_days if at_once else limits.completion_deadline_days
    return add_working_days(granted_at, days)
