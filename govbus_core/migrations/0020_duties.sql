-- The duties app (stream_apps/duties/, docs/adr/0012-duties-on-faust.md): what it keeps in
-- PostgreSQL so that a `kill -9` loses nothing and repeats nothing.

-- A notice's id derives from its cause and recipient (sha256 of the control event's id and
-- the agency): the inbox keeps one row per id, whatever replays the app goes through. Rows
-- the control plane writes in its own transaction carry no id until the duties app adopts
-- them for the control event that tells the same thing (Art. 18: one notice per cause).
ALTER TABLE notifications ADD COLUMN notice_id text;
CREATE UNIQUE INDEX notifications_notice_id ON notifications (notice_id);

-- The relay's place in the audit ledger: the last sealed seq whose control events the broker
-- acknowledged. A fresh install starts after what is sealed now, so that history sealed before
-- the duties app existed gives no notices.
CREATE TABLE duty_relay_position (
    id       int PRIMARY KEY CHECK (id = 1),
    seq      bigint NOT NULL,
    moved_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO duty_relay_position (id, seq)
    SELECT 1, coalesce(max(seq), 0) FROM audit_ledger;

-- The yearly reports the duties app drafts on the first working day (Art. 26, 28): one draft
-- per year and kind, never replaced (the timer that fires twice drafts once).
CREATE TABLE duty_report_drafts (
    year        int NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('annual', 'evaluation')),
    body        jsonb NOT NULL,
    drafted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (year, kind)
);

-- The facts of time the timers published (a deadline passed, a review due): a timer that fires
-- again publishes only what is not here; one killed between publishing and recording publishes
-- the same event again, under the same id, and its notices keep theirs.
CREATE TABLE duty_timer_events (
    event_id      text PRIMARY KEY,
    published_at  timestamptz NOT NULL DEFAULT now()
);
