-- Signed checkpoints of the delivery log and the audit ledger (delivery_log/checkpoints.py;
-- Art. 24, 26, 31): the head of every chain at a time, linked to the checkpoint before, signed
-- with the information center's key. `body` is exactly the signed JSON. The agencies keep the
-- checkpoints they receive in their own databases: a checkpoint deleted or altered here is
-- still held there.
CREATE TABLE log_checkpoints (
    number     bigint PRIMARY KEY,
    at         timestamptz NOT NULL,
    body       text NOT NULL,
    key_id     text NOT NULL,
    signature  bytea NOT NULL,
    digest     text NOT NULL UNIQUE
);

-- What was delivered, byte for byte: the leaf hash of the delivery's signature (topic, key,
-- value and event id; govbus_core/signatures.py), in the row's chained content. A receipt
-- records the hash of what the recipient received, so log and receipt can be compared.
-- Rows logged before this migration have none (and their chained content does not name it).
ALTER TABLE deliveries ADD COLUMN content_sha256 text;
ALTER TABLE receipts ADD COLUMN content_sha256 text;
