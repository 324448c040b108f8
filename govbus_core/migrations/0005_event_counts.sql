-- Durable daily counts of what the gate judged, for the yearly evaluation (Art. 28: quantity,
-- quality, update timeliness) and the staleness of each resource (Art. 14, 31). Prometheus
-- counters reset with a process and are not kept for a year; these rows are. No event ids:
-- one row per day, agency, resource, outcome and rule.
CREATE TABLE event_counts (
    day          date NOT NULL,
    agency       text NOT NULL,                 -- from the ingest topic
    resource_id  text NOT NULL,
    outcome      text NOT NULL CHECK (outcome IN ('accepted', 'rejected')),
    rule         text NOT NULL DEFAULT '',       -- first violated rule of a rejection
    events       bigint NOT NULL,
    last_at      timestamptz NOT NULL,           -- when the gate judged the latest of them
    PRIMARY KEY (day, agency, resource_id, outcome, rule)
);
CREATE INDEX event_counts_resource ON event_counts (resource_id, outcome, last_at);

-- The last batch counted per input partition: a batch replayed after a crash between the
-- count and the Kafka commit starts inside [first_offset, next_offset) and is not counted
-- twice. An offset below first_offset means the topic was recreated (a memory-only broker
-- restarted) and counts again.
CREATE TABLE event_count_offsets (
    topic            text NOT NULL,
    kafka_partition  int NOT NULL,
    first_offset     bigint NOT NULL,
    next_offset      bigint NOT NULL,
    PRIMARY KEY (topic, kafka_partition)
);
