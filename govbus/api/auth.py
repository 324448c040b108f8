"""Who calls (Art. 24): the agency's bearer token, checked against ``agency_credentials``;
then, route by route, whether the caller may act as the agency it names.

Roles: an agency of the catalogue, the information center (operates the bus, decides what the
rules decide, approves catalogue changes), the municipal office (answers complaints, receives
the filings and reports, Art. 26, 29). Mutual TLS, where configured, admits a connection
before HTTP; the token still says which agency calls.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, Request

from govbus.api.errors import ApiError
from govbus.core.access import INFORMATION_CENTER
from govbus.core.errors import ForbiddenError
from govbus.core.objections import OFFICE

AGENCY, CENTER, MUNICIPAL_OFFICE = "agency", "information_center", "municipal_office"


@dataclass(frozen=True)
class Caller:
    """The authenticated caller: its name and its role."""

    agency: str
    role: str

    @property
    def is_center(self) -> bool:
        return self.role == CENTER

    @property
    def oversees(self) -> bool:
        """The information center and the municipal office read across agencies."""
        return self.role in (CENTER, MUNICIPAL_OFFICE)

    def acts_as(self, agency: str | None) -> str:
        """``agency`` if the caller is it (None: the caller); 403 otherwise (Art. 24)."""
        if agency is None or agency == self.agency:
            return self.agency
        raise ForbiddenError(f"the caller is {self.agency}; it cannot act as {agency} "
                             "(Art. 24: one agency never acts as another)",
                             rule="access.other_agency")

    def reads_for(self, agency: str | None) -> str | None:
        """Whose rows a listing shows: the caller's own; the information center and the
        office may name any agency, or none for all."""
        if self.oversees:
            return agency
        return self.acts_as(agency)


def role_of(agency: str) -> str:
    return {INFORMATION_CENTER: CENTER, OFFICE: MUNICIPAL_OFFICE}.get(agency, AGENCY)


def caller(request: Request) -> Caller:
    """The dependency every route but the health check takes."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if header and scheme.lower() != "bearer":
        raise ApiError(401, "access.no_token", f"Authorization scheme {scheme!r} is not "
                       "accepted: send `Authorization: Bearer <token>` (Art. 24)", "Art. 24")
    state = request.app.state
    agency = state.verified.agency(state.settings.database_url, token.strip() or None)
    return Caller(agency, role_of(agency))


def center(who: Caller = Depends(caller)) -> Caller:
    """The dependency of the information center's routes."""
    if not who.is_center:
        raise ForbiddenError(f"only the {INFORMATION_CENTER} may do this, not {who.agency} "
                             "(Art. 24)", rule="access.center_only")
    return who
