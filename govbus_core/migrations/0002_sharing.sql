-- Sharing requests, grants, filings (Art. 18, 24, 25, 31); the delivery log; the current state
-- of each entity (for online query, Art. 17, and backfills).

CREATE TABLE sharing_requests (
    request_id          bigserial PRIMARY KEY,
    requester           text NOT NULL,
    resource_id         text NOT NULL REFERENCES catalogue_resources(resource_id),
    purpose             text NOT NULL,
    fields              text[] NOT NULL,
    commitment_ref      text NOT NULL,                 -- Art. 24 security commitment
    confidentiality_ref text,                          -- Art. 25, for sensitive fields
    masked_fields       text[] NOT NULL DEFAULT '{}',  -- sensitive, not covered (Art. 25)
    share_class         text NOT NULL,
    status              text NOT NULL CHECK (status IN ('pending', 'granted', 'rejected', 'refused')),
    requested_at        timestamptz NOT NULL DEFAULT now(),
    due_at              timestamptz NOT NULL,          -- working days, official calendar
    decided_at          timestamptz,
    decided_by          text,
    reason              text
);
CREATE INDEX sharing_requests_pending ON sharing_requests (due_at) WHERE status = 'pending';

CREATE TABLE grants (
    grant_id        bigserial PRIMARY KEY,
    request_id      bigint NOT NULL UNIQUE REFERENCES sharing_requests(request_id),
    recipient       text NOT NULL,
    resource_id     text NOT NULL REFERENCES catalogue_resources(resource_id),
    fields          text[] NOT NULL,                   -- delivered fields
    masked_fields   text[] NOT NULL DEFAULT '{}',      -- sensitive, not covered (Art. 25)
    valid_from      timestamptz NOT NULL DEFAULT now(),
    valid_until     timestamptz,
    revoked_at      timestamptz,
    revoked_by      text,
    revoke_reason   text,
    changed_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX grants_resource ON grants (resource_id) WHERE revoked_at IS NULL;

-- Art. 18: every response to a sharing request is filed with the municipal office.
CREATE TABLE filings (
    filing_id     bigserial PRIMARY KEY,
    request_id    bigint NOT NULL REFERENCES sharing_requests(request_id),
    requester     text NOT NULL,
    provider      text NOT NULL,
    resource_id   text NOT NULL,
    purpose       text NOT NULL,
    fields        text[] NOT NULL,
    requested_at  timestamptz NOT NULL,
    decision      text NOT NULL,                       -- granted | rejected | refused | revoked
    reason        text,
    decided_by    text NOT NULL,
    decided_at    timestamptz NOT NULL,
    filed_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE notifications (
    notification_id bigserial PRIMARY KEY,
    agency          text NOT NULL,
    kind            text NOT NULL,
    body            jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- The delivery log: append-only, hash-chained (row_hash = sha256(prev_hash || row)).
CREATE TABLE deliveries (
    seq           bigserial PRIMARY KEY,
    event_id      text NOT NULL,
    channel       text NOT NULL,                       -- exchange | query | backfill
    provider      text NOT NULL,
    recipient     text NOT NULL,
    resource_id   text NOT NULL,
    grant_id      bigint NOT NULL,
    fields        text[] NOT NULL,
    masked_fields text[] NOT NULL,
    topic         text,
    kafka_partition int,
    kafka_offset  bigint,
    delivered_at  timestamptz NOT NULL,
    logged_at     timestamptz NOT NULL DEFAULT now(),
    prev_hash     text NOT NULL,
    row_hash      text NOT NULL,
    UNIQUE (event_id, recipient, channel)
);

CREATE TABLE receipts (                                 -- the subscriber's confirmations
    event_id      text NOT NULL,
    recipient     text NOT NULL,
    channel       text NOT NULL DEFAULT 'exchange',
    received_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, recipient, channel)
);

CREATE TABLE entity_state (                             -- latest validated record per entity
    resource_id   text NOT NULL,
    entity_key    text NOT NULL,
    record        jsonb NOT NULL,
    event_id      text NOT NULL,
    locality      text NOT NULL,
    updated_ms    bigint NOT NULL,
    PRIMARY KEY (resource_id, entity_key)
);
