"""The demo's reconciliation part (Art. 8, 19, 20): cases opened by conflicting values, none
for formatting-only differences, and one closed by a correction.

The sample (:mod:`govbus.sample`) plants conflicts — tax still holding a previous legal
representative, social insurance an old residence address — and formatting-only differences
(tax's copy of a registered address with extra spaces). The demo's own address updates in the
population register make more social-insurance copies outdated. Expectations are computed from
the records the gate accepted (``entity_state``), so records refused or rejected on purpose do
not count.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import psycopg2.extras

from govbus import runtime, sample
from govbus.core import cases_store, db
from govbus.core.config import Settings
from govbus.producers.publisher import Change, Publisher
from govbus.stream_apps.reconcile_rules import normalise

LER, TAX = "market_regulation.legal_entity_register", "tax.tax_registration"
REP = "company.legal_representative"


def _accepted(dsn: str, resource: str, keys: list[str]) -> dict[str, dict[str, Any]]:
    """The latest accepted record of each key (the router's entity_state)."""
    with db.transaction(dsn) as conn, conn.cursor(
            cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("SELECT entity_key, record FROM entity_state WHERE resource_id = %s "
                    "AND entity_key = ANY(%s)", (resource, keys))
        return {r["entity_key"]: r["record"] for r in cur.fetchall()}


def planted(dsn: str, data: sample.Sample) -> tuple[set[str], set[str]]:
    """(companies whose legal representative differs, companies whose registered address
    differs only in formatting), among records accepted by the gate."""
    codes = [c["uscc"] for c in data.rows[LER]]
    source, tax = _accepted(dsn, LER, codes), _accepted(dsn, TAX, codes)
    conflict, formatting = set(), set()
    for code in set(source) & set(tax):
        s, t = source[code], tax[code]
        if normalise(s["legal_representative"], REP) != normalise(t["legal_representative"],
                                                                  REP):
            conflict.add(f"company:{code}")
        addr = "company.registered_address"
        if (s["registered_address"] != t["registered_address"] and
                normalise(s["registered_address"], addr) == normalise(t["registered_address"],
                                                                      addr)):
            formatting.add(f"company:{code}")
    return conflict, formatting


def _cases(dsn: str, entities: set[str]) -> list[dict[str, Any]]:
    return [c for c in cases_store.list_cases(dsn) if c["entity_key"] in entities]


def wait_for(cond: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.5)
    return False


def run(settings: Settings, data: sample.Sample, timeout: float, say: runtime.Say) -> bool:
    """Wait for the cases, correct one conflict, print the summary; True when consistent."""
    dsn = settings.database_url
    conflict, formatting = planted(dsn, data)
    entities = ({f"company:{c['uscc']}" for c in data.rows[LER]} |
                {f"person:{p['resident_id']}" for p in data.rows["public_security."
                                                                 "population_register"]})

    def rep_cases() -> set[str]:
        return {c["entity_key"] for c in _cases(dsn, conflict) if c["attribute"] == REP}

    wait_for(lambda: rep_cases() >= conflict, timeout)
    cases = _cases(dsn, entities)
    by_attr = Counter((c["attribute"], c["owner_agency"]) for c in cases)
    say("")
    say(f"cases opened: {len(cases)}, each owned by the attribute's source of record (Art. 8)")
    for (attr, owner), n in sorted(by_attr.items()):
        say(f"  {attr:<32} owner {owner:<18} {n:>4}")
    rep_found = rep_cases()
    fmt_cases = [c for c in cases if c["entity_key"] in formatting
                 and c["attribute"] == "company.registered_address"]
    say(f"legal representatives planted as different: {len(conflict)}, with a case: "
        f"{len(rep_found & conflict)}")
    say(f"addresses differing only in formatting: {len(formatting)}, with a case: "
        f"{len(fmt_cases)}")
    ok = rep_found == conflict and not fmt_cases and bool(conflict)
    ok = correct_one(settings, data, conflict, timeout, say) and ok
    return ok


def correct_one(settings: Settings, data: sample.Sample, conflict: set[str], timeout: float,
                say: runtime.Say) -> bool:
    """Tax corrects one legal representative; the reconciler closes that case by itself."""
    still_open = sorted(c["entity_key"] for c in _cases(settings.database_url, conflict)
                        if c["attribute"] == REP and c["status"] == "open")
    if not still_open:  # a rerun on the same database: every case was corrected before
        say("correction: no open legal-representative case left to correct")
        return bool(conflict)
    entity = still_open[0]
    code = entity.split(":", 1)[1]
    company = next(c for c in data.rows[LER] if c["uscc"] == code)
    held = _accepted(settings.database_url, TAX, [code])[code]
    fixed = dict(held, legal_representative=company["legal_representative"])
    pub = Publisher(settings)
    try:
        pub.publish("tax", "tax_registration", [Change("u", fixed, before=held)])
    finally:
        pub.close()

    def closed() -> list[dict[str, Any]]:
        return [c for c in _cases(settings.database_url, {entity})
                if c["attribute"] == REP and c["status"] == "closed"]

    done = wait_for(closed, timeout)
    rows = closed()
    if done:
        c = rows[0]
        say(f"correction: tax set {code}'s legal representative to "
            f"{company['legal_representative']!r}; case {c['id']} closed by itself "
            f"({c['resolution']})")
    else:
        say(f"INCONSISTENT: the correction of {entity} did not close its case")
    open_now = sum(c["status"] == "open" for c in _cases(settings.database_url, conflict))
    say(f"open legal-representative cases after the correction: {open_now}; "
        "`govbus cases list` shows them, `govbus cases resolve` closes them")
    return done
