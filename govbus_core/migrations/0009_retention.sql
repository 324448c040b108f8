-- Retention (Art. 25: personal data is kept no longer than its purpose needs; see
-- docs/retention.md and `govbus purge`).
--
-- reconcile_state.last_seen: when the reconciler last wrote the entity's state (a value newer
-- than the one held). Set by the column default on insert and by the trigger on every update,
-- so the reconciler's own statements stay as they are. Rows present before this migration
-- start at the migration's time: they are kept for a full retention period from now.
-- No index on last_seen: every state write changes it, and an index on it would turn the
-- reconciler's updates from HOT updates into index updates; the daily purge walks the primary
-- key instead.
ALTER TABLE reconcile_state ADD COLUMN last_seen timestamptz NOT NULL DEFAULT now();

CREATE FUNCTION reconcile_state_seen() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.last_seen := now();
    RETURN NEW;
END $$;

CREATE TRIGGER reconcile_state_seen BEFORE UPDATE ON reconcile_state
    FOR EACH ROW EXECUTE FUNCTION reconcile_state_seen();

-- The purge keeps the state of every entity with an open case (Art. 20): looked up per entity.
CREATE INDEX cases_open_entity ON cases (entity_key) WHERE status = 'open';
