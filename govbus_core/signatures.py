"""Ed25519 batch signatures of Kafka records: who produced a record, checked by whoever reads it.

A producer signs a *batch* of records once: each record's leaf hash covers its topic, key,
value and ``event_id`` header; the leaves form a hash tree (RFC 9162's Merkle tree hash:
``0x00`` before a leaf, ``0x01`` before two children, a lone last node promoted); one Ed25519
signature is made over the tree's root and a purpose that says what was signed (an agency's
events, :data:`EVENTS`, or the bus's deliveries, :data:`DELIVERIES`), so a signature made for
one can never pass as the other. Each record carries, in headers, the key id, the signature
and its own audit path (its index, the batch size and the sibling hashes from leaf to root).
One header, ``govbus-sig``, carries them: a version byte (1), the key id (8 bytes), the
signature (64), the record's index and the batch size (2 bytes each) and the sibling hashes
(32 bytes each): 301 bytes for a batch of 128, one header for the broker to store and serve,
not three. This is X-Road's batch signature: a reader recomputes the root from the
record and its path,
and verifies the signature over that root once per batch; every later record of the batch is
checked against the cached root in a few hashes (:class:`Verifier`).

The signature travels in headers only: the Avro value and the Confluent wire format stay as
they are. What it proves, and what it does not, is in docs/security.md (Art. 8, 24).

Pure: no broker, no database; the keys are handed in (:mod:`govbus.core.keys_store` keeps
the registered ones).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from govbus.core.errors import ConfigError

#: what a signature is over: the purpose, then the root (domain separation: an agency's batch
#: signature is never a valid delivery signature, nor the reverse)
EVENTS = b"govbus events v1\x00"
DELIVERIES = b"govbus deliveries v1\x00"

SIG_HEADER = "govbus-sig"  # version, key id, signature, index, size, siblings
EVENT_ID_HEADER = "event_id"
SIGNATURE_HEADERS = (SIG_HEADER,)
VERSION = 1
_KID, _SIG, _POS = 8, 64, 4  # key id (raw), signature, index and size (u16 each)

#: the records signed together at most: a path grows by 32 bytes each time the batch doubles
#: (7 hashes, 232 bytes of headers, for 128 records), while one signature's cost (about 90 µs
#: to verify) is shared by every record of its batch
MAX_BATCH = 128
#: the verified batches a :class:`Verifier` remembers, each with the hashes it authenticated
#: (about 2 per record: 8 KiB for a batch of 128)
CACHE_SIZE = 1024
_NONE = b"\xff\xff\xff\xff"  # a missing key, value or event id: distinct from an empty one
_U32 = 4
_HASH = 32


class Problem(NamedTuple):
    """Why a record's signature does not hold: a rule id (``auth.*``) and a sentence."""

    rule: str
    message: str


@dataclass(frozen=True)
class PublicKey:
    """A registered public key: whose it is and whether it still counts."""

    key_id: str
    agency: str
    key: Ed25519PublicKey
    revoked: bool = False


def _field(data: bytes | None) -> bytes:
    return _NONE if data is None else len(data).to_bytes(_U32, "big") + data


