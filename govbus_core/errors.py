"""One root error class; each layer has its own subclasses."""

from __future__ import annotations

from dataclasses import dataclass


class GovbusError(Exception):
    """Root of every error govbus raises on purpose. ``rule`` (a stable dotted name) and
    ``article`` (of the measures) say which rule refused, for the HTTP service's errors."""

    rule = "govbus.refused"
    article = ""

    def __init__(self, message: str = "", *, rule: str | None = None,
                 article: str | None = None) -> None:
        super().__init__(message)
        if rule:
            self.rule = rule
        if article:
            self.article = article


class NotFoundError(GovbusError):
    """What a command names (a request, a grant, a case, a resource) does not exist."""

    rule = "request.not_found"


class ForbiddenError(GovbusError):
    """The caller is who it says, but may not act on what it names: another agency's request,
    case or delivery (Art. 24)."""

    rule = "access.not_yours"
    article = "Art. 24"


class ConflictError(GovbusError):
    """The state of what a command names forbids it: a request already decided, a grant
    already revoked, a case already resolved."""

    rule = "state.conflict"


class ConfigError(GovbusError):
    """A setting is missing, malformed or unknown."""


class DatabaseError(GovbusError):
    """PostgreSQL could not be reached or refused a statement."""


class BrokerError(GovbusError):
    """The Kafka-protocol broker could not be reached or refused a request."""


class RegistryError(GovbusError):
    """A schema id or resource is not registered, or a version cannot be registered."""


@dataclass(frozen=True)
class Violation:
    """Why one event or record breaks its data contract: machine-readable.

    ``rule`` is a stable dotted name (``identifier.check_digit``), ``field`` the record field
    or envelope part, ``article`` the article of the measures the rule comes from.
    """

    rule: str
    field: str
    article: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "field": self.field, "article": self.article,
                "message": self.message}

    def __str__(self) -> str:
        return f"{self.rule} [{self.article}] {self.field}: {self.message}"


class ContractError(GovbusError):
    """A record or event breaks its data contract; carries every violation found."""

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = violations
        super().__init__("; ".join(str(v) for v in violations))


class SerdeError(GovbusError):
    """A payload cannot be framed or decoded; carries the violation for the DLQ."""

    def __init__(self, violation: Violation) -> None:
        self.violation = violation
        super().__init__(str(violation))
