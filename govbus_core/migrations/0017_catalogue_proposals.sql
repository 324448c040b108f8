-- Catalogue changes are proposals (Art. 13): an agency proposes a new or changed contract of a
-- resource it provides (Art. 4: who applies manages it); the checks of Art. 4, 7, 8, 12 and the
-- compatibility with every registered version run at once and their findings are kept with the
-- proposal; the information center approves (then, and only then, the contract is registered
-- in catalogue_resources and schema_versions) or rejects it with a reason. A proposal is
-- decided once. Each agency confirms the yearly review of its entries (Art. 13).
CREATE TABLE catalogue_proposals (
    proposal_id   bigserial PRIMARY KEY,
    resource_id   text NOT NULL,                   -- agency.resource
    agency        text NOT NULL,                   -- the proposer: the resource's provider
    kind          text NOT NULL CHECK (kind IN ('new', 'change')),
    base_version  int,                             -- latest registered version when proposed
    base_digest   text,                            -- sha256 of the registered entry then
    contract      jsonb NOT NULL,                  -- the .avsc with its metadata
    fingerprint   text NOT NULL,                   -- of the Avro schema (metadata stripped)
    note          text,
    findings      jsonb NOT NULL,                  -- the checks' findings (Art. 4, 7, 8, 12, 13)
    errors        int NOT NULL CHECK (errors >= 0),
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'approved', 'rejected')),
    proposed_at   timestamptz NOT NULL DEFAULT now(),
    checked_at    timestamptz NOT NULL DEFAULT now(),
    decided_at    timestamptz,
    decided_by    text,
    reason        text,
    schema_id     int REFERENCES schema_versions(schema_id),
    version       int,
    CHECK ((status = 'pending') = (decided_at IS NULL)),
    CHECK ((status = 'pending') = (decided_by IS NULL)),
    CHECK (status <> 'rejected' OR length(btrim(coalesce(reason, ''))) > 0),
    CHECK ((status = 'approved') = (schema_id IS NOT NULL)),
    CHECK (status <> 'approved' OR errors = 0)
);
CREATE INDEX catalogue_proposals_by_agency ON catalogue_proposals (agency, proposal_id);
CREATE INDEX catalogue_proposals_pending ON catalogue_proposals (resource_id)
    WHERE status = 'pending';

CREATE TABLE catalogue_reviews (
    review_id     bigserial PRIMARY KEY,
    resource_id   text NOT NULL REFERENCES catalogue_resources(resource_id),
    agency        text NOT NULL,                   -- the provider confirming its review
    note          text NOT NULL CHECK (length(btrim(note)) > 0),
    reviewed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX catalogue_reviews_by_resource ON catalogue_reviews (resource_id, reviewed_at);

-- Audited as every control-plane table (migration 0012, delivery_log/audit.py AUDITED): a
-- proposal is inserted, then decided once (or its findings refreshed while pending); a review
-- is appended and never changed.
CREATE TRIGGER govbus_audit AFTER INSERT OR UPDATE OR DELETE ON catalogue_proposals
    FOR EACH ROW EXECUTE FUNCTION govbus_audit('proposal_id', '', '');
CREATE TRIGGER govbus_audit AFTER INSERT OR UPDATE OR DELETE ON catalogue_reviews
    FOR EACH ROW EXECUTE FUNCTION govbus_audit('review_id', '', '');
