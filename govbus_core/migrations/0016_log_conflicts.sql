-- Deliveries of an event id already in the log, to the same recipient by the same channel, but
-- of other bytes than the logged one (delivery_log/store.py). The log keeps one row per
-- (event_id, recipient, channel), so a replay is logged once; an event id reused for other
-- content must not hide behind that: each such delivery is kept here, and `govbus log verify`
-- reports it (event ids name one event, Art. 19; misuse, Art. 31).
CREATE TABLE log_conflicts (
    event_id        text NOT NULL,
    recipient       text NOT NULL,
    channel         text NOT NULL,
    shard           text NOT NULL,
    logged_sha256   text NOT NULL,   -- what the log row says was delivered
    delivered_sha256 text NOT NULL,  -- what was delivered again under the same key
    seen_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, recipient, channel, delivered_sha256)
);
