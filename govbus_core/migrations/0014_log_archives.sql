-- Months of the delivery log archived out of the database (delivery_log/archive.py): the seq
-- range, the hash of its last row (where verification of the rows left starts from) and the
-- SHA-256 of the archive file that holds them, verified before the rows were deleted.
CREATE TABLE log_archives (
    month         text PRIMARY KEY,
    first_seq     bigint NOT NULL,
    last_seq      bigint NOT NULL UNIQUE,
    last_row_hash text NOT NULL,
    sha256        text NOT NULL,
    file          text NOT NULL,
    archived_at   timestamptz NOT NULL DEFAULT now()
);
