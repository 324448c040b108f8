"""Security commitments and confidentiality agreements (Art. 24, 25), a grant's effective end,
its use header and its provision date (Art. 31): the pure rules, no database."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib

import pytest

from govbus.core import commitments as c
from govbus.core.catalogue import load_catalogue
from govbus.core.commitments import Commitment, CommitmentError
from govbus.core.errors import GovbusError
from govbus.core.routing import RoutePlan, grants_in_force
from govbus.core.sharing import Grant, provide_deadline
from govbus.core.sharing_store import provision
from govbus.core.workdays import add_working_days

NOW = dt.datetime(2026, 6, 10, 9, 0, tzinfo=dt.UTC)  # a Wednesday
POP = "public_security.population_register"


def signed(**over: object) -> Commitment:
    base = Commitment("SC-2026-017", "security", "tax", (POP, "hrss.*"), "tax checks",
                      dt.date(2026, 6, 1), NOW + dt.timedelta(days=30), "ab" * 32)
    return dataclasses.replace(base, **over)  # type: ignore[arg-type]


def test_a_valid_commitment_of_the_requester_covering_the_resource_passes() -> None:
    found = signed()
    assert c.check_reference(found, found.number, c.SECURITY, "tax", POP, NOW) is found
    # agency.* covers every resource of that provider
    assert c.check_reference(found, found.number, c.SECURITY, "tax",
                             "hrss.social_insurance_enrolment", NOW) is found


@pytest.mark.parametrize("found,kind,requester,resource,at,rule", [
    (None, c.SECURITY, "tax", POP, NOW, "commitment.unknown"),
    (signed(kind="confidentiality"), c.SECURITY, "tax", POP, NOW, "commitment.wrong_kind"),
    (signed(), c.SECURITY, "hrss", POP, NOW, "commitment.not_yours"),
    (signed(), c.SECURITY, "tax", POP, NOW + dt.timedelta(days=30), "commitment.expired"),
    (signed(withdrawn_at=NOW - dt.timedelta(seconds=1)), c.SECURITY, "tax", POP, NOW,
     "commitment.withdrawn"),
    (signed(signed_on=dt.date(2026, 6, 11)), c.SECURITY, "tax", POP, NOW,
     "commitment.not_yet_signed"),
    (signed(), c.SECURITY, "tax", "tax.tax_registration", NOW, "commitment.out_of_scope"),
    (None, c.CONFIDENTIALITY, "tax", POP, NOW, "confidentiality.unknown"),
    (signed(kind="confidentiality", agency="hrss"), c.CONFIDENTIALITY, "tax", POP, NOW,
     "confidentiality.not_yours"),
    (signed(kind="confidentiality", resources=("hrss.*",)), c.CONFIDENTIALITY, "tax", POP,
     NOW, "confidentiality.out_of_scope"),
])
def test_each_refusal_names_its_rule_and_article(found: Commitment | None, kind: str,
                                                 requester: str, resource: str,
                                                 at: dt.datetime, rule: str) -> None:
    with pytest.raises(CommitmentError) as caught:
        c.check_reference(found, "SC-2026-017", kind, requester, resource, at)
    assert caught.value.rule == rule
    assert caught.value.article == ("Art. 24" if kind == c.SECURITY else "Art. 25")
    assert caught.value.article in str(caught.value)


def test_state_and_end_of_force() -> None:
    until = NOW + dt.timedelta(days=30)
    assert signed().state(NOW) == "in_force" and signed().ends_at == until
    early = signed(withdrawn_at=NOW + dt.timedelta(days=1))
    assert early.ends_at == NOW + dt.timedelta(days=1)
    assert early.state(NOW) == "in_force" and early.state(early.ends_at) == "withdrawn"
    assert signed(withdrawn_at=until + dt.timedelta(days=1)).ends_at == until


def test_a_past_valid_until_is_refused() -> None:
    with pytest.raises(GovbusError) as caught:
        c.check_valid_until(NOW - dt.timedelta(seconds=1), NOW)
    assert caught.value.rule == "request.valid_until_past"
    c.check_valid_until(None, NOW)
    c.check_valid_until(NOW + dt.timedelta(seconds=1), NOW)


def test_registration_rules() -> None:
    cat = load_catalogue()
    ok = c.check_new("SC-1", "security", "tax", [POP, POP, "hrss.*"], "checks",
                     NOW.date(), NOW + dt.timedelta(days=1), NOW, cat.resources)
    assert ok == (POP, "hrss.*")
    assert c.check_new("渝水信〔2026〕17号", "security", "tax", [POP], "checks", NOW.date(),
                       NOW + dt.timedelta(days=1), NOW) == (POP,)  # numbers as issued
    for args, rule in (
            (("SC 1", "security", "tax", [POP]), "commitment.number"),
            (("SC;1", "security", "tax", [POP]), "commitment.number"),
            (("SC/1", "security", "tax", [POP]), "commitment.number"),
            (("SC-1", "secret", "tax", [POP]), "commitment.kind"),
            (("SC-1", "security", "tax", []), "commitment.scope"),
            (("SC-1", "security", "tax", ["population_register"]), "commitment.scope"),
            (("SC-1", "security", "tax", ["public_security.nothing"]), "commitment.scope"),
            (("SC-1", "security", "tax", ["tax.tax_registration"]), "commitment.scope")):
        with pytest.raises(CommitmentError) as caught:
            c.check_new(*args, "checks", NOW.date(),  # type: ignore[misc]
                        NOW + dt.timedelta(days=1), NOW, cat.resources)
        assert caught.value.rule == rule, args
    for until, signed_on in ((NOW - dt.timedelta(seconds=1), NOW.date()),
                             (NOW + dt.timedelta(days=1), NOW.date() + dt.timedelta(days=2))):
        with pytest.raises(CommitmentError, match="valid until"):
            c.check_new("SC-1", "security", "tax", [POP], "checks", signed_on, until, NOW)
    with pytest.raises(CommitmentError, match="purpose"):
        c.check_new("SC-1", "security", "tax", [POP], " ", NOW.date(), NOW, NOW)


def test_the_document_or_its_hash() -> None:
    doc = b"%PDF signed"
    assert c.document_digest(None, doc) == hashlib.sha256(doc).hexdigest()
    assert c.document_digest("AB" * 32, None) == "ab" * 32
    assert c.decode_document("JVBERiBzaWduZWQ=") == doc
    for sha, document in ((None, None), ("ab" * 32, doc), ("xyz", None), (None, b"")):
        with pytest.raises(CommitmentError) as caught:
            c.document_digest(sha, document)
        assert caught.value.rule == "commitment.document"
    with pytest.raises(CommitmentError):
        c.decode_document("not base64!")


def test_valid_until_as_a_day_or_an_instant() -> None:
    assert c.parse_until("2026-12-31") == dt.datetime(2026, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
    assert c.parse_until("2026-12-31T08:00:00Z") == dt.datetime(2026, 12, 31, 8,
                                                                tzinfo=dt.UTC)
    with pytest.raises(CommitmentError):
        c.parse_until("next year")


def grant(**over: object) -> Grant:
    base = Grant(7, "tax", POP, ("resident_id", "name"), (), NOW - dt.timedelta(days=1),
                 None, None, "SC-2026-017", None)
    return dataclasses.replace(base, **over)  # type: ignore[arg-type]


def test_a_grant_ends_at_the_earliest_of_its_own_end_and_its_commitments() -> None:
    soon, later = NOW + dt.timedelta(seconds=5), NOW + dt.timedelta(days=9)
    lapsing = grant(valid_until=later, lapses_at=soon)
    assert lapsing.ends_at == soon
    assert lapsing.in_force(NOW) and not lapsing.in_force(soon)
    assert lapsing.state(soon) == "lapsed"
    own = grant(valid_until=soon, lapses_at=later)
    assert own.ends_at == soon and own.state(soon) == "expired"
    assert grant().ends_at is None and grant().in_force(NOW + dt.timedelta(days=3650))
    assert grant(revoked_at=NOW).state(NOW) == "revoked"


def test_routing_follows_the_effective_end() -> None:
    """What the hot path and the ACL plan read: a grant whose commitment ended is not in
    force, so nothing is routed under it (Art. 24)."""
    res = load_catalogue().resources[POP]
    lapsed = grant(lapses_at=NOW)
    assert grants_in_force([lapsed], res, NOW) == []
    assert grants_in_force([grant()], res, NOW) == [grant()]
    assert RoutePlan(res, [lapsed], NOW).projections == []


def test_the_use_header_is_built_once_per_grant_and_travels_in_deliveries() -> None:
    g = grant(confidentiality="CA-3")
    assert g.use == b"1;duties,no-third-party,no-commercial;sc=SC-2026-017;ca=CA-3"
    assert c.parse_use_header(g.use) == {
        "version": "1", "restrictions": ["duties", "no-third-party", "no-commercial"],
        "commitment": "SC-2026-017", "confidentiality": "CA-3"}
    # a grant resting on no registered commitment still carries Art. 24's restrictions
    assert grant(commitment=None).use == b"1;duties,no-third-party,no-commercial"
    res = load_catalogue().resources[POP]
    event = {"event_id": "e1", "op": "c", "key": "k", "after": {"resident_id": "k", "name": "n"},
             "before": None, "source": {"agency": "public_security"}, "occurred_ms": 1,
             "ts_ms": 2}
    delivery = RoutePlan(res, [g], NOW).route(event).deliveries[0]
    assert delivery.use is g.use  # the same bytes object: nothing built per record


def test_the_provision_date_and_whether_it_was_met() -> None:
    at_once, consent = provide_deadline(NOW, True), provide_deadline(NOW, False)
    assert at_once == add_working_days(NOW, 1) and consent == add_working_days(NOW, 20)
    g = grant(provide_by=at_once)
    assert provision(g, None, NOW) == "due"
    assert provision(g, None, at_once + dt.timedelta(seconds=1)) == "overdue"
    assert provision(g, NOW, at_once + dt.timedelta(days=5)) == "met"
    assert provision(g, at_once + dt.timedelta(hours=1), at_once + dt.timedelta(days=5)) \
        == "late"
    assert provision(grant(provide_by=at_once, revoked_at=NOW), None,
                     at_once + dt.timedelta(days=1)) == "ended"
    assert provision(grant(provide_by=at_once, lapses_at=NOW), None,
                     at_once + dt.timedelta(days=1)) == "ended"
    assert provision(grant(), None, NOW) is None


def test_provision_days_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOVBUS_PROVIDE_DEADLINE_DAYS", "3")
    monkeypatch.setenv("GOVBUS_COMPLETION_DEADLINE_DAYS", "15")
    assert provide_deadline(NOW, True) == add_working_days(NOW, 3)
    assert provide_deadline(NOW, False) == add_working_days(NOW, 15)
