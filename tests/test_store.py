"""The store, on the engine the suite runs on: decisions that must not race are atomic, also
across two brokers' worth of connections on one database (a SQLite file, or PostgreSQL)."""

import asyncio
import random

import pytest

from broker.engine import PostgresEngine
from broker.session_states import State
from broker.placement import OwnHostDown, PoolBusy, PoolFull
from broker.store import Assignment, Redemption, Store
from broker.store.accounts import accept_step_in

NOW = 1_800_000_000.0


@pytest.fixture
async def stores(tmp_path, database):
    options = database()
    if options:
        password = open(options["database_password_file"]).read()
        a, b = (Store(PostgresEngine(options["database"], password, connections=4))
                for _ in range(2))
    else:
        a, b = Store(tmp_path / "s.db"), Store(tmp_path / "s.db")
    await a.open()
    await b.open()
    yield a, b
    await a.close()
    await b.close()


async def test_concurrent_logins_from_two_brokers_never_overbook(stores):
    hosts = [("h1", 3, True), ("h2", 2, True)]

    async def one(store, i):
        return await store.sessions.assign("t", f"user{i}", "p", hosts, now=NOW, pending_timeout=60,
                                  keep_seconds=60, rng=random.Random(i))
    results = await asyncio.gather(*(one(stores[i % 2], i) for i in range(12)))
    placed = [r for r in results if isinstance(r, Assignment)]
    assert len(placed) == 5 and all(isinstance(r, PoolFull) for r in results if r not in placed)
    per_host = {h: sum(1 for r in placed if r.host_id == h) for h, _, _ in hosts}
    assert per_host == {"h1": 3, "h2": 2}


async def test_a_returning_user_gets_the_same_session(stores):
    a, _ = stores
    first = await a.sessions.assign("t", "anna", "p", [("h1", 1, True)], now=NOW,
                                    pending_timeout=60,
                           keep_seconds=60)
    again = await a.sessions.assign("t", "anna", "p", [("h1", 1, True)], now=NOW + 1,
                                    pending_timeout=60,
                           keep_seconds=60)
    assert again.session_id == first.session_id and again.reconnect


async def redeem(store: Store, ticket_id: str, tenant: str, login: str,
                 session_id: str) -> Redemption:
    """One ticket's redemption, as a gateway's batch of one."""
    [decided] = await store.sessions.redeem_many(
        [(ticket_id, int(NOW) + 30, tenant, login, session_id)], now=NOW)
    return decided


async def test_a_ticket_is_redeemed_once_across_brokers(stores):
    a, b = stores
    s = await a.sessions.assign("t", "anna", "p", [("h1", 1, True)], now=NOW, pending_timeout=60,
                                keep_seconds=60)
    assert await redeem(a, "tk", "t", "anna", s.session_id) is Redemption.RECORDED
    assert await redeem(b, "tk", "t", "anna", s.session_id) is Redemption.REPLAYED


async def test_a_ticket_for_another_tenants_session_is_refused(stores):
    a, _ = stores
    s = await a.sessions.assign("t", "anna", "p", [("h1", 1, True)], now=NOW, pending_timeout=60,
                                keep_seconds=60)
    assert await redeem(a, "tk", "other", "anna", s.session_id) is Redemption.UNKNOWN_SESSION


async def test_a_batch_of_redemptions_decides_each_on_its_own_in_one_transaction(stores):
    """A gateway's redemptions of one moment, with a ticket twice, a session of another tenant,
    and the same batch's tickets raced by a second broker: each answer is its own."""
    a, b = stores
    hosts = [("h1", 10, True)]
    placed = [await a.sessions.assign("t", user, "p", hosts, now=NOW, pending_timeout=60,
                                      keep_seconds=60) for user in ("anna", "bernd", "clara")]
    anna, bernd, clara = (p.session_id for p in placed)
    batch = [("t1", int(NOW) + 30, "t", "anna", anna),
             ("t1", int(NOW) + 30, "t", "anna", anna),           # the same ticket again
             ("t2", int(NOW) + 30, "other", "bernd", bernd),     # not that tenant's session
             ("t3", int(NOW) + 30, "t", "clara", clara)]
    assert await a.sessions.redeem_many(batch, now=NOW) == [
        Redemption.RECORDED, Redemption.REPLAYED, Redemption.UNKNOWN_SESSION,
        Redemption.RECORDED]
    # what was refused for an unknown session is not spent; what was redeemed is, everywhere
    assert await b.sessions.redeem_many([("t2", int(NOW) + 30, "t", "bernd", bernd),
                                         ("t3", int(NOW) + 30, "t", "clara", clara)],
                                        now=NOW) == [Redemption.RECORDED, Redemption.REPLAYED]
    # two brokers redeem the same fifty tickets at once: each is redeemed exactly once
    many = [await a.sessions.assign("t", f"u{i}", "p", [("h2", 100, True)], now=NOW,
                                    pending_timeout=60, keep_seconds=60) for i in range(50)]
    tickets = [(f"m{i}", int(NOW) + 30, "t", f"u{i}", s.session_id) for i, s in enumerate(many)]
    first, second = await asyncio.gather(a.sessions.redeem_many(tickets, now=NOW),
                                         b.sessions.redeem_many(tickets[::-1], now=NOW))
    second = second[::-1]
    assert all({x, y} == {Redemption.RECORDED, Redemption.REPLAYED}
               for x, y in zip(first, second))


