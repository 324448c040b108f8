-- The delivery log's head: seq and row_hash of the last row the log writer appended
-- (consumers/delivery_log.py), updated in the same transaction as the rows. Without it, deleting
-- the newest rows of a hash chain leaves a shorter chain that still verifies; with it, `verify`
-- sees the log end before its head. Anchor the head outside the database (print it in the
-- yearly report, Art. 26) to make rewriting the whole chain evident too.
CREATE TABLE delivery_log_head (
    id        int PRIMARY KEY CHECK (id = 1),
    seq       bigint NOT NULL,
    row_hash  text NOT NULL,
    logged_at timestamptz
);

INSERT INTO delivery_log_head (id, seq, row_hash, logged_at)
SELECT 1, COALESCE(d.seq, 0), COALESCE(d.row_hash, repeat('0', 64)), d.logged_at
FROM (SELECT 1) AS one
LEFT JOIN (SELECT seq, row_hash, logged_at FROM deliveries ORDER BY seq DESC LIMIT 1) AS d
       ON true;

-- `govbus deliveries --recipient B` and per-provider listings, newest first.
CREATE INDEX deliveries_recipient ON deliveries (recipient, seq);
CREATE INDEX deliveries_provider ON deliveries (provider, seq);
