"""Security commitments (Art. 24) and confidentiality agreements (Art. 25) as registered
documents, and the rules a sharing request is checked against: pure functions.

A commitment is registered by its agency (or the information center for it) with its number,
kind, scope (the resources, as ``agency.resource`` ids or ``agency.*``, and the purpose), the
day it was signed, the instant it ends and the SHA-256 of the signed document. It is in force
from its signing day until ``valid_until`` or its withdrawal, whichever comes first.

- A request names a security commitment of its own agency, in force, whose scope covers the
  resource (Art. 24); otherwise it is refused with one of the rules ``commitment.unknown``,
  ``commitment.wrong_kind``, ``commitment.not_yours``, ``commitment.not_yet_signed``,
  ``commitment.expired``, ``commitment.withdrawn``, ``commitment.out_of_scope``.
- A confidentiality agreement, when named, passes the same checks (``confidentiality.*``,
  Art. 25); without one the sensitive fields stay masked.
- Every commitment carries the use restrictions of Art. 24 (:data:`RESTRICTIONS`): use for the
  agency's own duties only, no passing to third parties, no commercial use. A grant keeps them
  and each delivery carries them in one header (:func:`use_header`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from govbus.core.errors import GovbusError, NotFoundError

SECURITY, CONFIDENTIALITY = "security", "confidentiality"
KINDS = (SECURITY, CONFIDENTIALITY)
ARTICLE = {SECURITY: "Art. 24", CONFIDENTIALITY: "Art. 25"}
#: the rule prefix of a refusal, per kind
PREFIX = {SECURITY: "commitment", CONFIDENTIALITY: "confidentiality"}

#: Art. 24: the use restrictions every commitment carries (codes of the govbus-use header)
DUTIES, NO_THIRD_PARTY, NO_COMMERCIAL = "duties", "no-third-party", "no-commercial"
RESTRICTIONS = (DUTIES, NO_THIRD_PARTY, NO_COMMERCIAL)
USE_HEADER = "govbus-use"
USE_VERSION = "1"

#: a document number as issued (e.g. SC-2026-017, 渝水信〔2026〕17号): 1 to 64 characters, no
#: space or control character, none of ; = , (the govbus-use header) nor / ? # % \ (a URL path)
NUMBER = re.compile(r"^[^\s;=,/?#%\\\x00-\x1f\x7f]{1,64}$")
_RESOURCE = re.compile(r"^[a-z0-9_]{1,64}\.([a-z0-9_]{1,128}|\*)$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class CommitmentError(GovbusError):
    """A commitment, or a request's reference to one, that the rules refuse."""

    article = "Art. 24"


class CommitmentNotFound(CommitmentError, NotFoundError):
    """No commitment of that number is registered."""


@dataclass(frozen=True)
class Commitment:
    """A registered commitment or agreement, as the rules see it."""

    number: str
    kind: str
    agency: str
    resources: tuple[str, ...]
    purpose: str
    signed_on: dt.date
    valid_until: dt.datetime
    document_sha256: str
    restrictions: tuple[str, ...] = RESTRICTIONS
    withdrawn_at: dt.datetime | None = None

    @property
    def ends_at(self) -> dt.datetime:
        """The end of its force: ``valid_until`` or its withdrawal, whichever is first."""
        if self.withdrawn_at is not None and self.withdrawn_at < self.valid_until:
            return self.withdrawn_at
        return self.valid_until

    def covers(self, resource_id: str) -> bool:
        """Its scope names ``resource_id``, or its provider's every resource (``agency.*``)."""
        provider = resource_id.partition(".")[0]
        return resource_id in self.resources or f"{provider}.*" in self.resources

    def state(self, at: dt.datetime) -> str:
        """``in_force``, ``not_yet_signed``, ``withdrawn`` or ``expired`` at ``at``."""
        if self.withdrawn_at is not None and self.withdrawn_at <= at:
            return "withdrawn"
        if at >= self.valid_until:
            return "expired"
        if at.astimezone(dt.UTC).date() < self.signed_on:
            return "not_yet_signed"
        return "in_force"


