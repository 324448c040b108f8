"""Credentials, signing keys and quarantined payloads (Art. 8, 19, 24).

- Credentials: the information center alone issues, revokes and lists them; a new token is
  in the answer once and nowhere else, a listing never shows a hash or a salt.
- Public keys: anyone with a credential reads them (they are public: what verifies an
  agency's events and the bus's deliveries); an agency registers a key for itself, the
  information center for any agency and for the bus; a key is revoked by its holder or the
  information center.
- Quarantine: a provider reads its own set-aside payloads; the information center reads every
  agency's. Another agency's record is answered as absent (404): its existence is not told.
"""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import Field

from govbus.api.auth import Caller, caller, center
from govbus.api.deps import Body, catalogue, dsn
from govbus.core.errors import ConfigError, ForbiddenError, GovbusError, NotFoundError

router = APIRouter(prefix="/v1", tags=["admin"])

Name = Path(pattern=r"^[a-z0-9_]{1,64}$", description="the agency")


class TokenIn(Body):
    agency: str = Field(pattern=r"^[a-z0-9_]{1,64}$", description="an agency of the catalogue, "
                        "information_center or municipal_office")


class KeyIn(Body):
    public_key_pem: str = Field(min_length=1, max_length=4000,
                                description="one Ed25519 public key, PEM")
    agency: str | None = Field(default=None, pattern=r"^[a-z0-9_]{1,64}$",
                               description="the key's holder; default: the caller. The "
                               "information center names any agency, or govbus (the bus)")


class KeyRevokeIn(Body):
    agency: str | None = Field(default=None, pattern=r"^[a-z0-9_]{1,64}$",
                               description="the holder the caller expects (refused when "
                               "another holds the key)")


class KeyNotFound(NotFoundError):
    """No such key is registered (for the holder named)."""

    article = "Art. 8"


def _holders(request: Request) -> list[str]:
    from govbus.core.access import INFORMATION_CENTER
    from govbus.core.objections import OFFICE

    return sorted(set(catalogue(request).agencies) | {INFORMATION_CENTER, OFFICE})


# --- credentials (Art. 24) ------------------------------------------------------------------

@router.post("/access/tokens", status_code=201, summary="issue (or rotate) an agency's token "
             "(information center); shown once")
def issue_token(body: TokenIn, request: Request,
                who: Caller = Depends(center)) -> dict[str, str]:
    from govbus.core import access

    valid = _holders(request)
    if body.agency not in valid:
        raise GovbusError(f"agency: {body.agency!r} is not an agency of the catalogue nor a "
                          f"role of the bus (Art. 24); valid: {', '.join(valid)}",
                          rule="access.unknown_agency", article="Art. 24")
    return {"agency": body.agency, "token": access.issue(dsn(request), body.agency, who.agency)}


def _revoke(agency: str, request: Request) -> dict[str, Any]:
    from govbus.core import access

    return {"agency": agency, "revoked": access.revoke(dsn(request), agency)}


@router.post("/access/tokens/{agency}/revoke", summary="revoke an agency's token "
             "(information center)")
def revoke_token(request: Request, agency: str = Name,
                 who: Caller = Depends(center)) -> dict[str, Any]:
    return _revoke(agency, request)


@router.delete("/access/tokens/{agency}", summary="revoke an agency's token (information "
               "center)")
def delete_token(request: Request, agency: str = Name,
                 who: Caller = Depends(center)) -> dict[str, Any]:
    return _revoke(agency, request)


@router.get("/access/tokens", summary="who holds a credential, issued when and by whom "
            "(information center; never a hash)")
def list_tokens(request: Request, who: Caller = Depends(center)) -> list[dict[str, Any]]:
    from govbus.core import access

    return access.list_credentials(dsn(request))


# --- signing keys (Art. 8, 24) --------------------------------------------------------------

def _key_holder(request: Request, who: Caller, agency: str | None) -> str:
    from govbus.core.keyring import CHECKPOINT_SIGNER
    from govbus.core.keys_store import BUS

    name = who.agency if agency is None or not who.is_center else agency
    if not who.is_center:
        who.acts_as(agency)
    valid = [*sorted(catalogue(request).agencies), CHECKPOINT_SIGNER, BUS]
    if name not in valid:
        raise GovbusError(f"agency: {name!r} is not an agency of the catalogue, the "
                          f"information center nor the bus; valid: {', '.join(valid)}",
                          rule="keys.unknown_holder", article="Art. 8")
    return name


@router.get("/keys", summary="the registered public keys, valid and revoked")
def list_keys(request: Request, who: Caller = Depends(caller),
              agency: str | None = Query(None, max_length=64)) -> list[dict[str, Any]]:
    from govbus.core import keys_store

    return [r.as_dict() for r in keys_store.list_keys(dsn(request), agency)]


