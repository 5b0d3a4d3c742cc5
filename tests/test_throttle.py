"""Login throttling: pure rules."""

from hypothesis import given, strategies as st

from broker.throttle import Policy, Record, failed, locked_for

POLICY = Policy(limit=5, window=900, lockout=900)


def test_the_fifth_failure_within_the_window_locks():
    r = Record()
    for i in range(4):
        r = failed(r, 100 + i, POLICY)
        assert locked_for(r, 100 + i) == 0
    r = failed(r, 104, POLICY)
    assert locked_for(r, 104) == 900


def test_failures_spread_beyond_the_window_do_not_lock():
    r = Record()
    for i in range(10):
        r = failed(r, i * 300.0, POLICY)
        assert locked_for(r, i * 300.0) == 0


def test_a_lockout_ends_by_itself():
    r = Record()
    for i in range(5):
        r = failed(r, 0, POLICY)
    assert locked_for(r, 899) > 0 and locked_for(r, 900) == 0


@given(st.lists(st.floats(0, 10_000), max_size=40))
def test_a_lock_is_set_only_after_limit_failures_inside_one_window(times):
    r = Record()
    seen: list[float] = []
    for t in sorted(times):
        before = r.locked_until
        r = failed(r, t, POLICY)
        seen.append(t)
        if r.locked_until != before:
            assert len([x for x in seen if t - x <= POLICY.window]) >= POLICY.limit
