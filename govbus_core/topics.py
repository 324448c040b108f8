"""The bus's topic names, their patterns and their kinds: defined here and nowhere else.

The names are a public contract (DESIGN.md, "Topics"): agencies produce to
``ingest.<agency>.<resource>`` and consume ``deliver.<recipient>.<resource>``; ACL plans, the
subscriber, the hot path and the runtime build every name through these functions, so that
a topic the hot path writes is the topic the ACL plan grants and the subscriber reads.

A resource is named ``<agency>.<resource>`` (``tax.tax_registration``); its topics carry the
agency and the resource's short name.
"""

from __future__ import annotations

import re

INGEST_PREFIX = "ingest."
VALIDATED_PREFIX = "validated."
DLQ_PREFIX = "dlq."
DELIVER_PREFIX = "deliver."
NOTICES_PREFIX = "notices."
BUS_PREFIX = "govbus."  # the bus's own topics
RECONCILE_PREFIX = "reconcile."

RECONCILE_VALUES = "reconcile.values"  # the reconciler's input, keyed by entity
RECONCILE_CASES = "reconcile.cases"  # case snapshots, compacted (Art. 19-20)
CONTROL = "govbus.control"  # control-plane events, compacted
CHECKPOINTS = "govbus.log.checkpoints"  # signed checkpoints of the delivery log

#: what the hot path consumes: every ingest topic, new ones picked up by metadata refresh
INGEST_PATTERN = r"^ingest\..*"
VALIDATED_PATTERN = r"^validated\..*"
DLQ_PATTERN = r"^dlq\..*"
DELIVER_PATTERN = r"^deliver\..*"

#: the kinds of topic (DESIGN.md's topic table), by name pattern, first match wins. By prefix,
#: whatever follows it: a DLQ named after a malformed ingest topic still gets the DLQ's
#: short retention
KINDS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern)) for kind, pattern in (
        ("ingest", r"ingest\..+"),
        ("validated", r"validated\..+"),
        ("deliver", r"deliver\..+"),
        ("dlq", r"dlq\..+"),
        ("notices", r"notices\..+"),
        ("reconcile_values", re.escape(RECONCILE_VALUES)),
        ("reconcile_cases", re.escape(RECONCILE_CASES)),
        ("checkpoints", re.escape(CHECKPOINTS)),
        ("control", re.escape(CONTROL)),
    ))


def short_name(resource_id: str) -> str:
    """``tax.tax_registration`` (or ``tax_registration``) → ``tax_registration``."""
    return resource_id.split(".", 1)[-1]


def ingest(agency: str, resource: str) -> str:
    """Where ``agency`` publishes the change events of ``resource`` (its short name)."""
    return f"{INGEST_PREFIX}{agency}.{resource}"


def validated(resource_id: str) -> str:
    """The accepted events of ``resource_id`` (``agency.resource``), unchanged."""
    return f"{VALIDATED_PREFIX}{resource_id}"


def dlq(agency: str) -> str:
    """The rejected events of ``agency``, with their reasons."""
    return f"{DLQ_PREFIX}{agency}"


def deliver(recipient: str, resource_id: str) -> str:
    """What ``recipient`` receives of ``resource_id`` (``agency.resource`` or its short name),
    projected for its grant."""
    return f"{DELIVER_PREFIX}{recipient}.{short_name(resource_id)}"


def deliver_prefix(recipient: str) -> str:
    """The prefix of every deliver topic of ``recipient``."""
    return f"{DELIVER_PREFIX}{recipient}."


def notices(agency: str) -> str:
    """What the duties app tells ``agency``, keyed by notice id (docs/operations.md)."""
    return f"{NOTICES_PREFIX}{agency}"


def kind(name: str) -> str:
    """The kind of a topic by its name (:data:`KINDS`); ``other`` for a name outside the
    topic table (a test's or an operator's tap)."""
    for found, pattern in KINDS:
        if pattern.fullmatch(name):
            return found
    return "other"
