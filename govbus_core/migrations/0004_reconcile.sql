-- Reconciliation cases (Art. 8, 19, 20) and objections / complaints (Art. 19, 29).
-- Data minimisation: no record copies here, only the entity key and the conflicting values.

-- One row per case, written by the cases sink (consumers/cases_sink.py) from `reconcile.cases`,
-- upserted by case_key so that replays never duplicate. 'closed' = closed automatically because
-- the values came to agree (or were superseded by other values); 'resolved' = resolved by the
-- source-of-record agency through `govbus cases resolve`. Neither is ever reopened.
CREATE TABLE cases (
    id            bigserial PRIMARY KEY,
    case_key      text UNIQUE NOT NULL,
    entity_key    text NOT NULL,                 -- '<kind>:<identifier>', e.g. 'company:9136…'
    attribute     text NOT NULL,                 -- canonical attribute, e.g. company.name
    owner_agency  text NOT NULL,                 -- source of record that must verify (Art. 8)
    status        text NOT NULL CHECK (status IN ('open', 'closed', 'resolved')),
    values        jsonb NOT NULL,                -- [{agency, resource, value, event_id, occurred_ms, source_of_record}]
    opened_at     timestamptz NOT NULL,          -- when the disagreement was detected
    deadline      timestamptz NOT NULL,          -- working days, official calendar (Art. 20)
    closed_at     timestamptz,
    resolution    text,                          -- agreed | superseded | corrected | confirmed | dismissed
    note          text,
    resolved_by   text,
    other_agency  text,                          -- the agency whose value differs
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cases_owner_status ON cases (owner_agency, status);
CREATE INDEX cases_open_deadline ON cases (deadline) WHERE status = 'open';

-- Objections (Art. 19: an agency doubts data it received) and complaints against an agency
-- (Art. 29, handled by the municipal office). Answered by the agency they are against.
CREATE TABLE objections (
    id              bigserial PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('objection', 'complaint')),
    filed_by        text NOT NULL,
    against_agency  text NOT NULL,
    resource        text,
    entity_key      text,
    reason          text NOT NULL,
    filed_at        timestamptz NOT NULL,
    deadline        timestamptz NOT NULL,
    status          text NOT NULL CHECK (status IN ('open', 'answered', 'withdrawn')),
    answered_at     timestamptz,
    answer          text,
    answered_by     text,
    event_id        text,                        -- the record received, when an objection names one
    handler         text NOT NULL                -- information_center (objection) | municipal_office (complaint)
);
CREATE INDEX objections_against ON objections (against_agency, status);

-- The history of each objection / complaint: every step, append-only.
CREATE TABLE objection_events (
    id            bigserial PRIMARY KEY,
    objection_id  bigint NOT NULL REFERENCES objections(id),
    at            timestamptz NOT NULL DEFAULT now(),
    actor         text NOT NULL,
    action        text NOT NULL,                 -- filed | answered | withdrawn
    detail        text
);
CREATE INDEX objection_events_objection ON objection_events (objection_id, id);
