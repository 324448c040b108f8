-- Deliveries are framed Avro: each grant's projection of a resource version is a schema of its
-- own, registered under the delivery topic's subject (deliver.<recipient>.<resource>-value),
-- with an id from the contracts' sequence so that one id names one schema across the registry.
-- Rows are derived from the catalogue and the grants, written by the bus when a projection is
-- first delivered, and never changed: a schema id keeps its meaning.
CREATE TABLE delivery_schemas (
    schema_id        integer PRIMARY KEY
                     DEFAULT nextval('schema_versions_schema_id_seq'::regclass),
    subject          text NOT NULL,
    recipient        text NOT NULL,
    resource_id      text NOT NULL,
    resource_version integer NOT NULL,   -- the contract version it projects
    version          integer NOT NULL,   -- its version within the subject
    fingerprint      text NOT NULL,
    schema           jsonb NOT NULL,
    registered_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (subject, fingerprint),
    UNIQUE (subject, version)
);

-- How a grant's deliveries are written: NULL is framed Avro, 'json' the same envelope as a
-- JSON document, for agencies without Avro tooling. NULL, not 'avro', so that the requests and
-- grants recorded before this column existed keep matching their audit-ledger images.
ALTER TABLE sharing_requests ADD COLUMN delivery_format text
    CHECK (delivery_format IN ('json'));
ALTER TABLE grants ADD COLUMN delivery_format text CHECK (delivery_format IN ('json'));
