-- The audit ledger: the control plane is evidence too (Art. 13, 18, 19, 20, 24, 28, 29, 31;
-- docs/evidence.md; delivery_log/audit.py). Every row written to a table that records a
-- decision — sharing requests, their filings (Art. 18) and grants (Art. 24, 25), the catalogue
-- and its schema versions (Art. 7, 13), agencies' credentials and signing keys (Art. 24),
-- reconciliation cases (Art. 20), objections and complaints with their answers (Art. 19, 29) —
-- is appended here by a trigger in the writing transaction, as before/after images.
--
-- The trigger does not hash: `seal` (delivery_log/audit.py) numbers the new rows (`seq`,
-- consecutive, in arrival order) and chains them, row_hash = sha256(prev_hash ||
-- canonical(row)), computed in Python so that a verifier needs nothing of this database's
-- code. `id` is the arrival order (a rolled-back write leaves a gap in it, and a transaction
-- may commit after a later one); `seq` is the place in the chain, contiguous from 1, NULL until
-- sealed. `audit_ledger_head` records the last sealed row, so that deleting the newest rows
-- shows; anchoring the head outside the database (signed checkpoints) shows a rewritten chain.
CREATE TABLE audit_ledger (
    id          bigserial PRIMARY KEY,
    seq         bigint UNIQUE,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       text,                            -- govbus.actor of the writing transaction
    table_name  text NOT NULL,
    op          text NOT NULL CHECK (op IN ('INSERT', 'UPDATE', 'DELETE')),
    row_key     text NOT NULL,                   -- the row's primary key, as text
    before      jsonb,                           -- NULL for an INSERT
    after       jsonb,                           -- NULL for a DELETE
    prev_hash   text,
    row_hash    text,
    CHECK ((seq IS NULL) = (row_hash IS NULL) AND (seq IS NULL) = (prev_hash IS NULL))
);
CREATE INDEX audit_ledger_unsealed ON audit_ledger (id) WHERE row_hash IS NULL;
CREATE INDEX audit_ledger_row ON audit_ledger (table_name, row_key, id);

CREATE TABLE audit_ledger_head (
    id        int PRIMARY KEY CHECK (id = 1),
    seq       bigint NOT NULL,
    row_hash  text NOT NULL
);
INSERT INTO audit_ledger_head (id, seq, row_hash) VALUES (1, 0, repeat('0', 64));

-- A row's image as the ledger records it: to_jsonb of the row, each secret column (bytea)
-- replaced by 'sha256:' and the hex SHA-256 of its bytes, so that a credential's rotation shows
-- without the ledger holding what would let anyone check a guessed token.
-- The caller renders the row with TimeZone UTC, IntervalStyle postgres and bytea_output hex,
-- so that the same row always gives the same image.
CREATE FUNCTION govbus_audit_image(image jsonb, secrets text[]) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    col text;
    v text;
BEGIN
    IF image IS NULL THEN
        RETURN NULL;
    END IF;
    FOREACH col IN ARRAY coalesce(secrets, '{}') LOOP
        v := image ->> col;
        IF v IS NOT NULL THEN
            image := jsonb_set(image, ARRAY[col], to_jsonb('sha256:' || encode(sha256(
                CASE WHEN left(v, 2) = '\x' THEN decode(substr(v, 3), 'hex')
                     ELSE convert_to(v, 'UTF8') END), 'hex')));
        END IF;
    END LOOP;
    RETURN image;
END $$;

-- The row trigger of every audited table. Arguments: the primary-key column, the secret
-- columns (comma-separated), the columns whose change alone is not recorded (a credential's
-- last use, a catalogue sync's time, a replayed case's updated_at): an UPDATE that changes
-- nothing else writes no ledger row. The actor is `govbus.actor` (set by the stores with
-- set_config(..., true) when they know who acts), NULL otherwise.
CREATE FUNCTION govbus_audit() RETURNS trigger
LANGUAGE plpgsql
SET TimeZone = 'UTC' SET IntervalStyle = 'postgres' SET bytea_output = 'hex' AS $$
DECLARE
    secrets text[] := coalesce(string_to_array(nullif(TG_ARGV[1], ''), ','), '{}');
    ignored text[] := coalesce(string_to_array(nullif(TG_ARGV[2], ''), ','), '{}');
    old_image jsonb;
    new_image jsonb;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        old_image := govbus_audit_image(to_jsonb(OLD), secrets);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        new_image := govbus_audit_image(to_jsonb(NEW), secrets);
    END IF;
    IF TG_OP = 'UPDATE' AND (old_image - ignored) = (new_image - ignored) THEN
        RETURN NULL;
    END IF;
    INSERT INTO audit_ledger (actor, table_name, op, row_key, before, after)
    VALUES (nullif(current_setting('govbus.actor', true), ''), TG_TABLE_NAME, TG_OP,
            coalesce(new_image, old_image) ->> TG_ARGV[0], old_image, new_image);
    RETURN NULL;
END $$;

-- The audited tables (the same list as delivery_log/audit.py's AUDITED, which `govbus audit
-- verify` checks the installed triggers against). Not audited: the high-volume data tables
-- (deliveries, receipts, entity_state, event counts, accepted events, quarantine, reconciler
-- state) and canonical_attributes, which every catalogue sync rewrites from the contracts that
-- schema_versions records. Rows present now enter the ledger as INSERTs by 'migration 0012'.
SET LOCAL TimeZone = 'UTC';
SET LOCAL IntervalStyle = 'postgres';
SET LOCAL bytea_output = 'hex';
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM (VALUES
            ('catalogue_resources', 'resource_id', '', 'synced_at'),
            ('schema_versions', 'schema_id', '', ''),
            ('sharing_requests', 'request_id', '', ''),
            ('grants', 'grant_id', '', ''),
            ('filings', 'filing_id', '', ''),
            ('agency_credentials', 'agency', 'salt,token_hash', 'last_used_at'),
            ('agency_keys', 'key_id', '', ''),
            ('cases', 'id', '', 'updated_at'),
            ('objections', 'id', '', ''),
            ('objection_events', 'id', '', '')) AS v(name, key, secrets, ignored)
    LOOP
        EXECUTE format(
            'INSERT INTO audit_ledger (actor, table_name, op, row_key, after) '
            'SELECT %L, %L, %L, i ->> %L, i FROM (SELECT govbus_audit_image(to_jsonb(x), '
            'string_to_array(nullif(%L, %L), %L)) AS i FROM %I x ORDER BY x.%I) AS images',
            'migration 0012', t.name, 'INSERT', t.key, t.secrets, '', ',', t.name, t.key);
        EXECUTE format(
            'CREATE TRIGGER govbus_audit AFTER INSERT OR UPDATE OR DELETE ON %I '
            'FOR EACH ROW EXECUTE FUNCTION govbus_audit(%L, %L, %L)',
            t.name, t.key, t.secrets, t.ignored);
    END LOOP;
END $$;
