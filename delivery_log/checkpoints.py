"""Signed checkpoints of the delivery log and the audit ledger, as pure functions: no I/O.

A checkpoint states, at a time, the head (seq and row hash) of every chain the bus keeps — each
shard of the delivery log's (:data:`DELIVERIES` for the legacy shard ``""``,
``deliveries/<shard>`` for the others: :func:`log_chain`) and the audit ledger's — and one
root over them, linked to the checkpoint before it by that one's digest, and is signed with
the information center's Ed25519 key. Checkpoints are published where every agency reads
them (``govbus.log.checkpoints``), and each agency's subscriber keeps those it receives in its
own database. A chain is then bound to them: a row at or below a checkpointed seq that is
altered, deleted, inserted or rewritten — even consistently, hashes recomputed — no longer
reaches the checkpointed hash; a log cut back below a checkpoint lacks the seqs it covered
(Art. 24, 26, 31). Each shard of the delivery log is bound to its own heads.

The signed bytes are :data:`PURPOSE` and the checkpoint's canonical body (sorted-key compact
JSON, as the log's rows), so a checkpoint's signature is never a valid event or delivery
signature, nor the reverse.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature

from govbus.core.signatures import Ed25519PrivateKey, Ed25519PublicKey, key_id
from govbus.delivery_log.chain import GENESIS, MalformedEntry, canonical

PURPOSE = b"govbus checkpoint v1\x00"
DELIVERIES, AUDIT = "deliveries", "audit"  # the chains a checkpoint covers
#: the delivery log's chain of shard ``s`` is named ``deliveries/<s>``; the legacy shard's
#: (``""``, the rows logged before shards) is :data:`DELIVERIES`, as before shards existed
_SHARD_PREFIX = DELIVERIES + "/"


def log_chain(shard: str) -> str:
    """The name a checkpoint gives the delivery log's chain of ``shard``."""
    return _SHARD_PREFIX + shard if shard else DELIVERIES


def log_shard(chain: str) -> str | None:
    """The delivery-log shard a checkpoint's chain name is of; None for another chain."""
    if chain == DELIVERIES:
        return ""
    return chain[len(_SHARD_PREFIX):] if chain.startswith(_SHARD_PREFIX) else None


def log_rows(heads: Mapping[str, ChainHead]) -> int:
    """Rows the delivery log's shards hold up to ``heads`` (each shard numbers from 1)."""
    return sum(h.seq for n, h in heads.items() if log_shard(n) is not None)
#: who signs checkpoints: the information center, whose keys are registered under this name
SIGNER = "information_center"


@dataclass(frozen=True)
class ChainHead:
    seq: int
    row_hash: str


@dataclass(frozen=True)
class Checkpoint:
    """One signed checkpoint; ``body`` is exactly what was signed (after :data:`PURPOSE`)."""

    number: int
    at_us: int
    heads: Mapping[str, ChainHead]
    prev: str  # the digest of checkpoint ``number - 1``; GENESIS for the first
    key_id: str
    signature: bytes

    @property
    def body(self) -> bytes:
        return body(self.number, self.at_us, self.heads, self.prev)

    @property
    def digest(self) -> str:
        """What the next checkpoint links to: SHA-256 of the body and the signature."""
        return hashlib.sha256(self.body + self.signature).hexdigest()

    def as_dict(self) -> dict[str, Any]:
        return {"number": self.number, "at_us": self.at_us,
                "heads": {n: {"seq": h.seq, "row_hash": h.row_hash}
                          for n, h in sorted(self.heads.items())},
                "prev": self.prev, "root": root(self.heads), "key_id": self.key_id,
                "signature": base64.b64encode(self.signature).decode()}


def root(heads: Mapping[str, ChainHead]) -> str:
    """One hash over every chain's head, in name order."""
    return hashlib.sha256(canonical({n: [h.seq, h.row_hash] for n, h in heads.items()})
                          ).hexdigest()


def body(number: int, at_us: int, heads: Mapping[str, ChainHead], prev: str) -> bytes:
    return canonical({"number": number, "at_us": at_us, "prev": prev, "root": root(heads),
                      "heads": {n: {"seq": h.seq, "row_hash": h.row_hash}
                                for n, h in heads.items()}})


def make(number: int, at_us: int, heads: Mapping[str, ChainHead], prev: str,
         private: Ed25519PrivateKey) -> Checkpoint:
    """Checkpoint ``number`` of ``heads``, linked to ``prev`` and signed with ``private``."""
    frozen = dict(sorted(heads.items()))
    signature = private.sign(PURPOSE + body(number, at_us, frozen, prev))
    return Checkpoint(number, at_us, frozen, prev, key_id(private.public_key()), signature)


def from_dict(obj: Any) -> Checkpoint:
    """A checkpoint as :meth:`Checkpoint.as_dict` wrote it (a file, a topic, a table);
    :class:`MalformedEntry` naming what is wrong. Its signature is not checked here."""
    if type(obj) is not dict:
        raise MalformedEntry(f"a checkpoint is a JSON object, not {type(obj).__name__}")
    try:
        heads = {str(n): ChainHead(int(h["seq"]), str(h["row_hash"]))
                 for n, h in dict(obj["heads"]).items()}
        found = Checkpoint(int(obj["number"]), int(obj["at_us"]), heads, str(obj["prev"]),
                           str(obj["key_id"]), base64.b64decode(obj["signature"],
                                                                validate=True))
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedEntry(f"not a checkpoint: {type(exc).__name__} {exc}") from exc
    if obj.get("root") not in (None, root(heads)):
        raise MalformedEntry(f"checkpoint {found.number}: its root does not match its heads")
    return found


