"""Batch signatures: every record of a batch verifies from its own headers; any change to
what was signed, or a key of the wrong agency, revoked or unknown, is refused with its rule."""

from __future__ import annotations

import os
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from govbus.core import signatures as sig
from govbus.core.errors import ConfigError

TOPIC = "ingest.public_security.population_register"


def records(n: int) -> list[sig.Record]:
    return [(TOPIC, f"k{i}".encode(), f"value {i}".encode(), f"id-{i}".encode())
            for i in range(n)]


def signed(n: int, key=None, purpose=sig.EVENTS):
    signer = sig.Signer(key or sig.generate(), purpose)
    recs = records(n)
    return signer, recs, [h + [("event_id", r[3])] for h, r in
                          zip(signer.sign(recs), recs, strict=True)]


def verifier(signer: sig.Signer, agency: str = "public_security", revoked: bool = False,
             purpose=sig.EVENTS) -> sig.Verifier:
    return sig.Verifier([sig.PublicKey(signer.key_id, agency, signer.private.public_key(),
                                       revoked)], purpose)


@given(st.integers(1, 300))
def test_every_leaf_path_leads_to_the_root(n: int) -> None:
    leaves = [bytes([i % 256]) * 32 for i in range(n)]
    root, paths = sig.tree(leaves)
    assert all(sig.root_of(leaf, i, n, p) == root
               for i, (leaf, p) in enumerate(zip(leaves, paths, strict=True)))


def test_the_root_is_rfc_9162s_merkle_tree_hash() -> None:
    import hashlib

    def mth(d: list[bytes]) -> bytes:  # RFC 9162 2.1.1, split at the largest power of two < n
        if len(d) == 1:
            return d[0]
        k = 1
        while k * 2 < len(d):
            k *= 2
        return hashlib.sha256(b"\x01" + mth(d[:k]) + mth(d[k:])).digest()

    for n in (1, 2, 3, 5, 7, 8, 13, 128):
        leaves = [hashlib.sha256(bytes([i])).digest() for i in range(n)]
        assert sig.tree(leaves)[0] == mth(leaves)


def test_a_path_for_another_position_or_size_does_not_fit() -> None:
    leaves = [bytes([i]) * 32 for i in range(5)]
    root, paths = sig.tree(leaves)
    assert sig.root_of(leaves[1], 2, 5, paths[1]) != root
    assert sig.root_of(leaves[1], 1, 5, paths[1] + [b"x" * 32]) is None
    assert sig.root_of(leaves[1], 1, 5, paths[1][:-1]) is None
    assert sig.root_of(leaves[1], 5, 5, paths[1]) is None


def test_a_batch_verifies_with_one_ed25519_verification() -> None:
    signer, recs, headers = signed(300)
    v = verifier(signer)
    assert [v.check(t, k, val, h, "public_security") for (t, k, val, _), h in
            zip(recs, headers, strict=True)] == [None] * 300
    assert v.verifications == 3  # 300 records: batches of 128, 128, 44


@pytest.mark.parametrize("change", ["topic", "key", "value", "event_id"])
def test_any_change_after_signing_is_a_bad_signature(change: str) -> None:
    signer, recs, headers = signed(4)
    topic, key, value, _ = recs[2]
    h = headers[2]
    if change == "topic":
        topic = "ingest.public_security.other"
    elif change == "key":
        key = b"someone else"
    elif change == "value":
        value = value + b"!"
    else:
        h = [x for x in h if x[0] != "event_id"] + [("event_id", b"id-other")]
    v = verifier(signer)
    assert v.check(*recs[1][:3], headers[1], "public_security") is None  # the root is cached
    problem = v.check(topic, key, value, h, "public_security")
    assert problem is not None and problem.rule == "auth.bad_signature"


def test_unsigned_unknown_wrong_agency_revoked() -> None:
    signer, recs, headers = signed(2)
    t, k, val, _ = recs[0]
    assert verifier(signer).check(t, k, val, [("event_id", b"id-0")]).rule == "auth.unsigned"
    other = sig.Signer(sig.generate())
    assert verifier(other).check(t, k, val, headers[0]).rule == "auth.unknown_key"
    problem = verifier(signer, agency="tax").check(t, k, val, headers[0], "public_security")
    assert problem.rule == "auth.wrong_agency" and "tax's" in problem.message
    assert verifier(signer, revoked=True).check(t, k, val, headers[0]).rule == "auth.revoked_key"


def test_an_events_signature_is_no_delivery_signature() -> None:
    signer, recs, headers = signed(3)
    v = verifier(signer, purpose=sig.DELIVERIES)
    assert v.check(*recs[0][:3], headers[0]).rule == "auth.bad_signature"


def test_malformed_headers_are_refused_not_raised() -> None:
    signer, recs, headers = signed(2)
    t, k, val, _ = recs[0]
    good = dict(headers[0])["govbus-sig"]
    for bad in ([("govbus-sig", b"")], [("govbus-sig", good[:70])],
                [("govbus-sig", b"\x02" + good[1:])], [("govbus-sig", good + b"x")],
                [("govbus-sig", good[:-32])]):
        problem = verifier(signer).check(t, k, val, bad)
        assert problem is not None and problem.rule.startswith("auth.")


def test_keys_are_written_mode_600_never_overwritten_and_read_back(tmp_path) -> None:
    key = sig.generate()
    sig.write_pair(key, tmp_path / "a.key", tmp_path / "a.pub")
    assert stat.S_IMODE(os.stat(tmp_path / "a.key").st_mode) == 0o600
    assert sig.key_id(sig.load_private(tmp_path / "a.key").public_key()) == \
        sig.key_id(key.public_key())
    with pytest.raises(ConfigError, match="never overwritten"):
        sig.write_pair(key, tmp_path / "a.key", tmp_path / "b.pub")
    os.chmod(tmp_path / "a.key", 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        sig.load_private(tmp_path / "a.key")
    two = (tmp_path / "a.pub").read_bytes() + sig.public_pem(sig.generate().public_key())
    assert len(sig.load_publics(two)) == 2
    with pytest.raises(ConfigError, match="no PEM public key"):
        sig.load_publics(b"nothing here")