def check_reference(found: Commitment | None, number: str, kind: str, requester: str,
                    resource_id: str, at: dt.datetime) -> Commitment:
    """``found`` (the commitment registered as ``number``, or None) if a request of
    ``requester`` for ``resource_id`` at ``at`` may rest on it as its ``kind``; else
    CommitmentError with the rule and article that refuse."""
    prefix, article = PREFIX[kind], ARTICLE[kind]
    what = "security commitment" if kind == SECURITY else "confidentiality agreement"

    def refuse(rule: str, message: str) -> CommitmentError:
        return CommitmentError(f"{message} ({article})", rule=f"{prefix}.{rule}",
                               article=article)

    if found is None:
        raise refuse("unknown", f"no {what} {number!r} is registered: register the signed "
                     "document first (`govbus commitments register`, POST /v1/commitments)")
    if found.kind != kind:
        raise refuse("wrong_kind", f"{number} is a {found.kind} document, not a {what}")
    if found.agency != requester:
        raise refuse("not_yours", f"{number} is {found.agency}'s {what}; {requester} applies "
                     "only under its own")
    state = found.state(at)
    if state == "withdrawn":
        raise refuse("withdrawn", f"{what} {number} was withdrawn at "
                     f"{_stamp(found.withdrawn_at)}")
    if state == "expired":
        raise refuse("expired", f"{what} {number} ended at {_stamp(found.valid_until)}")
    if state == "not_yet_signed":
        raise refuse("not_yet_signed", f"{what} {number} is signed on {found.signed_on}, "
                     "after today")
    if not found.covers(resource_id):
        raise refuse("out_of_scope", f"{what} {number} covers {', '.join(found.resources)}, "
                     f"not {resource_id}")
    return found


def _stamp(at: dt.datetime | None) -> str:
    return at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if at else "?"


def check_valid_until(valid_until: dt.datetime | None, at: dt.datetime) -> None:
    """A grant cannot be asked to end before it starts."""
    if valid_until is not None and valid_until <= at:
        raise GovbusError(f"valid_until {_stamp(valid_until)} is already past: a grant "
                          "cannot end before it begins", rule="request.valid_until_past",
                          article="Art. 18")


def lapses_at(ends: Iterable[dt.datetime | None]) -> dt.datetime | None:
    """The earliest of the ends given (None: no end)."""
    found = [e for e in ends if e is not None]
    return min(found) if found else None


def use_header(restrictions: Sequence[str] | None, commitment: str | None,
               confidentiality: str | None) -> bytes:
    """The ``govbus-use`` header of a grant's deliveries: ``1;<restrictions>[;sc=N][;ca=N]``,
    e.g. ``1;duties,no-third-party,no-commercial;sc=SC-2026-017;ca=CA-3`` (Art. 24, 25).
    A grant made without a registered commitment still carries the restrictions of Art. 24."""
    parts = [USE_VERSION, ",".join(restrictions or RESTRICTIONS)]
    if commitment:
        parts.append(f"sc={commitment}")
    if confidentiality:
        parts.append(f"ca={confidentiality}")
    return ";".join(parts).encode()


def parse_use_header(value: bytes | str | None) -> dict[str, Any]:
    """The fields of a ``govbus-use`` header (for subscribers and tests)."""
    text = value.decode() if isinstance(value, bytes) else (value or "")
    version, _, rest = text.partition(";")
    items = rest.split(";") if rest else []
    out: dict[str, Any] = {"version": version,
                           "restrictions": items[0].split(",") if items else [],
                           "commitment": None, "confidentiality": None}
    for item in items[1:]:
        key, _, val = item.partition("=")
        if key == "sc":
            out["commitment"] = val
        elif key == "ca":
            out["confidentiality"] = val
    return out


# --- registration -------------------------------------------------------------------------