def leaf(topic: str, key: bytes | None, value: bytes | None, event_id: bytes | None) -> bytes:
    """The leaf hash of one record: each part length-prefixed, so no two records share it."""
    return hashlib.sha256(b"\x00" + _field(topic.encode()) + _field(key) + _field(value)
                          + _field(event_id)).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def tree(leaves: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The root of ``leaves`` and each leaf's audit path (sibling hashes, leaf to root)."""
    if not leaves:
        raise ValueError("an empty batch has no root")
    paths: list[list[bytes]] = [[] for _ in leaves]
    members = [[i] for i in range(len(leaves))]  # the leaves under each node of the level
    level = list(leaves)
    while len(level) > 1:
        up, above = [], []
        for j in range(0, len(level) - 1, 2):
            for i in members[j]:
                paths[i].append(level[j + 1])
            for i in members[j + 1]:
                paths[i].append(level[j])
            up.append(_node(level[j], level[j + 1]))
            above.append(members[j] + members[j + 1])
        if len(level) % 2:  # a lone last node goes up as it is
            up.append(level[-1])
            above.append(members[-1])
        level, members = up, above
    return level[0], paths


def walk_up(leaf_hash: bytes, index: int, size: int, path: Sequence[bytes]
            ) -> list[bytes] | None:
    """The hashes from ``leaf_hash`` at ``index`` of ``size`` leaves up its ``path`` to the
    root (the last), or None when the path does not fit the position (too short, too long,
    index out of range)."""
    if not 0 <= index < size:
        return None
    h, rest = leaf_hash, iter(path)
    walk = [h]
    try:
        while size > 1:
            if index % 2:
                h = _node(next(rest), h)
                walk.append(h)
            elif index + 1 < size:
                h = _node(h, next(rest))
                walk.append(h)
            index, size = index // 2, (size + 1) // 2
    except StopIteration:
        return None
    return None if next(rest, None) is not None else walk


def root_of(leaf_hash: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes | None:
    """The root :func:`walk_up` reaches, or None."""
    walk = walk_up(leaf_hash, index, size, path)
    return None if walk is None else walk[-1]


def key_id(key: Ed25519PublicKey) -> str:
    """A public key's id: the first 16 hex digits of the SHA-256 of its 32 raw bytes."""
    return hashlib.sha256(raw_public(key)).hexdigest()[:16]


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_from_raw(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


Record = tuple[str, bytes | None, bytes | None, bytes | None]  # topic, key, value, event id


class Signer:
    """Signs batches of records with one private key, for one purpose."""

    def __init__(self, private: Ed25519PrivateKey, purpose: bytes = EVENTS) -> None:
        self.private, self.purpose = private, purpose
        self.key_id = key_id(private.public_key())
        self._kid = bytes.fromhex(self.key_id)

    @classmethod
    def from_file(cls, path: Path | str, purpose: bytes = EVENTS, what: str = "key file"
                  ) -> Signer:
        return cls(load_private(path, what), purpose)

    def sign(self, records: Sequence[Record]) -> list[list[tuple[str, bytes]]]:
        """The signature headers of each record, one signature per :data:`MAX_BATCH`."""
        return self.sign_leaves([leaf(*r) for r in records])

    def sign_leaves(self, leaves: Sequence[bytes]) -> list[list[tuple[str, bytes]]]:
        """:meth:`sign` for records whose :func:`leaf` hashes the caller has already (the hot
        path logs them: what was delivered, byte for byte)."""
        out: list[list[tuple[str, bytes]]] = []
        for start in range(0, len(leaves), MAX_BATCH):
            chunk = leaves[start:start + MAX_BATCH]
            root, paths = tree(chunk)
            sig = self.private.sign(self.purpose + root)
            head = bytes([VERSION]) + self._kid + sig
            size = len(chunk).to_bytes(2, "big")
            out += [[(SIG_HEADER, head + i.to_bytes(2, "big") + size + b"".join(path))]
                    for i, path in enumerate(paths)]
        return out


def _headers(headers: Any) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for name, value in headers or ():
        if name in SIGNATURE_HEADERS or name == EVENT_ID_HEADER:
            found[name] = value if isinstance(value, bytes) else (value or "").encode()
    return found


class Verifier:
    """Checks record signatures against a set of public keys, remembering verified roots.

    A record holds when its key id is known, the key is ``agency``'s (when given), it is not
    revoked, its path is well formed and leads from the record to a root whose signature by
    that key verifies. The first record of a batch pays for the Ed25519 verification; every
    other record of the batch is checked in a hash or two against what that one proved."""

    def __init__(self, keys: Iterable[PublicKey], purpose: bytes = EVENTS,
                 cache_size: int = CACHE_SIZE) -> None:
        self.keys: Mapping[str, PublicKey] = {k.key_id: k for k in keys}
        self.purpose, self.cache_size = purpose, cache_size
        # (key id, signature) -> the hashes of that batch's tree known to lead to its root
        self._verified: dict[tuple[str, bytes], set[bytes]] = {}
        self.verifications = 0  # Ed25519 verifications made (for tests and the bench)

    def check(self, topic: str, key: bytes | None, value: bytes | None, headers: Any,
              agency: str | None = None) -> Problem | None:
        """None when the record's signature holds; otherwise the problem, with its rule."""
        h = _headers(headers)
        packed = h.get(SIG_HEADER)
        if packed is None:
            return Problem("auth.unsigned", f"the record is not signed: no {SIG_HEADER} header")
        if len(packed) < 1 + _KID + _SIG + _POS or packed[0] != VERSION \
                or (len(packed) - 1 - _KID - _SIG - _POS) % _HASH:
            return Problem("auth.bad_signature", f"the {SIG_HEADER} header is malformed "
                           f"({len(packed)} bytes, version {packed[:1].hex() or 'none'})")
        name = packed[1:1 + _KID].hex()
        sig = packed[1 + _KID:1 + _KID + _SIG]
        at = 1 + _KID + _SIG
        index, size = int.from_bytes(packed[at:at + 2], "big"), int.from_bytes(
            packed[at + 2:at + 4], "big")
        siblings = [packed[i:i + _HASH] for i in range(at + _POS, len(packed), _HASH)]
        found = self.keys.get(name)
        if found is None:
            return Problem("auth.unknown_key", f"key {name} is not registered")
        if agency is not None and found.agency != agency:
            return Problem("auth.wrong_agency", f"key {name} is {found.agency}'s, but the topic "
                           f"is {agency}'s: one agency cannot publish as another")
        if found.revoked:
            return Problem("auth.revoked_key", f"key {name} of {found.agency} is revoked")
        leaf_hash = leaf(topic, key, value, h.get(EVENT_ID_HEADER))
        known = self._verified.get((name, sig))
        if known is not None and leaf_hash in known:
            return None  # a sibling of a record verified before: authenticated already
        walk = walk_up(leaf_hash, index, size, siblings)
        if walk is None:
            return Problem("auth.bad_signature", f"the path does not fit position {index} of "
                           f"{size}")
        if known is not None and not known.isdisjoint(walk):
            known.update(walk)
            known.update(siblings)
            return None
        self.verifications += 1
        try:
            found.key.verify(sig, self.purpose + walk[-1])
        except InvalidSignature:
            return Problem("auth.bad_signature", f"the signature by key {name} does not match "
                           "the record: its topic, key, value or event id changed after signing")
        if len(self._verified) >= self.cache_size:
            del self._verified[next(iter(self._verified))]  # the oldest
        # every hash on a path to a verified root is authenticated, and so is every sibling on
        # it: a later record of the batch is checked by hashing up to the first one it meets
        # (a leaf hash never equals a node's: their prefixes differ)
        self._verified[(name, sig)] = {*walk, *siblings}
        return None


# --- key files --------------------------------------------------------------------------------

def generate() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def write_pair(key: Ed25519PrivateKey, private_path: Path, public_path: Path) -> None:
    """Write the private key (created mode 0600, never wider) and its public key; an existing
    file is never overwritten (a key lost is an agency that cannot publish)."""
    for path in (private_path, public_path):
        if path.exists():
            raise ConfigError(f"{path} exists: a key is never overwritten; choose another "
                              "folder or remove it first")
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private_pem(key))
    public_path.write_bytes(public_pem(key.public_key()))


def load_private(path: Path | str, what: str = "key file") -> Ed25519PrivateKey:
    """The Ed25519 private key in ``path`` (PEM, PKCS#8); ConfigError when it is unreadable,
    readable by group or others, or not an Ed25519 key."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"{what} {path} is readable by others ({stat.filemode(mode)}): "
                              "chmod 600 it; a private key never leaves its holder")
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{what} {path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{what} {path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


_PEM_BLOCK = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.S)


def load_publics(data: bytes, source: str = "public key") -> list[Ed25519PublicKey]:
    """Every Ed25519 public key in PEM ``data`` (one or more blocks: during a rotation a file
    holds several); ConfigError when there is none or a block is not an Ed25519 key."""
    blocks = _PEM_BLOCK.findall(data)
    if not blocks:
        raise ConfigError(f"{source} holds no PEM public key")
    keys = []
    for block in blocks:
        try:
            key = serialization.load_pem_public_key(block)
        except ValueError as exc:
            raise ConfigError(f"{source} is not a PEM public key: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"{source} holds a {type(key).__name__}, not an Ed25519 key")
        keys.append(key)
    return keys


def load_public_file(path: Path | str, what: str = "public key file") -> list[Ed25519PublicKey]:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc
    return load_publics(data, f"{what} {path}")
