"""The trigger relay's transaction blocks: each row's place among its transaction's outbox rows
(every resource) and among those of its own resource, carried from batch to batch, counted
again from the start when a batch is sent again."""

from __future__ import annotations

from typing import Any

from govbus.producers.tx_order import SPAN_ROWS, Row, TransactionOrder

# (id, txid, agency, resource, op): transaction 7 writes two resources, 8 and 9 one each
OUTBOX = [(1, 7, "ps", "pop", "c"), (2, 7, "tax", "reg", "c"), (3, 8, "ps", "pop", "c"),
          (4, 7, "ps", "pop", "u"), (5, 7, "ps", "pop", "t"), (6, 9, "ps", "pop", "r"),
          (7, 7, "tax", "reg", "d"), (8, 7, "ps", "pop", "c")]


class Outbox:
    """A cursor that answers :data:`SPAN_ROWS` from :data:`OUTBOX`, counting its queries."""

    def __init__(self) -> None:
        self.found: list[tuple[int, int, bool]] = []
        self.scanned = 0

    def execute(self, statement: str, p: dict[str, Any]) -> None:
        assert statement == SPAN_ROWS
        spans = {t: (lo, hi) for t, lo, hi in zip(p["txids"], p["los"], p["his"], strict=True)}
        self.found = [(i, t, (a, r) == (p["agency"], p["resource"])) for i, t, a, r, _ in OUTBOX
                      if t in spans and spans[t][0] < i <= spans[t][1]]
        self.scanned += len(self.found)

    def fetchall(self) -> list[tuple[int, int, bool]]:
        return self.found


def own(ids: list[int]) -> list[Row]:
    return [Row(i, t, op) for i, t, a, r, op in OUTBOX if i in ids and (a, r) == ("ps", "pop")]


def orders(blocks: dict[int, dict[str, Any]]) -> dict[int, tuple[str, int, int]]:
    return {i: (b["id"], b["total_order"], b["data_collection_order"])
            for i, b in blocks.items()}


EXPECTED = {1: ("7", 1, 1), 3: ("8", 1, 1), 4: ("7", 3, 2), 5: ("7", 4, 3), 8: ("7", 6, 4)}


def test_one_batch_places_each_row_in_its_transaction() -> None:
    order, cur = TransactionOrder("ps", "pop"), Outbox()
    blocks = order.blocks(cur, own([1, 3, 4, 5, 6, 8]))
    assert orders(blocks) == EXPECTED  # the snapshot row (6) has no block


def test_a_transaction_across_batches_is_counted_on_not_again() -> None:
    order, cur = TransactionOrder("ps", "pop"), Outbox()
    first = order.blocks(cur, own([1, 3]))
    scanned = cur.scanned
    second = order.blocks(cur, own([4, 5, 6, 8]))
    assert orders({**first, **second}) == EXPECTED
    assert cur.scanned - scanned == 6  # 2, 4, 5, 7, 8 of transaction 7 and 6 of 9: not 1


def test_a_batch_sent_again_is_counted_from_the_start() -> None:
    order, cur = TransactionOrder("ps", "pop"), Outbox()
    order.blocks(cur, own([1, 3, 4]))
    again = order.blocks(cur, own([1, 3, 4, 5]))  # the broker failed: the same rows again
    assert orders(again) == {i: EXPECTED[i] for i in (1, 3, 4, 5)}


def test_a_relay_started_mid_transaction_counts_the_rows_before() -> None:
    assert orders(TransactionOrder("ps", "pop").blocks(Outbox(), own([8]))) == {
        8: EXPECTED[8]}


def test_an_empty_batch_asks_nothing() -> None:
    cur = Outbox()
    assert TransactionOrder("ps", "pop").blocks(cur, []) == {} and cur.scanned == 0
