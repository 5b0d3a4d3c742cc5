"""Placement and the session state machine: pure rules, checked exhaustively."""

from hypothesis import given, strategies as st

from broker.placement import HostLoad, NewSession, PoolBusy, PoolFull, Reconnect, place


def test_a_user_with_a_session_goes_back_to_it_even_when_the_pool_is_full():
    existing = Reconnect("s1", "h2")
    assert place(existing, [HostLoad("h1", 1, 1), HostLoad("h2", 1, 1)]) == existing


def test_a_new_session_goes_to_the_least_loaded_host():
    assert place(None, [HostLoad("h1", 5, 3), HostLoad("h2", 5, 1), HostLoad("h3", 5, 2)]) == \
        NewSession("h2")


def test_a_full_pool_says_so():
    assert place(None, [HostLoad("h1", 2, 2), HostLoad("h2", 1, 1)]) == PoolFull()


def test_hosts_not_accepting_are_skipped():
    hosts = [HostLoad("h1", 5, 0, accepting=False), HostLoad("h2", 5, 4)]
    assert place(None, hosts) == NewSession("h2")


def test_ties_are_broken_by_the_callers_choice():
    hosts = [HostLoad("h1", 5, 1), HostLoad("h2", 5, 1)]
    assert place(None, hosts, tie_break=lambda hs: hs[-1]) == NewSession("h2")


loads = st.lists(st.tuples(st.integers(1, 6), st.integers(0, 6), st.booleans()), min_size=1,
                 max_size=6)


@given(loads, st.integers(1, 40), st.randoms())
def test_no_sequence_of_placements_overbooks_a_host(spec, arrivals, rnd):
    seats = {f"h{i}": s for i, (s, _, _) in enumerate(spec)}
    used = {f"h{i}": min(u, s) for i, (s, u, _) in enumerate(spec)}
    accepting = {f"h{i}": a for i, (_, _, a) in enumerate(spec)}
    for _ in range(arrivals):
        hosts = [HostLoad(h, seats[h], used[h], accepting[h]) for h in seats]
        decision = place(None, hosts, tie_break=rnd.choice)
        free = sum(seats[h] - used[h] for h in seats if accepting[h])
        if isinstance(decision, PoolFull):
            assert free == 0
            continue
        assert accepting[decision.host_id]
        assert used[decision.host_id] == min(used[h] for h in seats
                                             if accepting[h] and used[h] < seats[h])
        used[decision.host_id] += 1
        assert used[decision.host_id] <= seats[decision.host_id]


def test_hosts_at_their_cap_of_logons_in_flight_are_passed_over():
    hosts = [HostLoad("h1", 10, 0, in_flight=3, max_in_flight=3), HostLoad("h2", 10, 5)]
    assert place(None, hosts) == NewSession("h2")


def test_a_pool_whose_free_hosts_are_all_at_their_cap_is_busy_not_full():
    hosts = [HostLoad("h1", 10, 3, in_flight=3, max_in_flight=3), HostLoad("h2", 1, 1)]
    assert place(None, hosts) == PoolBusy()
