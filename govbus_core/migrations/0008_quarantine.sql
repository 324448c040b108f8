-- Whole payloads the bus set aside, kept for their provider (Art. 19: the provider corrects its
-- data) where size does not matter. A DLQ record is bounded (digest, size, a prefix) and names
-- its quarantine row by source position and digest; the payload itself is only here.
--   stage 'gate':    rejected by the gate (the reasons are those of the DLQ record);
--   stage 'produce': an output the broker refused for good (too large, invalid): set aside
--                    per record instead of retrying its batch.
-- A replayed batch inserts nothing twice: (topic, partition, offset, digest, output topic) is
-- unique. Personal data (Art. 25): purged after GOVBUS_QUARANTINE_RETENTION_DAYS.
CREATE TABLE quarantine (
    id               bigserial PRIMARY KEY,
    agency           text NOT NULL,          -- the provider, from the ingest topic
    stage            text NOT NULL CHECK (stage IN ('gate', 'produce')),
    rule             text NOT NULL,          -- the first violated rule, or the broker's error
    reason           text NOT NULL,
    topic            text NOT NULL,          -- where the record was read
    kafka_partition  int NOT NULL,
    kafka_offset     bigint NOT NULL,
    output_topic     text NOT NULL DEFAULT '',  -- stage 'produce': where it was to go
    event_id         text,
    record_key       bytea,
    payload          bytea,
    payload_bytes    bigint NOT NULL,
    payload_sha256   text NOT NULL,
    quarantined_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (topic, kafka_partition, kafka_offset, payload_sha256, output_topic)
);
CREATE INDEX quarantine_agency ON quarantine (agency, quarantined_at);
CREATE INDEX quarantine_age ON quarantine (quarantined_at);