async def test_batches_over_the_same_sessions_never_wait_for_each_other_in_a_circle(stores):
    """Two gateways' batches — redemptions, disconnects, logon phases — and the lease renewals
    write the same sessions' rows in different orders, all at once, from two brokers: each is
    done, none is chosen as a deadlock's victim (PostgreSQL would refuse it after a second)."""
    a, b = stores
    placed = [await a.sessions.assign("t", f"u{i}", "p", [("h", 100, True)], now=NOW,
                                      pending_timeout=60, keep_seconds=60) for i in range(12)]
    ids = [p.session_id for p in placed]
    rnd = random.Random(4)

    def shuffled() -> list[str]:
        out = list(ids)
        rnd.shuffle(out)
        return out

    login = {p.session_id: f"u{i}" for i, p in enumerate(placed)}
    for round_ in range(6):
        work = []
        for k in range(4):
            store = (a, b)[k % 2]
            order = shuffled()
            work.append(store.sessions.redeem_many(
                [(f"r{round_}-{k}-{s}", int(NOW) + 30, "t", login[s], s) for s in order],
                now=NOW))
            work.append(store.sessions.disconnect_many(
                [("t", s, f"r{round_}-{k}-{s}") for s in shuffled()], now=NOW))
            work.append(store.sessions.add_logons([("t", s, {"redeem": 0.001})
                                                   for s in shuffled()]))
            work.append(store.sessions.held([("t", s, f"r{round_}-{k}-{s}", False)
                                              for s in shuffled()], now=NOW))
        results = await asyncio.gather(*work, return_exceptions=True)
        assert [r for r in results if isinstance(r, BaseException)] == []   # no deadlock victim
        assert {x for batch in results[0::4] for x in batch} == {Redemption.RECORDED}
    states = {row.state for row in await a.sessions.live("t")}
    assert len(await a.sessions.live("t")) == 12
    assert states <= {State.CONNECTED, State.DISCONNECTED}


async def test_sessions_run_their_lifecycle_and_free_their_seat(stores):
    a, _ = stores
    s = await a.sessions.assign("t", "anna", "p", [("h1", 1, True)], now=NOW, pending_timeout=60,
                                keep_seconds=100)
    await redeem(a, "tk", "t", "anna", s.session_id)
    assert (await a.sessions.live("t"))[0].state is State.CONNECTED
    await a.sessions.disconnect_many([("t", s.session_id, "tk")], now=NOW + 10)
    assert (await a.sessions.live("t"))[0].state is State.DISCONNECTED
    assert await a.sessions.expire(NOW + 50) == 0
    assert await a.sessions.expire(NOW + 111) == 1
    assert await a.sessions.live("t") == []
    other = await a.sessions.assign("t", "bernd", "p", [("h1", 1, True)], now=NOW + 112,
                                    pending_timeout=60,
                           keep_seconds=60)
    assert other is not None


async def test_a_pending_session_whose_ticket_is_never_used_ends(stores):
    a, _ = stores
    await a.sessions.assign("t", "anna", "p", [("h1", 1, True)], now=NOW, pending_timeout=60,
                            keep_seconds=60)
    assert await a.sessions.expire(NOW + 61) == 1


async def test_a_totp_step_is_accepted_once_even_concurrently(stores):
    a, b = stores
    await a.accounts.set_enrolment("t", "anna", "sealed")
    def accept(store: Store, step: int):
        return store.unit(lambda db: accept_step_in(db, "t", "anna", step, confirm=False))

    results = await asyncio.gather(*(accept(s, 100)
                                     for s in (a, b, a, b)))
    assert sorted(results) == [False, False, False, True]
    assert not await accept(a, 99)


async def test_logons_in_flight_are_capped_per_host(stores):
    a, _ = stores
    for i in range(2):
        await a.sessions.assign("t", f"u{i}", "p", [("h1", 10, True)], now=NOW, pending_timeout=60,
                       keep_seconds=60, max_in_flight=2)
    assert isinstance(await a.sessions.assign("t", "u9", "p", [("h1", 10, True)], now=NOW,
                                     pending_timeout=60, keep_seconds=60, max_in_flight=2),
                      PoolBusy)


