-- Who is asking (Art. 24): one credential per agency for the control plane and the CLI. Only a
-- salted scrypt hash of each token is kept; the token itself is shown once, when issued. A new
-- issue replaces the old credential (rotation); deleting the row revokes it.
CREATE TABLE agency_credentials (
    agency       text PRIMARY KEY CHECK (agency ~ '^[a-z0-9_]+$'),
    salt         bytea NOT NULL,
    token_hash   bytea NOT NULL,
    kdf          text NOT NULL,                 -- e.g. scrypt:n=16384,r=8,p=1
    issued_at    timestamptz NOT NULL DEFAULT now(),
    issued_by    text NOT NULL,
    last_used_at timestamptz
);
