"""What a logical capture's batch confirms: whole transactions the broker acknowledged."""

from __future__ import annotations

from govbus.producers.logical import Batch


def batch(answers: dict[str, object]) -> Batch:
    """Events a..e in three transactions: (a, b) ends at 100, (c) at 200, (d, e) at 300."""
    return Batch(sent=list("abcde"), commits=[(100, 2), (200, 3), (300, 5)],
                 results=dict(answers))


def test_everything_acknowledged_confirms_the_last_commit() -> None:
    assert batch(dict.fromkeys("abcde")).acknowledged() == (5, 300)


def test_a_failure_stops_the_prefix_at_the_transaction_before_it() -> None:
    assert batch({"a": None, "b": None, "c": None, "d": "timed out", "e": None}
                 ).acknowledged() == (3, 200)
    assert batch({"a": None, "b": "timed out"}).acknowledged() == (1, 0)


def test_an_unanswered_event_counts_as_unacknowledged() -> None:
    assert batch({"a": None, "b": None, "d": None, "e": None}).acknowledged() == (2, 100)


def test_transactions_without_events_are_confirmed_with_their_predecessors() -> None:
    empty = Batch(sent=[], commits=[(100, 0), (150, 0)])
    assert empty.acknowledged() == (0, 150)
    tail = Batch(sent=["a"], commits=[(100, 1), (150, 1)], results={"a": None})
    assert tail.acknowledged() == (1, 150)


def test_exposed_when_a_message_lies_at_or_below_the_confirmed_position() -> None:
    pending = Batch(sent=["a"], commits=[(300, 1)])
    assert pending.exposed(data_start=250, confirmed=250)  # an older transaction's Begin
    assert pending.exposed(data_start=120, confirmed=250)
    assert not pending.exposed(data_start=310, confirmed=250)  # past it: psycopg2 waits
    settled = Batch(sent=["a"], commits=[(300, 1)])
    assert not settled.exposed(data_start=120, confirmed=300)  # all confirmed already
    assert not Batch().exposed(data_start=0, confirmed=0)