async def test_a_connected_session_no_gateway_vouches_for_becomes_disconnected(stores):
    a, _ = stores
    s = await a.sessions.assign("t", "anna", "p", [("h1", 1, True)], now=NOW, pending_timeout=60,
                       keep_seconds=100)
    other = await a.sessions.assign("t", "bernd", "p", [("h1", 2, True)], now=NOW,
                                    pending_timeout=60,
                           keep_seconds=100)
    await redeem(a, "tk1", "t", "anna", s.session_id)
    await redeem(a, "tk2", "t", "bernd", other.session_id)
    await a.sessions.held([("t", other.session_id, "tk2", False)], now=NOW + 80)
    await a.sessions.expire(NOW + 100, gateway_lease=90)
    states = {r.login: r.state for r in await a.sessions.live("t")}
    assert states == {"anna": State.DISCONNECTED, "bernd": State.CONNECTED}
    assert await a.sessions.expire(NOW + 201, gateway_lease=90) == 1   # anna's keep ran out


async def test_a_session_a_gateway_holds_is_connected_and_outlives_its_timers(stores):
    """A gateway admitted these while no broker could record it (an outage ticket, whose
    signature the broker checked): its word that it holds them makes them connected, so no
    timer ends them and their seats stay taken; what the broker has ended is named back, for
    the gateway to close. A session it cannot prove (no viewer under that ticket) is left as it
    is and named apart."""
    a, b = stores
    pending = await a.sessions.assign("t", "anna", "p", [("h1", 3, True)], now=NOW,
                                      pending_timeout=60, keep_seconds=100)
    gone = await a.sessions.assign("t", "bernd", "p", [("h1", 3, True)], now=NOW,
                                   pending_timeout=60, keep_seconds=100)
    hearsay = await a.sessions.assign("t", "dora", "p", [("h1", 3, True)], now=NOW,
                                      pending_timeout=60, keep_seconds=100)
    await a.sessions.end("t", gone.session_id, now=NOW)
    over, unproven = await b.sessions.held(
        [("t", pending.session_id, "outage-1", True), ("t", gone.session_id, "x", True),
         ("t", "never-issued", "y", True), ("other", pending.session_id, "outage-1", True),
         ("t", hearsay.session_id, "made-up", False)], now=NOW + 30)
    assert sorted(over) == sorted([("t", gone.session_id), ("t", "never-issued"),
                                   ("other", pending.session_id)])
    assert unproven == [("t", hearsay.session_id)]
    assert await a.sessions.expire(NOW + 61, gateway_lease=90) == 1   # hearsay's timer ran
    [row] = await a.sessions.live("t")
    assert row.state is State.CONNECTED and row.login == "anna"
    over, unproven = await a.sessions.held([("t", pending.session_id, "outage-1", False)],
                                           now=NOW + 62)                # now by its viewer
    assert over == unproven == []
    await a.sessions.assign("t", "dora", "p", [("h1", 2, True)], now=NOW + 62,
                            pending_timeout=60, keep_seconds=100)
    late = await a.sessions.assign("t", "clara", "p", [("h1", 2, True)], now=NOW + 62,
                                   pending_timeout=60, keep_seconds=100)
    assert isinstance(late, PoolFull)                                  # and the seat is taken


async def test_a_dedicated_pool_keeps_a_user_on_their_host(stores):
    a, _ = stores
    hosts = [("h1", 5, True), ("h2", 5, True)]
    first = await a.sessions.assign("t", "anna", "p", hosts, now=NOW, pending_timeout=60,
                                    keep_seconds=60,
                           dedicated=True)
    await a.sessions.end("t", first.session_id, now=NOW + 1)
    for i in range(5):  # the other host is emptier each time, yet anna goes back to hers
        again = await a.sessions.assign("t", "anna", "p", hosts, now=NOW + 2 + i,
                                        pending_timeout=60,
                               keep_seconds=60, dedicated=True)
        assert again.host_id == first.host_id
        await a.sessions.end("t", again.session_id, now=NOW + 3 + i)
    await a.sessions.dedicate("t", "p", "anna", "h2" if first.host_id == "h1" else "h1")
    moved = await a.sessions.assign("t", "anna", "p", hosts, now=NOW + 20, pending_timeout=60,
                           keep_seconds=60, dedicated=True)
    assert moved.host_id != first.host_id
    await a.sessions.end("t", moved.session_id, now=NOW + 21)
    closed = [(h, s, h != moved.host_id) for h, s, _ in hosts]
    refused = await a.sessions.assign("t", "anna", "p", closed, now=NOW + 22, pending_timeout=60,
                             keep_seconds=60, dedicated=True)
    assert refused == OwnHostDown(moved.host_id)
