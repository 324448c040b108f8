"""The delivery log: every delivery, once, in a tamper-evident hash chain (Art. 24, 26, 31).

Its records, hashes and checks are pure (:mod:`govbus.delivery_log.chain`); appending,
verifying, listing and receipts are in PostgreSQL (:mod:`govbus.delivery_log.store`). The log is
a chain per shard (the ingest partition a delivery's event came from; ``query``; ``backfill``),
each written under its own lock, and every checkpoint covers every shard's head. The log
and its verifier are kept together, so that what is written and what is checked cannot drift
apart. Depends on :mod:`govbus.core` only.
"""

from govbus.delivery_log.chain import (
    BACKFILL_SHARD,
    CHANNELS,
    GENESIS,
    LEGACY,
    QUERY_SHARD,
    ChainChecker,
    Head,
    Key,
    LogEntry,
    LoggedRow,
    MalformedEntry,
    Problem,
    ShardedChecker,
    VerifyReport,
    canonical,
    chain,
    chain_shards,
    dedupe,
    entry,
    ingest_shard,
    parse_entry,
    row_hash,
)
from govbus.delivery_log.store import (
    AppendResult,
    LogWriter,
    append,
    confirm_receipts,
    list_deliveries,
    verify,
)

__all__ = ["BACKFILL_SHARD", "CHANNELS", "GENESIS", "LEGACY", "QUERY_SHARD", "AppendResult",
           "ChainChecker", "Head", "Key", "LogEntry", "LogWriter", "LoggedRow",
           "MalformedEntry", "Problem", "ShardedChecker", "VerifyReport", "append",
           "canonical", "chain", "chain_shards", "confirm_receipts", "dedupe", "entry",
           "ingest_shard", "list_deliveries", "parse_entry", "row_hash", "verify"]