def document_digest(sha256: str | None, document: bytes | None) -> str:
    """The hex SHA-256 of the signed document: given, or computed from its bytes; exactly
    one of them."""
    if (sha256 is None) == (document is None):
        raise CommitmentError("give the signed document or its SHA-256, exactly one of them "
                              "(--document FILE | --sha256 HEX)", rule="commitment.document")
    if document is not None:
        if not document:
            raise CommitmentError("the signed document is empty", rule="commitment.document")
        return hashlib.sha256(document).hexdigest()
    digest = (sha256 or "").strip().lower()
    if not _SHA256.match(digest):
        raise CommitmentError(f"{sha256!r} is not a SHA-256 in hex (64 hex digits)",
                              rule="commitment.document")
    return digest


def decode_document(text: str) -> bytes:
    """A document sent as base64."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CommitmentError(f"the document is not base64: {exc}",
                              rule="commitment.document") from exc


def check_new(number: str, kind: str, agency: str, resources: Sequence[str], purpose: str,
              signed_on: dt.date, valid_until: dt.datetime, at: dt.datetime,
              known: Iterable[str] | None = None) -> tuple[str, ...]:
    """What registration requires; returns the resources, de-duplicated in order. ``known``:
    the catalogue's resource ids (an ``agency.*`` entry needs only a known agency)."""
    if not NUMBER.match(number or ""):
        raise CommitmentError(f"number {number!r}: the document's number as issued, 1 to 64 "
                              "characters, no space, none of ; = , / ? # % \\",
                              rule="commitment.number")
    if kind not in KINDS:
        raise CommitmentError(f"kind {kind!r}: one of {', '.join(KINDS)}",
                              rule="commitment.kind")
    if not purpose.strip():
        raise CommitmentError("a commitment states the purpose, the duties the data serves "
                              "(Art. 24)", rule="commitment.purpose")
    wanted = tuple(dict.fromkeys(r.strip() for r in resources if r.strip()))
    if not wanted:
        raise CommitmentError("a commitment names the resources it covers (agency.resource)",
                              rule="commitment.scope")
    bad = [r for r in wanted if not _RESOURCE.match(r)]
    if bad:
        raise CommitmentError(f"{', '.join(bad)}: name resources as agency.resource (or "
                              "agency.*)", rule="commitment.scope")
    if known is not None:
        ids = set(known)
        providers = {r.partition(".")[0] for r in ids}
        unknown = [r for r in wanted if (r not in ids if not r.endswith(".*")
                                         else r.partition(".")[0] not in providers)]
        if unknown:
            raise CommitmentError(f"{', '.join(unknown)}: not in the catalogue",
                                  rule="commitment.scope")
        own = [r for r in wanted if r.partition(".")[0] == agency]
        if own:
            raise CommitmentError(f"{', '.join(own)}: {agency}'s own; it needs no commitment "
                                  "for them", rule="commitment.scope")
    if valid_until.tzinfo is None:
        raise CommitmentError("valid_until needs a time zone", rule="commitment.valid_until")
    if valid_until.astimezone(dt.UTC).date() < signed_on:
        raise CommitmentError(f"valid until {_stamp(valid_until)}, before it was signed on "
                              f"{signed_on}", rule="commitment.valid_until")
    if valid_until <= at:
        raise CommitmentError(f"valid until {_stamp(valid_until)}: already past",
                              rule="commitment.valid_until")
    return wanted


def parse_until(text: str) -> dt.datetime:
    """``valid_until`` as given: a day (its last second, UTC) or an ISO 8601 instant (UTC if
    it names no zone)."""
    text = text.strip()
    try:
        if len(text) == 10:
            return dt.datetime.combine(dt.date.fromisoformat(text), dt.time(23, 59, 59),
                                       tzinfo=dt.UTC)
        at = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise CommitmentError(f"valid until {text!r}: a day (YYYY-MM-DD) or an ISO 8601 "
                              "instant", rule="commitment.valid_until") from exc
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


def parse_day(text: str, what: str = "signed on") -> dt.date:
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError as exc:
        raise CommitmentError(f"{what} {text!r}: a day (YYYY-MM-DD)",
                              rule="commitment.signed_on") from exc
