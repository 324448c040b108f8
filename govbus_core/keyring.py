"""Where a process finds the keys it signs and verifies with (docs/security.md).

- An agency's publisher and outbox relay sign with ``GOVBUS_SIGNING_KEY_FILE`` (or
  ``--key-file``); under the embedded runtime, with no file named, with the sample agency's
  key that ``govbus up`` generated in ``<state dir>/keys/<agency>.key``.
- The hot path and backfills sign deliveries with ``GOVBUS_BUS_KEY_FILE``, else
  ``<state dir>/keys/govbus.key``.
- A subscriber verifies deliveries with ``GOVBUS_BUS_PUBLIC_KEY_FILE`` (``govbus keys show
  --bus``), else ``<state dir>/keys/govbus.pub``.

No key found is a :class:`ConfigError` that says which variable to set: nothing is produced
unsigned, nothing is accepted unverified (security checks fail closed).
"""

from __future__ import annotations

from pathlib import Path

from govbus.core import keys_store, signatures
from govbus.core.config import Settings
from govbus.core.errors import ConfigError
from govbus.core.keys_store import BUS

__all__ = ["BUS", "CHECKPOINT_SIGNER", "KEYS_DIR", "agency_signer", "bus_signer",
           "bus_verifier", "checkpoint_key", "checkpoint_publics", "embedded_dir",
           "private_file", "provision", "public_file"]
from govbus.core.signatures import (
    DELIVERIES,
    EVENTS,
    Ed25519PrivateKey,
    Ed25519PublicKey,
    PublicKey,
    Signer,
    Verifier,
)

KEYS_DIR = "keys"  # under the state folder: the embedded runtime's sample keys


def embedded_dir(settings: Settings) -> Path:
    return Path(settings.state_dir) / KEYS_DIR


def private_file(folder: Path, agency: str) -> Path:
    return folder / f"{agency}.key"


def public_file(folder: Path, agency: str) -> Path:
    return folder / f"{agency}.pub"


def agency_signer(settings: Settings, agency: str, key_file: Path | str | None = None
                  ) -> Signer:
    """The signer of ``agency``'s events: ``key_file``, else ``GOVBUS_SIGNING_KEY_FILE``, else
    the embedded runtime's key of ``agency``."""
    named = key_file or settings.signing_key_file
    if named:
        return Signer.from_file(named, EVENTS, "signing key file (GOVBUS_SIGNING_KEY_FILE)")
    sample = private_file(embedded_dir(settings), agency)
    if sample.exists():
        return Signer.from_file(sample, EVENTS, "signing key file")
    raise ConfigError(f"no signing key for {agency}: set GOVBUS_SIGNING_KEY_FILE (or pass "
                      "--key-file) to the agency's private key (`govbus keys generate`); the "
                      "gate refuses unsigned events (auth.unsigned, Art. 8, 24)")


def bus_signer(settings: Settings) -> Signer:
    """The bus's signer of deliveries: ``GOVBUS_BUS_KEY_FILE``, else the embedded one."""
    named = settings.bus_key_file or private_file(embedded_dir(settings), BUS)
    if not Path(named).exists():
        raise ConfigError(f"no bus key: set GOVBUS_BUS_KEY_FILE to the bus's private key "
                          f"(`govbus keys generate --bus`); {named} does not exist. Subscribers "
                          "refuse unsigned deliveries")
    return Signer.from_file(named, DELIVERIES, "bus key file (GOVBUS_BUS_KEY_FILE)")


def bus_verifier(settings: Settings, public_key_file: Path | str | None = None) -> Verifier:
    """A verifier of deliveries with the bus's public keys: ``public_key_file``, else
    ``GOVBUS_BUS_PUBLIC_KEY_FILE``, else the embedded runtime's."""
    named = (public_key_file or settings.bus_public_key_file
             or public_file(embedded_dir(settings), BUS))
    if not Path(named).exists():
        raise ConfigError(f"no bus public key to verify deliveries with: set "
                          f"GOVBUS_BUS_PUBLIC_KEY_FILE to the output of `govbus keys show "
                          f"--bus` ({named} does not exist)")
    keys = signatures.load_public_file(named, "bus public key file (GOVBUS_BUS_PUBLIC_KEY_FILE)")
    return Verifier([PublicKey(signatures.key_id(k), BUS, k) for k in keys], DELIVERIES)


#: who signs the log's checkpoints (docs/security.md): the information center
CHECKPOINT_SIGNER = "information_center"


def checkpoint_key(settings: Settings) -> Ed25519PrivateKey:
    """The information center's key the checkpointer signs with: ``GOVBUS_CHECKPOINT_KEY_FILE``,
    else the embedded runtime's."""
    named = settings.checkpoint_key_file or private_file(embedded_dir(settings),
                                                         CHECKPOINT_SIGNER)
    if not Path(named).exists():
        raise ConfigError(f"no checkpoint key: set GOVBUS_CHECKPOINT_KEY_FILE to the "
                          f"information center's private key (`govbus keys generate --agency "
                          f"{CHECKPOINT_SIGNER}`); {named} does not exist")
    return signatures.load_private(named, "checkpoint key file (GOVBUS_CHECKPOINT_KEY_FILE)")


def checkpoint_publics(settings: Settings, dsn: str | None = None,
                       public_key_file: Path | str | None = None
                       ) -> dict[str, Ed25519PublicKey]:
    """Key id → the information center's public keys that checkpoints may be signed with:
    ``public_key_file``, else ``GOVBUS_CHECKPOINT_PUBLIC_KEY_FILE`` (an agency pins them), else
    those registered in the bus's database under the information center (revoked ones too:
    a checkpoint signed before a revocation stays evidence)."""
    named = public_key_file or settings.checkpoint_public_key_file
    if named:
        keys = signatures.load_public_file(named, "checkpoint public key file "
                                                  "(GOVBUS_CHECKPOINT_PUBLIC_KEY_FILE)")
        return {signatures.key_id(k): k for k in keys}
    rows = keys_store.list_keys(dsn or settings.database_url, CHECKPOINT_SIGNER)
    return {r.key_id: r.as_public().key for r in rows}


def provision(dsn: str, folder: Path, holders: list[str], by: str = "govbus up") -> list[str]:
    """The embedded runtime's keys: a pair for each of ``holders`` (the sample agencies and the
    bus) that has none in ``folder``, each registered. Returns the holders given a new pair.
    A production deployment never does this: there each agency generates its own pair."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    made = []
    for who in holders:
        private = private_file(folder, who)
        if not private.exists():
            signatures.write_pair(signatures.generate(), private, public_file(folder, who))
            made.append(who)
        key = signatures.load_private(private).public_key()
        keys_store.register(dsn, who, key, by)
    return made
