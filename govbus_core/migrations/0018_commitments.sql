-- Security commitments (Art. 24) and confidentiality agreements (Art. 25) as registered
-- documents (govbus_core/commitments.py, docs/sharing.md). A request names a registered, valid
-- commitment of its own agency whose scope covers the resource; its grant keeps the references,
-- the use restrictions of Art. 24 and the date by which the data must be provided (Art. 31),
-- and lapses when its commitment or agreement expires or is withdrawn.
CREATE TABLE commitments (
    number           text PRIMARY KEY CHECK (number ~ '^[^[:space:][:cntrl:];=,/?#%\\]{1,64}$'),
    kind             text NOT NULL CHECK (kind IN ('security', 'confidentiality')),
    agency           text NOT NULL,
    resources        text[] NOT NULL CHECK (cardinality(resources) > 0),  -- agency.resource
    purpose          text NOT NULL CHECK (purpose <> ''),
    restrictions     text[] NOT NULL,                   -- Art. 24: duties, no third parties, …
    signed_on        date NOT NULL,
    valid_until      timestamptz NOT NULL,
    document_sha256  text NOT NULL CHECK (document_sha256 ~ '^[0-9a-f]{64}$'),
    registered_by    text NOT NULL,
    registered_at    timestamptz NOT NULL DEFAULT now(),
    withdrawn_at     timestamptz,
    withdrawn_by     text,
    withdraw_reason  text,
    CHECK (valid_until::date >= signed_on),
    CHECK ((withdrawn_at IS NULL) = (withdrawn_by IS NULL))
);
CREATE INDEX commitments_agency ON commitments (agency, number);

-- What a grant rests on, kept with it: the commitment and agreement (NULL: a grant resting
-- on no registered document, which ends by its own valid_until only), the restrictions that travel in each delivery's
-- govbus-use header, and the date by which the data must be provided (Art. 31).
ALTER TABLE grants ADD COLUMN commitment_no text REFERENCES commitments(number);
ALTER TABLE grants ADD COLUMN confidentiality_no text REFERENCES commitments(number);
ALTER TABLE grants ADD COLUMN restrictions text[];
ALTER TABLE grants ADD COLUMN provide_by timestamptz;
CREATE INDEX grants_commitment ON grants (commitment_no);
CREATE INDEX grants_confidentiality ON grants (confidentiality_no);
-- Art. 18: the filing of a response names what the request rested on.
ALTER TABLE filings ADD COLUMN commitment_no text;
ALTER TABLE filings ADD COLUMN confidentiality_no text;

-- The audit ledger (migration 0012): the commitments are audited. The rows of grants and
-- filings present now gain NULL columns; audit verify compares a table's rows with the
-- ledger's last record of them with NULL and absent columns alike, so they still match.
CREATE TRIGGER govbus_audit AFTER INSERT OR UPDATE OR DELETE ON commitments
    FOR EACH ROW EXECUTE FUNCTION govbus_audit('number', '', '');