def parse(data: bytes | str) -> Checkpoint:
    try:
        return from_dict(orjson.loads(data))
    except orjson.JSONDecodeError as exc:
        raise MalformedEntry(f"a checkpoint is JSON: {exc}") from exc


def signature_problem(cp: Checkpoint, keys: Mapping[str, Ed25519PublicKey]) -> str | None:
    """None when ``cp`` is signed by one of ``keys`` (key id → public key); else why not."""
    key = keys.get(cp.key_id)
    if key is None:
        return (f"checkpoint {cp.number} is signed by key {cp.key_id}, which is not one of the "
                f"information center's keys given ({', '.join(sorted(keys)) or 'none'})")
    try:
        key.verify(cp.signature, PURPOSE + cp.body)
    except InvalidSignature:
        return f"checkpoint {cp.number}: the signature does not match its body (altered)"
    return None


@dataclass(frozen=True)
class Finding:
    """What checking a chain or a series of checkpoints found: its kind and where."""

    number: int | None  # the checkpoint concerned
    seq: int | None
    kind: str  # bad_signature | broken_series | rewritten | truncated | unknown_chain
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"checkpoint": self.number, "seq": self.seq, "kind": self.kind,
                "message": self.message}


def check_series(checkpoints: Iterable[Checkpoint], keys: Mapping[str, Ed25519PublicKey]
                 ) -> tuple[list[Checkpoint], list[Finding]]:
    """The checkpoints in number order whose signature holds, and what is wrong with the
    series: a bad signature, a checkpoint not linked to the one before it, a chain that goes
    backwards from one checkpoint to the next. Duplicates (the same checkpoint kept twice)
    count once; two different checkpoints with the same number are a break."""
    by_number: dict[int, Checkpoint] = {}
    findings: list[Finding] = []
    for cp in checkpoints:
        why = signature_problem(cp, keys)
        if why:
            findings.append(Finding(cp.number, None, "bad_signature", why))
            continue
        other = by_number.get(cp.number)
        if other is not None and other.digest != cp.digest:
            findings.append(Finding(cp.number, None, "broken_series", f"two different "
                                    f"checkpoints numbered {cp.number}, both signed"))
            continue
        by_number[cp.number] = cp
    ordered = [by_number[n] for n in sorted(by_number)]
    for before, after in zip(ordered, ordered[1:], strict=False):
        if after.number == before.number + 1 and after.prev != before.digest:
            findings.append(Finding(after.number, None, "broken_series", f"checkpoint "
                                    f"{after.number} does not link to checkpoint {before.number}"))
        for name, head in before.heads.items():
            later = after.heads.get(name)
            if later is not None and later.seq < head.seq:
                findings.append(Finding(after.number, later.seq, "broken_series",
                                        f"{name} goes back from seq {head.seq} (checkpoint "
                                        f"{before.number}) to seq {later.seq}"))
    return ordered, findings


def expected_hashes(checkpoints: Iterable[Checkpoint], chain: str) -> dict[int, tuple[str, int]]:
    """seq → (row hash, checkpoint number) that ``chain`` must have, from every checkpoint."""
    expected: dict[int, tuple[str, int]] = {}
    for cp in checkpoints:
        head = cp.heads.get(chain)
        if head is not None and head.seq > 0:
            expected.setdefault(head.seq, (head.row_hash, cp.number))
    return expected


class Binder:
    """Feed a chain's rows in seq order (``seq``, ``row_hash``), then :meth:`finish`: every
    checkpointed seq must be present with its checkpointed hash. Together with the chain's own
    check (each row's hash over its content and its link to the previous row), a row at or
    below a checkpoint cannot change, go or come without a finding."""

    def __init__(self, chain: str, checkpoints: Iterable[Checkpoint],
                 max_findings: int = 1000, floor: int = 0, ceiling: int | None = None
                 ) -> None:
        """``floor``: the last seq archived out of the database; the checkpoints up to it
        bind the archive (:mod:`govbus.delivery_log.archive`), not the rows left.
        ``ceiling``: the last seq of an archive's range; the checkpoints beyond it bind the
        rows after the archive, not the archive."""
        self.chain, self.max_findings = chain, max_findings
        self.expected = {seq: want for seq, want in expected_hashes(checkpoints, chain).items()
                         if seq > floor and (ceiling is None or seq <= ceiling)}
        self.findings: list[Finding] = []
        self.seen: set[int] = set()
        self.last = 0

    def _add(self, finding: Finding) -> None:
        if len(self.findings) < self.max_findings:
            self.findings.append(finding)

    def feed(self, seq: int, row_hash: str) -> None:
        self.last = max(self.last, seq)
        want = self.expected.get(seq)
        if want is None:
            return
        self.seen.add(seq)
        if row_hash != want[0]:
            self._add(Finding(want[1], seq, "rewritten", f"{self.chain} seq {seq} has hash "
                              f"{row_hash[:16]}…, checkpoint {want[1]} signed {want[0][:16]}…: "
                              "the log was rewritten up to here"))

    def finish(self) -> list[Finding]:
        for seq in sorted(set(self.expected) - self.seen):
            number = self.expected[seq][1]
            self._add(Finding(number, seq, "truncated", f"{self.chain} seq {seq}, covered by "
                              f"checkpoint {number}, is not in the log (it ends at seq "
                              f"{self.last}): rows were deleted"))
        return self.findings


__all__ = ["AUDIT", "DELIVERIES", "GENESIS", "PURPOSE", "SIGNER", "Binder", "ChainHead",
           "Checkpoint", "Finding", "body", "check_series", "expected_hashes", "from_dict",
           "log_chain", "log_rows", "log_shard", "make", "parse", "root", "signature_problem"]
