"""The connection table every front door admits its connections through: whom it closes at the connection cap
(one of the peer holding the most, never one waiting for its verdict; first one that has not started, then one
that has brought no request to its end, then the one idle longest), and at the buffer cap (the largest holder).
Pure: no sockets, a fake clock; the doors are tested with real clients in test_spamd_server.py, test_http.py and
tests/hostile/test_milter_hostile.py."""

from __future__ import annotations

import logging

import pytest

from spamguard.plugins.connections import Connection, ConnectionTable, ServerLimits


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Table:
    """A table whose connections record being closed, with peers given by name."""

    def __init__(self, **limits: int) -> None:
        self.clock = Clock()
        self.table = ConnectionTable(ServerLimits(**limits), clock=self.clock)
        self.closed: list[str] = []

    def admit(self, name: str, peer: str, door: str = "spamd") -> Connection | None:
        self.clock.now += 1
        return self.table.admit(door, peer, lambda: self.closed.append(name))


def test_at_the_cap_the_peer_holding_most_loses_its_least_advanced_connection() -> None:
    t = Table(max_connections=5)
    mta = [t.admit(f"mta{i}", "uid 107", door="milter") for i in range(2)]
    for conn in mta:
        conn.started, conn.requests = True, 3  # negotiated, messages through it: an MTA's connections
    talking = t.admit("talking", "uid 1000")
    talking.started = True
    first_idle = t.admit("idle0", "uid 1000")
    t.admit("idle1", "uid 1000")
    assert len(t.table) == 5
    newcomer = t.admit("mta-new", "uid 107", door="milter")
    assert newcomer is not None and t.closed == ["idle0"]  # uid 1000 holds 3: its oldest silent one goes
    assert first_idle.closed_by_us == "connection-limit" and len(t.table) == 5
    t.table.release(first_idle)  # its handler ends: nothing more to count
    assert len(t.table) == 5
    newcomer.started = True
    for name in ("flood0", "flood1", "flood2"):  # uid 1000 opens more: each closes one of its own
        t.admit(name, "uid 1000")
    assert t.closed == ["idle0", "idle1", "flood0", "flood1"]  # never `talking` while silent ones are left
    assert t.table.closed_at_cap == {"connection-limit": 4}


def test_a_connection_waiting_for_its_verdict_is_never_closed() -> None:
    t = Table(max_connections=2)
    a, b = t.admit("a", "uid 1"), t.admit("b", "uid 1")
    with t.table.waiting(a), t.table.waiting(b):
        assert t.admit("c", "uid 2") is None  # all busy: the newcomer is refused, nobody closed
        assert t.closed == []
    assert not a.busy and not b.busy
    assert t.admit("d", "uid 2") is not None and t.closed == ["a"]


def test_a_peer_s_connections_go_in_order_not_started_then_no_request_then_idle_longest() -> None:
    t = Table()
    served, started, silent_old, silent_new = (t.admit(name, "x") for name in ("served", "started", "old", "new"))
    served.started, served.requests = True, 1
    started.started = True
    silent_old.last_active, silent_new.last_active = 5.0, 9.0
    assert sorted([served, started, silent_new, silent_old], key=Connection.standing) == [
        silent_old, silent_new, started, served,
    ]  # fmt: skip


def test_past_the_buffer_cap_the_largest_holder_is_closed(caplog: pytest.LogCaptureFixture) -> None:
    t = Table(max_buffer=1000)
    small, large = t.admit("small", "uid 107", door="milter"), t.admit("large", "uid 1000", door="http")
    assert t.table.hold(small, 300) and t.table.hold(large, 600)
    with caplog.at_level(logging.WARNING, logger="spamguard.connections"):
        assert t.table.hold(small, 500)  # 1,100 held: the largest holder (not this one) is closed
    assert t.closed == ["large"] and t.table.held == 500
    assert caplog.messages == [
        "connections hold 1100 bytes, over the cap of 1000: closed the largest holder (a http connection, 600 bytes, "
        "from uid 1000)"
    ]
    assert not t.table.hold(large, 700)  # closed already: its handler stops
    assert not t.table.hold(small, 1001)  # the largest itself
    assert t.closed == ["large", "small"] and t.table.held == 0


def test_release_gives_back_what_a_connection_held() -> None:
    t = Table()
    conn = t.admit("a", "x")
    t.table.hold(conn, 4096)
    t.table.release(conn)
    t.table.release(conn)  # twice (the table closed it, then its handler ended): counted once
    assert (len(t.table), t.table.held) == (0, 0)
