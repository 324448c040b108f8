"""``runtime.free_port`` skips a port that is bound though nothing listens on it (what a
connection's TIME_WAIT leaves for a minute: the broker's bind then failed, "address in use")."""

from __future__ import annotations

import socket

from govbus import runtime


def test_a_bound_port_without_a_listener_is_not_free() -> None:
    first = runtime.free_port(41000)
    with socket.socket() as held:
        held.bind(("127.0.0.1", first))  # bound, not listening: connect() is refused
        chosen = runtime.free_port(first)
        assert chosen != first
        with socket.socket() as s:
            s.bind(("127.0.0.1", chosen))  # and the one chosen can be bound
