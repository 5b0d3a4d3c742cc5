"""No sequence of logins, connects, drops, drains, logoffs and timers over-books a host, loses a
session, duplicates one, or leaves one stuck — checked with hypothesis against the real store."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from pathlib import Path

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from broker.store import Store

SEATS = {"h1": 2, "h2": 1}
USERS = ["u1", "u2", "u3", "u4"]
KEEP, PENDING = 50, 20


class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.path = Path(self.dir.name) / "s.db"
        self.loop = asyncio.new_event_loop()
        self.store = Store(self.path)
        self.run(self.store.open())
        self.now = 1_000_000.0
        self.accepting = {"h1": True, "h2": True}
        self.tickets = 0

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.store.close())
        self.loop.close()
        self.dir.cleanup()

    def live(self) -> list[tuple]:
        db = sqlite3.connect(self.path)
        try:
            return db.execute("SELECT id, login, host, state, viewers, deadline FROM sessions "
                              "WHERE state != 'ended'").fetchall()
        finally:
            db.close()

    @rule(user=st.sampled_from(USERS))
    def connect(self, user):
        hosts = [(h, s, self.accepting[h]) for h, s in SEATS.items()]
        back = {h for h, ok in self.accepting.items() if ok}
        self.run(self.store.sessions.assign("t", user, "p", hosts, now=self.now,
                 pending_timeout=PENDING,
                                   keep_seconds=KEEP, reconnect_hosts=back, max_in_flight=2))

    @rule(i=st.integers(0, 10))
    def redeem(self, i):
        live = self.live()
        if live:
            session = live[i % len(live)]
            self.tickets += 1
            # refused (UNKNOWN_SESSION) when its state takes no connect (ended meanwhile)
            self.run(self.store.sessions.redeem_many(
                [(f"t{self.tickets}", int(self.now) + 30, "t", session[1], session[0])],
                now=self.now))

    def viewers(self) -> list[tuple]:
        """(ticket id, session) of every viewer a gateway redeemed and still relays."""
        db = sqlite3.connect(self.path)
        try:
            return db.execute("SELECT ticket_id, session_id FROM viewers ORDER BY ticket_id"
                              ).fetchall()
        finally:
            db.close()

    @rule(i=st.integers(0, 10))
    def drop(self, i):
        viewers = self.viewers()
        if viewers:                   # the gateway that redeemed it reports it, by its ticket
            ticket_id, session_id = viewers[i % len(viewers)]
            self.run(self.store.sessions.disconnect_many([("t", session_id, ticket_id)],
                                                         now=self.now))

    @rule(i=st.integers(0, 10))
    def another_gateway_reports_a_drop(self, i):
        live = self.live()
        if live:                      # a ticket it never redeemed: nothing changes
            before = self.live()
            assert self.run(self.store.sessions.disconnect_many(
                [("t", live[i % len(live)][0], f"t{self.tickets + 1}")], now=self.now)) == [False]
            assert self.live() == before

    @rule(i=st.integers(0, 10))
    def logoff(self, i):
        live = self.live()
        if live:
            self.run(self.store.sessions.end("t", live[i % len(live)][0], now=self.now))

    @rule(host=st.sampled_from(list(SEATS)), accepting=st.booleans())
    def drain_or_enable(self, host, accepting):
        self.accepting[host] = accepting

    @rule(dt=st.integers(1, 120))
    def time_passes(self, dt):
        self.now += dt
        self.run(self.store.sessions.expire(self.now, gateway_lease=90))

    @invariant()
    def no_host_is_overbooked(self):
        for host, seats in SEATS.items():
            assert sum(1 for s in self.live() if s[2] == host) <= seats

    @invariant()
    def a_user_has_at_most_one_live_session(self):
        users = [s[1] for s in self.live()]
        assert len(users) == len(set(users))

    @invariant()
    def nothing_waits_forever(self):
        for _, _, _, state, viewers, deadline in self.live():
            if state in ("pending", "disconnected"):
                assert deadline is not None
            else:
                assert state == "connected" and viewers >= 1


Lifecycle.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
TestLifecycle = Lifecycle.TestCase
