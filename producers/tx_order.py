"""Where an outbox row stands in its source transaction: the envelope's ``transaction`` block
(Debezium's ``id``, ``total_order``, ``data_collection_order``) for the trigger relay.

A transaction's outbox rows become visible together, at its commit, and their ids follow the
order of its statements; so a row's place is the count of the transaction's rows up to its id:
every row (any table, any resource: ``total_order``) and the rows of the relay's own resource
(``data_collection_order``), both from 1. :class:`TransactionOrder` counts them with one query
a batch over the ``(txid, id)`` index and carries each transaction's count to the next batch,
so a transaction spanning many batches is counted once, not again for each.

The positions are exact while the transaction's rows are in the outbox: rows pruned before the
relay has read the transaction's last row are not counted, and the positions after them move
down (prune published rows well behind the backlog). Snapshot rows get no block (Debezium
sends snapshot reads without one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

#: every row of the batch's transactions in the id ranges not yet counted, in id order
SPAN_ROWS = ("SELECT e.id, e.txid, e.agency = %(agency)s AND e.resource = %(resource)s "
             "FROM govbus_outbox.events e JOIN unnest(%(txids)s::bigint[], %(los)s::bigint[], "
             "%(his)s::bigint[]) AS w(txid, lo, hi) ON e.txid = w.txid AND e.id > w.lo "
             "AND e.id <= w.hi ORDER BY e.id")


class Counted(NamedTuple):
    """A transaction's rows counted up to ``last_id``: all of them, and the resource's."""

    last_id: int
    total: int
    own: int


class Row(NamedTuple):
    """What the count needs of an outbox row."""

    id: int
    txid: int
    op: str


class TransactionOrder:
    """The transaction blocks of one resource's outbox rows, batch by batch."""

    def __init__(self, agency: str, resource: str) -> None:
        self.agency, self.resource = agency, resource
        self.counted: dict[int, Counted] = {}  # the last batch's transactions only

    def spans(self, rows: Sequence[Row]) -> dict[int, tuple[int, int]]:
        """Per transaction of ``rows``, the id range ``(lo, hi]`` still to count: from its
        count carried over, unless a row of it lies at or below that (a batch sent again),
        then from the start."""
        spans: dict[int, tuple[int, int]] = {}
        for row in rows:
            lo, hi = spans.get(row.txid, (None, row.id))
            spans[row.txid] = (row.id if lo is None else min(lo, row.id), max(hi, row.id))
        out = {}
        for txid, (first, hi) in spans.items():
            held = self.counted.get(txid)
            out[txid] = (held.last_id if held and held.last_id < first else 0, hi)
        return out

    def blocks(self, cur: Any, rows: Sequence[Row]) -> dict[int, dict[str, Any]]:
        """Row id → transaction block, for the batch ``rows`` (id order) of the resource."""
        if not rows:
            return {}
        spans = self.spans(rows)
        txids = list(spans)
        cur.execute(SPAN_ROWS, {"agency": self.agency, "resource": self.resource,
                                "txids": txids, "los": [spans[t][0] for t in txids],
                                "his": [spans[t][1] for t in txids]})
        return self.count(rows, spans, cur.fetchall())

    def count(self, rows: Sequence[Row], spans: dict[int, tuple[int, int]],
              found: Sequence[tuple[int, int, bool]]) -> dict[int, dict[str, Any]]:
        """The blocks from the query's rows ``(id, txid, of this resource)`` in id order."""
        running = {t: self.counted[t] if lo and t in self.counted else Counted(0, 0, 0)
                   for t, (lo, _) in spans.items()}
        at: dict[int, tuple[int, int]] = {}
        for row_id, txid, own in found:
            held = running[txid]
            running[txid] = Counted(row_id, held.total + 1, held.own + int(own))
            if own:
                at[row_id] = (running[txid].total, running[txid].own)
        self.counted = running
        return {r.id: {"id": str(r.txid), "total_order": at[r.id][0],
                       "data_collection_order": at[r.id][1]}
                for r in rows if r.op != "r" and r.id in at}
