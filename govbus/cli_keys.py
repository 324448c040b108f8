"""``govbus keys``: the Ed25519 keys events and deliveries are signed with (Art. 8, 24;
docs/security.md).

An agency generates its pair and keeps the private key (``generate``, no database needed);
the information center registers the public half under its key id, lists and revokes
(``register``, ``list``, ``revoke``); through the HTTP service an agency also registers and
revokes its own keys. Agencies take the bus's public key with ``show --bus`` to verify their
deliveries.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from govbus.cli import catalogue, dumps, printable
from govbus.cli_access import service, token_arg
from govbus.core import access, keys_store, signatures
from govbus.core.errors import GovbusError
from govbus.core.keyring import CHECKPOINT_SIGNER, private_file, public_file
from govbus.core.keys_store import BUS


def _dsn() -> str:
    from govbus.core.config import Settings

    return Settings.from_env().database_url


def holder(args: argparse.Namespace) -> str:
    """``--bus`` (the bus, :data:`BUS`) or ``--agency A``, an agency of the catalogue."""
    if getattr(args, "bus", False):
        if args.agency:
            raise GovbusError("--bus and --agency exclude each other: the bus's keys are its own")
        return BUS
    if not args.agency:
        raise GovbusError("name the key's holder: --agency A, or --bus")
    # the information center holds the key the log's checkpoints are signed with
    agencies = [*sorted(catalogue().agencies), CHECKPOINT_SIGNER]
    if args.agency not in agencies:
        shown = printable(args.agency[:64])
        raise GovbusError(f"--agency '{shown}' is not an agency of the catalogue nor the "
                          f"information center; valid: {', '.join(agencies)}")
    return str(args.agency)


def cmd_generate(args: argparse.Namespace) -> int:
    who = holder(args)
    folder = Path(args.out).expanduser()
    if folder.exists() and not folder.is_dir():
        raise GovbusError(f"--out {args.out} is a file: name a folder")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = signatures.generate()
    private, public = private_file(folder, who), public_file(folder, who)
    signatures.write_pair(key, private, public)
    kid = signatures.key_id(key.public_key())
    out = {"holder": who, "key_id": kid, "private_key": str(private), "public_key": str(public)}
    print(dumps(out) if args.json else
          f"key {kid} of {who}: private key {private} (mode 600, never leaves {who}), public "
          f"key {public}; the information center registers it with\n  govbus keys register "
          f"{'--bus' if who == BUS else '--agency ' + who} --public-key {public}")
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    who = holder(args)
    keys = signatures.load_public_file(args.public_key, "--public-key")
    if len(keys) != 1:
        raise GovbusError(f"--public-key {args.public_key} holds {len(keys)} keys: register "
                          "one at a time")
    http = service(args)
    if http:  # an agency registers its own key; the information center any, and the bus's
        out = http.post("/v1/keys", {"public_key_pem": signatures.public_pem(keys[0]).decode(),
                                     "agency": who})
        count = out.pop("valid_keys")
        registered_at = dt.datetime.fromisoformat(out["registered_at"])
    else:
        dsn = _dsn()
        access.require(dsn, access.INFORMATION_CENTER, args.token_file)
        row = keys_store.register(dsn, who, keys[0], access.INFORMATION_CENTER)
        out, registered_at = row.as_dict(), row.registered_at
        count = len(valid(keys_store.list_keys(dsn, who)))
    print(dumps(out) if args.json else
          f"key {out['key_id']} registered for {who} on {registered_at:%Y-%m-%d %H:%M}; "
          f"{who} now has {count} valid key(s)")
    return 0


def valid(rows: list[keys_store.KeyRow]) -> list[keys_store.KeyRow]:
    return [r for r in rows if r.valid]


def _listed(args: argparse.Namespace, agency: str | None) -> list[dict[str, Any]]:
    """The registered keys (of ``agency``), as ``keys list --json`` shows them."""
    http = service(args)
    if http:
        return list(http.get("/v1/keys", agency=agency))
    return [r.as_dict() for r in keys_store.list_keys(_dsn(), agency)]


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def cmd_list(args: argparse.Namespace) -> int:
    rows = _listed(args, args.agency)
    if args.json:
        print(dumps(rows))
        return 0
    for r in rows:
        state = (f"revoked {_at(r['revoked_at']):%Y-%m-%d %H:%M} by {r['revoked_by']}"
                 if r["revoked_at"] else "valid")
        print(f"{r['agency']:<24} {r['key_id']}  registered "
              f"{_at(r['registered_at']):%Y-%m-%d %H:%M} by {r['registered_by']}, {state}")
    if not rows:
        print("no keys registered" + (f" for {printable(args.agency)}" if args.agency else ""))
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    who = holder(args)
    http = service(args)
    if http:  # its holder or the information center
        out = http.post(f"/v1/keys/{args.key_id}/revoke", {"agency": who})
    else:
        dsn = _dsn()
        access.require(dsn, access.INFORMATION_CENTER, args.token_file)
        row = keys_store.revoke(dsn, who, args.key_id, access.INFORMATION_CENTER)
        out = row.as_dict() | {"valid_keys_left": len(valid(keys_store.list_keys(dsn, who)))}
    left = out["valid_keys_left"]
    print(dumps(out) if args.json else
          f"key {out['key_id']} of {who} revoked on {_at(out['revoked_at']):%Y-%m-%d %H:%M}: "
          f"what it signed is refused from now on (auth.revoked_key); {who} has {left} valid "
          "key(s) left" + ("" if left else ": it cannot publish until a new key is registered"))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    who = holder(args)
    http = service(args) if who == BUS else None
    if http:  # what a subscriber verifies deliveries with
        rows = list(http.get("/v1/keys/bus"))
    else:
        rows = [r for r in _listed(args, who) if r["valid"]]
    if not rows:
        raise GovbusError(f"{who} has no valid key registered" + (
            ": the hot path registers its key when it starts (GOVBUS_BUS_KEY_FILE)"
            if who == BUS else ""))
    pems = [r["public_key_pem"] for r in rows]
    if args.json:
        print(json.dumps([{"key_id": r["key_id"], "public_key_pem": p} for r, p in
                          zip(rows, pems, strict=True)], indent=2))
    elif args.out:
        path = Path(args.out).expanduser()
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(pems))
        os.replace(tmp, path)
        print(f"{len(rows)} public key(s) of {who} written to {path}"
              + ("; point GOVBUS_BUS_PUBLIC_KEY_FILE at it" if who == BUS else ""))
    else:
        print("".join(pems), end="")
    return 0


def register(sub: Any, add: Any) -> None:
    grp = sub.add_parser("keys", help="signing keys of agencies and of the bus (Art. 8, 24)",
                         description=__doc__.split("\n\n")[1].replace("\n", " "))
    ksub = grp.add_subparsers(dest="keys", required=True, metavar="ACTION")

    def holder_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--agency", help="an agency of the catalogue")
        p.add_argument("--bus", action="store_true", help="the bus's own key (signs deliveries)")

    p = add("generate", cmd_generate, "generate an Ed25519 key pair into a folder (the "
            "private key mode 600; no database needed)", parent=ksub)
    holder_args(p)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder to write <holder>.key and <holder>.pub into")
    p = add("register", cmd_register, "register a public key for an agency (information "
            "center; through the service, an agency its own); several valid keys during a "
            "rotation", parent=ksub)
    holder_args(p)
    p.add_argument("--public-key", required=True, metavar="FILE", help="the PEM public key")
    token_arg(p)
    p = add("list", cmd_list, "the registered keys, valid and revoked", parent=ksub)
    p.add_argument("--agency", help="only this agency's (govbus: the bus's; "
                   "information_center: the checkpoints')")
    token_arg(p)
    p = add("revoke", cmd_revoke, "revoke a key (information center; through the "
            "service, its holder too): what it signed is refused from then on", parent=ksub)
    holder_args(p)
    p.add_argument("--key-id", required=True, help="the key id `keys list` shows")
    token_arg(p)
    p = add("show", cmd_show, "print the valid public keys of the bus (--bus) or an agency, "
            "as PEM", parent=ksub)
    holder_args(p)
    p.add_argument("--out", metavar="FILE", help="write them to FILE instead")
    token_arg(p)