@router.get("/keys/bus", summary="the bus's valid public keys: what a subscriber verifies "
            "deliveries with")
def bus_keys(request: Request, who: Caller = Depends(caller)) -> list[dict[str, str]]:
    from govbus.core import keys_store

    rows = [r for r in keys_store.list_keys(dsn(request), keys_store.BUS) if r.valid]
    if not rows:
        raise KeyNotFound(f"{keys_store.BUS} has no valid key registered: the hot path "
                          "registers its key when it starts (GOVBUS_BUS_KEY_FILE)",
                          rule="keys.none_valid")
    return [{"key_id": r.key_id, "public_key_pem": r.as_dict()["public_key_pem"]} for r in rows]


@router.post("/keys", status_code=201, summary="register a public key for an agency, the "
             "information center or the bus (the information center, Art. 8, 24)")
def register_key(body: KeyIn, request: Request, who: Caller = Depends(center)
                 ) -> dict[str, Any]:
    """Only the information center registers a key, once it has compared the public half's
    fingerprint with its holder out of band: a token alone never makes a signing identity,
    so a leaked token cannot publish as its agency. The same key again is a no-op; a key
    of another holder, or revoked, is refused. Revoking is open to the key's holder."""
    from govbus.core import keys_store, signatures
    from govbus.core.keys_store import KeyRegistryError

    holder = _key_holder(request, who, body.agency)
    try:
        keys = signatures.load_publics(body.public_key_pem.encode(), "public_key_pem")
    except ConfigError as exc:  # bad input, not the service's configuration
        raise KeyRegistryError(str(exc), rule="input.public_key_pem", article="Art. 8") from exc
    if len(keys) != 1:
        raise KeyRegistryError(f"public_key_pem holds {len(keys)} keys: register one at a "
                               "time", rule="input.public_key_pem", article="Art. 8")
    row = keys_store.register(dsn(request), holder, keys[0], who.agency)
    valid = [r for r in keys_store.list_keys(dsn(request), holder) if r.valid]
    return row.as_dict() | {"valid_keys": len(valid)}


@router.post("/keys/{key_id}/revoke", summary="revoke a key (its holder or the information "
             "center): what it signed is refused from then on")
def revoke_key(key_id: str, body: KeyRevokeIn, request: Request,
               who: Caller = Depends(caller)) -> dict[str, Any]:
    from govbus.core import keys_store

    found = [r for r in keys_store.list_keys(dsn(request)) if r.key_id == key_id]
    if not found or (body.agency is not None and found[0].agency != body.agency):
        named = body.agency or "any holder"
        raise KeyNotFound(f"{named} has no key {key_id!r} (`govbus keys list`)",
                          rule="keys.not_found")
    holder = found[0].agency
    if not who.is_center and who.agency != holder:
        raise ForbiddenError(f"key {key_id} is {holder}'s; only {holder} or the information "
                             f"center revokes it, not {who.agency} (Art. 24)",
                             rule="access.not_yours")
    row = keys_store.revoke(dsn(request), holder, key_id, who.agency)
    left = [r for r in keys_store.list_keys(dsn(request), holder) if r.valid]
    return row.as_dict() | {"valid_keys_left": len(left)}


# --- quarantine (Art. 19) -------------------------------------------------------------------

def _provider(who: Caller, agency: str | None) -> str | None:
    """Whose quarantine the caller reads: its own; the information center any or all."""
    return agency if who.is_center else who.acts_as(agency)


@router.get("/quarantine", summary="the newest payloads set aside for their provider (the "
            "caller's; every agency's for the information center)")
def list_quarantine(request: Request, who: Caller = Depends(caller),
                    agency: str | None = Query(None, max_length=64),
                    limit: int = Query(100, ge=1, le=10_000)) -> list[dict[str, Any]]:
    from govbus.core import quarantine

    return quarantine.listing(dsn(request), _provider(who, agency), limit)


@router.get("/quarantine/{row_id}", summary="one quarantined record with its key and whole "
            "payload (base64)")
def get_quarantine(row_id: int, request: Request, who: Caller = Depends(caller),
                   agency: str | None = Query(None, max_length=64)) -> dict[str, Any]:
    from govbus.core import quarantine

    provider = _provider(who, agency)
    found = quarantine.fetch(dsn(request), row_id)
    if found is None or (provider is not None and found[0]["agency"] != provider):
        # another agency's row is as absent as a missing one (Art. 24)
        raise NotFoundError(f"no quarantined record {row_id}"
                            + (f" of {provider}" if provider else ""),
                            rule="quarantine.not_found", article="Art. 19")
    meta, key, payload = found
    return meta | {"key": (key or b"").decode("utf-8", "replace"),
                   "payload_base64": base64.b64encode(payload or b"").decode()}
