-- Every event id the gate accepted, with a digest of the record that carried it: an event id
-- names one event, so a record reusing an accepted id for other content is rejected
-- (envelope.event_id_reused, Art. 19), while the same record replayed passes again (a retry,
-- a replayed batch). No values, no entity key: the id, a 16-byte BLAKE2b digest of the framed
-- record, the resource and the time. Kept for GOVBUS_ACCEPTED_EVENTS_RETENTION_DAYS: the window in
-- which a reused id is recognised.
CREATE TABLE accepted_events (
    event_id     text PRIMARY KEY,
    digest       bytea NOT NULL,
    resource_id  text NOT NULL,
    accepted_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accepted_events_age ON accepted_events (accepted_at);
