"""The delivery log: every delivery, once, in a tamper-evident hash chain (Art. 24, 26, 31).

Its records, hashes and checks are pure (:mod:`govbus.delivery_log.chain`); appending,
verifying, listing and receipts are in PostgreSQL (:mod:`govbus.delivery_log.store`). The log
and its verifier are kept together, so that what is written and what is checked cannot drift
apart. Depends on :mod:`govbus.core` only.
"""

from govbus.delivery_log.chain import (
    CHANNELS,
    GENESIS,
    ChainChecker,
    Head,
    Key,
    LogEntry,
    LoggedRow,
    MalformedEntry,
    Problem,
    VerifyReport,
    canonical,
    chain,
    dedupe,
    entry,
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

__all__ = ["CHANNELS", "GENESIS", "AppendResult", "ChainChecker", "Head", "Key", "LogEntry",
           "LogWriter", "LoggedRow", "MalformedEntry", "Problem", "VerifyReport", "append",
           "canonical", "chain", "confirm_receipts", "dedupe", "entry", "list_deliveries",
           "parse_entry", "row_hash", "verify"]
