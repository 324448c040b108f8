"""Sharing requests and grants (Art. 15, 18, 24, 25, 31): decisions as pure functions, and
the store that files every response with the municipal office.

- unconditional: granted at once, the provider is notified (Art. 18);
- on application: pending until the provider approves or rejects, with a reason, within a
  deadline counted in working days on the official calendar (Art. 31: delay is a fault);
- not shared: refused, quoting the catalogue's legal basis (Art. 4, 15).
A request must cite the requester's signed security commitment (Art. 24); sensitive fields
are delivered in clear only with a confidentiality agreement, and masked otherwise (Art. 25).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from govbus.core.catalogue import Resource
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
    """A grant as routing sees it."""

    grant_id: int
    recipient: str
    resource_id: str
    fields: tuple[str, ...]
    masked_fields: tuple[str, ...]
    valid_from: dt.datetime
    valid_until: dt.datetime | None
    revoked_at: dt.datetime | None

    def in_force(self, at: dt.datetime) -> bool:
        return (self.revoked_at is None or at < self.revoked_at) and self.valid_from <= at and \
            (self.valid_until is None or at < self.valid_until)

    def as_dict(self) -> dict[str, Any]:
        return {"grant_id": self.grant_id, "recipient": self.recipient,
                "resource": self.resource_id, "fields": list(self.fields),
                "masked_fields": list(self.masked_fields),
                "valid_from": self.valid_from.isoformat(),
                "valid_until": self.valid_until.isoformat() if self.valid_until else None,
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None}
