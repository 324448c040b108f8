-- The catalogue and the schema registry (Art. 7, 13). Schema ids here are the ids framed in
-- every event (Confluent wire format), so they never change once assigned.
CREATE TABLE catalogue_resources (
    resource_id      text PRIMARY KEY,               -- agency.resource
    provider         text NOT NULL,
    title            text NOT NULL,
    database_class   text NOT NULL,                  -- Art. 3
    share_class      text NOT NULL,                  -- Art. 15
    legal_basis      text,                           -- Art. 4
    update_period    interval NOT NULL,              -- Art. 7, 14
    reviewed         date,                           -- Art. 13
    metadata         jsonb NOT NULL,
    synced_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE schema_versions (
    schema_id        serial PRIMARY KEY,
    resource_id      text NOT NULL REFERENCES catalogue_resources(resource_id),
    version          int NOT NULL,
    fingerprint      text NOT NULL,
    contract         jsonb NOT NULL,                 -- the .avsc with its metadata
    envelope_schema  jsonb NOT NULL,                 -- what is framed on the wire
    registered_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (resource_id, version),
    UNIQUE (resource_id, fingerprint)
);

CREATE TABLE canonical_attributes (                  -- Art. 8: one datum, one source
    attribute        text NOT NULL,
    resource_id      text NOT NULL REFERENCES catalogue_resources(resource_id),
    field            text NOT NULL,
    source_of_record boolean NOT NULL,
    PRIMARY KEY (attribute, resource_id)
);
CREATE UNIQUE INDEX canonical_one_source ON canonical_attributes (attribute)
    WHERE source_of_record;
