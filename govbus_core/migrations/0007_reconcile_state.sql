-- The reconciler's state (Art. 8, 19, 20): per entity, for each canonical attribute, the
-- latest value each agency holds, the open cases and the last closed ones — the JSON document
-- of stream_apps.reconcile_rules (EntityState). Written in the same transaction that reads it,
-- under a lock per input partition, after the batch's case messages were acknowledged; the
-- input offsets are committed to Kafka only after this commit. A crash therefore replays a
-- batch whose state may already be here, which the rules absorb (a value not newer than the
-- one held changes nothing and re-emits its cases).
-- Holds canonical values only (names, addresses, …: data minimisation), never whole
-- records; one row per entity the reconciler has seen.
CREATE TABLE reconcile_state (
    reconciler  text NOT NULL,   -- GOVBUS_RECONCILER_ID: each reconciler group keeps its own
    entity      text NOT NULL,   -- canonical entity id: 'company:<code>', 'person:<id>'
    state       text NOT NULL,   -- JSON: {attribute: state}
    PRIMARY KEY (reconciler, entity)
);
