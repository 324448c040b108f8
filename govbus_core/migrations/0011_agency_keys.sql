-- The Ed25519 public keys events and deliveries are signed with (docs/security.md; Art. 8,
-- 24). An agency's keys are registered by the information center from the public half the
-- agency hands over (its private key never leaves it); during a rotation an agency has
-- several valid keys. The bus's own delivery keys are held under the agency name 'govbus'.
-- A key id is the first 16 hex digits of the SHA-256 of the raw key; a revoked key stays,
-- with when and by whom: what it signed before is refused from then on (fail closed).
CREATE TABLE agency_keys (
    key_id        text PRIMARY KEY,
    agency        text NOT NULL,
    public_key    bytea NOT NULL UNIQUE CHECK (octet_length(public_key) = 32),
    registered_at timestamptz NOT NULL DEFAULT now(),
    registered_by text NOT NULL,
    revoked_at    timestamptz,
    revoked_by    text
);
CREATE INDEX agency_keys_agency ON agency_keys (agency);
