"""Evolution never drops a granted field silently (Art. 13, 24).

A grant lists the fields of a resource its recipient receives. A catalogue change that
removes, renames or retypes one of them would let the recipient silently stop receiving it,
or receive it in a form it did not agree to, whatever the compatibility level says (a field
removed while the new schema carries a default is compatible, yet no longer delivered). So:

- :func:`field_changes` finds the top-level fields of the registered contract that the
  proposed one removes (no field of that name or alias), renames (a field that names it as
  an alias) or retypes (another Avro type; docs, defaults and ``govbus`` markers aside).
- :func:`granted_field_findings`: each such field that a grant in force lists is an error
  naming the grants (ids and recipients), unless the proposal amends them (its
  ``amends_grants``), when it is a warning; a grant the proposal names but the change does not
  touch is a warning too.
- :func:`level_change`: a proposal is checked at the level its own contract states, so a
  change of the level is a warning the information center sees before approving.
- :func:`amendments`: what an approval does to each amended grant: a removed or renamed
  field is dropped from the grant's fields and masked fields (a renamed field's new name is not
  granted: widening a grant is a request of its own, Art. 24); a retyped field stays granted,
  its recipient told of the new type.

Pure functions, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from govbus.core.catalogue import META
from govbus.core.catalogue_check import ERROR, WARNING, Finding
from govbus.core.compat import LEVEL_ATTRIBUTE, InvalidLevel, level_of
from govbus.core.sharing import Grant

REMOVED, RENAMED, RETYPED = "removed", "renamed", "retyped"
RULE = "schema.granted_field"
ARTICLE = "Art. 24"  # a grant states what its recipient receives
_NOT_TYPE = frozenset({"doc", "default", "order", "aliases", META})  # not part of a field's type


@dataclass(frozen=True)
class FieldChange:
    """A registered field that a proposed contract removes, renames or retypes."""

    name: str
    kind: str  # REMOVED | RENAMED | RETYPED
    detail: str  # e.g. "renamed to tax_no", "retyped from string to long"


@dataclass(frozen=True)
class Amendment:
    """An amended grant as an approval leaves it."""

    grant_id: int
    recipient: str
    fields: tuple[str, ...]
    masked_fields: tuple[str, ...]
    dropped: tuple[str, ...]  # removed or renamed: no longer granted
    retyped: tuple[str, ...]  # still granted, in their new type


def _type(node: Any) -> Any:
    """A field's Avro type without what does not change the data (docs, defaults, markers)."""
    if isinstance(node, list):
        return [_type(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _type(v) for k, v in node.items() if k not in _NOT_TYPE}
    if "fields" in out and isinstance(out["fields"], list):
        out["fields"] = [{k: _type(v) for k, v in f.items() if k not in _NOT_TYPE}
                         for f in out["fields"] if isinstance(f, dict)]
    return out["type"] if set(out) == {"type"} else out


def _label(node: Any) -> str:
    text = json.dumps(_type(node), ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _fields(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in schema.get("fields") or [] if isinstance(f, dict) and "name" in f]


def field_changes(registered: dict[str, Any], proposed: dict[str, Any]) -> list[FieldChange]:
    """The top-level fields of ``registered`` that ``proposed`` removes, renames or retypes,
    in ``registered``'s order."""
    by_name = {str(f["name"]): f for f in _fields(proposed)}
    by_alias = {str(a): f for f in _fields(proposed) for a in f.get("aliases") or []}
    out = []
    for old in _fields(registered):
        name = str(old["name"])
        new = by_name.get(name)
        if new is None and name in by_alias:
            out.append(FieldChange(name, RENAMED, f"renamed to {by_alias[name]['name']}"))
        elif new is None:
            out.append(FieldChange(name, REMOVED, "removed"))
        elif _type(old.get("type")) != _type(new.get("type")):
            out.append(FieldChange(name, RETYPED, f"retyped from {_label(old.get('type'))} "
                                                  f"to {_label(new.get('type'))}"))
    return out


def _names(grants: Sequence[Grant]) -> str:
    return ", ".join(f"grant {g.grant_id} ({g.recipient})" for g in grants)


def granted_field_findings(resource_id: str, changes: Sequence[FieldChange],
                           grants: Sequence[Grant], amends: Collection[int]) -> list[Finding]:
    """For each changed field that grants in force (``grants``) list: an error naming those
    the proposal does not amend, a warning naming those it does; and a warning for each
    grant in ``amends`` that the change does not touch."""
    out: list[Finding] = []
    touched: set[int] = set()
    for change in changes:
        holders = [g for g in grants if change.name in g.fields]
        touched |= {g.grant_id for g in holders}
        kept = [g for g in holders if g.grant_id not in amends]
        amended = [g for g in holders if g.grant_id in amends]
        what = f"{resource_id}.{change.name} is {change.detail}"
        if kept:
            ids = sorted({*amends, *(g.grant_id for g in kept)})
            out.append(Finding(ERROR, resource_id, change.name, RULE, ARTICLE,
                               f"{what}, but {_names(kept)} list{'s' if len(kept) == 1 else ''}"
                               f" it: the grantee would silently stop receiving it as granted."
                               f" Keep the field, or propose with amends_grants="
                               f"{','.join(map(str, ids))} to amend those grants on approval "
                               "(filed, Art. 18; each grantee is told)"))
        if amended:
            effect = ("stays granted in its new type" if change.kind == RETYPED
                      else "is dropped from them")
            out.append(Finding(WARNING, resource_id, change.name, RULE, ARTICLE,
                               f"{what}; {_names(amended)} are amended on approval: the field "
                               f"{effect}, the amendment filed (Art. 18), each grantee told"))
    for a in amendments(changes, grants, amends):
        if not a.fields:
            out.append(Finding(ERROR, resource_id, ", ".join(a.dropped), "schema.grant_emptied",
                               ARTICLE, f"amending grant {a.grant_id} ({a.recipient}) would "
                               "leave it no field: revoke it instead (Art. 24)"))
    for grant_id in sorted(set(amends) - touched):
        out.append(Finding(WARNING, resource_id, "-", "schema.amends_untouched", ARTICLE,
                           f"grant {grant_id} is not a grant in force of {resource_id} that "
                           "lists a field this change removes, renames or retypes: the "
                           "proposal leaves it as it is"))
    return out


def amendments(changes: Sequence[FieldChange], grants: Sequence[Grant],
               amends: Collection[int]) -> list[Amendment]:
    """The grants of ``amends`` that ``changes`` touch, as an approval leaves them."""
    dropped = {c.name for c in changes if c.kind != RETYPED}
    retyped = {c.name for c in changes if c.kind == RETYPED}
    out = []
    for g in grants:
        if g.grant_id not in amends or not (dropped | retyped) & set(g.fields):
            continue
        out.append(Amendment(g.grant_id, g.recipient,
                             tuple(f for f in g.fields if f not in dropped),
                             tuple(f for f in g.masked_fields if f not in dropped),
                             tuple(f for f in g.fields if f in dropped),
                             tuple(f for f in g.fields if f in retyped)))
    return out


def level_change(resource_id: str, registered: dict[str, Any] | None,
                 proposed: dict[str, Any] | None) -> list[Finding]:
    """A warning when the proposed catalogue entry changes the registered compatibility
    level (an unknown level is the checks' error, not repeated here)."""
    try:
        was, now = level_of(registered), level_of(proposed)
    except InvalidLevel:
        return []
    if was == now:
        return []
    return [Finding(WARNING, resource_id, f"{META}.{LEVEL_ATTRIBUTE}", "schema.level_changed",
                    "Art. 13", f"the compatibility level changes from {was} to {now}; this "
                    f"proposal is checked at {now}")]
