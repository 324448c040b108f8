-- A chain per shard (delivery_log/chain.py; Art. 24, 26, 31): each row is in the chain of the
-- ingest topic-partition its event came from ("<topic>/<partition>"), of "query" or of
-- "backfill"; rows logged before this migration are the legacy shard '' and keep their hashes.
-- Each shard numbers its rows from 1 and has its own head, written under its own lock, so two
-- hot-path workers (disjoint partitions) never wait for each other. A replay is still logged
-- once whatever shard it lands in: the key (event_id, recipient, channel) stays unique.
ALTER TABLE deliveries ADD COLUMN shard text NOT NULL DEFAULT '';
ALTER TABLE deliveries DROP CONSTRAINT deliveries_pkey;
ALTER TABLE deliveries ADD PRIMARY KEY (shard, seq);
-- newest first across shards (`govbus deliveries`)
CREATE INDEX deliveries_logged ON deliveries (logged_at);

-- one head per shard; the existing row is the legacy shard's
ALTER TABLE delivery_log_head ADD COLUMN shard text NOT NULL DEFAULT '';
ALTER TABLE delivery_log_head DROP COLUMN id;  -- and with it its key and its id = 1 check
ALTER TABLE delivery_log_head ADD PRIMARY KEY (shard);
ALTER TABLE delivery_log_head ALTER COLUMN shard DROP DEFAULT;

-- an archived month records every shard's boundary: its seq range and last hash in the file
ALTER TABLE log_archives ADD COLUMN shard text NOT NULL DEFAULT '';
ALTER TABLE log_archives DROP CONSTRAINT log_archives_pkey;
ALTER TABLE log_archives DROP CONSTRAINT log_archives_last_seq_key;
ALTER TABLE log_archives ADD PRIMARY KEY (month, shard);
ALTER TABLE log_archives ADD UNIQUE (shard, last_seq);
ALTER TABLE log_archives ALTER COLUMN shard DROP DEFAULT;
