"""Throttling: pure rules (reserve an attempt before evaluating it, settle it after)."""

from hypothesis import given, strategies as st

from broker.throttle import Key, Outcome, Policy, Record, locked_for, reserve, settle

POLICY = Policy(limit=5, window=900, lockout=900)
USER = Key("user:t/anna", POLICY, forget_on_success=True)
SOURCE = Key("source:10.0.0.1", POLICY)


def failed(record: Record, now: float, key: Key = USER) -> Record:
    """One attempt reserved and failed."""
    reserved = reserve(record, now, key.policy)
    assert reserved is not None
    return settle(reserved, Outcome.FAILED, now, key)


def test_the_fifth_failure_within_the_window_locks():
    r = Record()
    for i in range(4):
        r = failed(r, 100 + i)
        assert locked_for(r, 100 + i) == 0
    r = failed(r, 104)
    assert locked_for(r, 104) == 900
    assert reserve(r, 105, POLICY) is None


def test_failures_spread_beyond_the_window_do_not_lock():
    r = Record()
    for i in range(10):
        r = failed(r, i * 300.0)
        assert locked_for(r, i * 300.0) == 0


def test_a_lockout_ends_by_itself():
    r = Record()
    for _ in range(5):
        r = failed(r, 0)
    assert locked_for(r, 899) > 0 and locked_for(r, 900) == 0
    assert reserve(r, 900, POLICY) == Record(1, 900, 0.0)


def test_a_lockout_shorter_than_the_window_still_ends_by_itself():
    policy = Policy(limit=5, window=3600, lockout=60)
    key = Key("user:t/anna", policy)
    r = Record()
    for _ in range(5):
        r = settle(reserve(r, 0, policy), Outcome.FAILED, 0, key)
    assert reserve(r, 59, policy) is None
    assert reserve(r, 60, policy) is not None


def test_attempts_in_flight_count_so_a_burst_evaluates_at_most_limit():
    r, admitted = Record(), 0
    for _ in range(1000):  # a thousand concurrent guesses: all reserved before any is settled
        reserved = reserve(r, 10, POLICY)
        if reserved is not None:
            r, admitted = reserved, admitted + 1
    assert admitted == POLICY.limit


def test_a_success_forgets_a_users_record_but_only_gives_an_address_its_attempt_back():
    user, source = Record(), Record()
    for _ in range(3):
        user, source = failed(user, 0, USER), failed(source, 0, SOURCE)
    user = settle(reserve(user, 1, POLICY), Outcome.SUCCEEDED, 1, USER)
    source = settle(reserve(source, 1, POLICY), Outcome.SUCCEEDED, 1, SOURCE)
    assert user is None
    assert source.failures == 3


def test_a_town_halls_morning_of_right_passwords_never_locks_its_address():
    r = Record()
    for t in range(500):
        r = settle(reserve(r, t, POLICY), Outcome.SUCCEEDED, t, SOURCE)
    assert r.failures == 0 and locked_for(r, 500) == 0


def test_a_void_attempt_is_given_back():
    r = reserve(Record(), 0, POLICY)
    assert settle(r, Outcome.VOID, 0, USER).failures == 0


@given(st.lists(st.floats(0, 10_000), max_size=40))
def test_a_lock_is_set_only_after_limit_failures_inside_one_window(times):
    r = Record()
    seen: list[float] = []
    for t in sorted(times):
        before = r.locked_until
        reserved = reserve(r, t, POLICY)
        if reserved is None:
            assert locked_for(r, t) > 0
            continue
        r = settle(reserved, Outcome.FAILED, t, USER)
        seen.append(t)
        if r.locked_until > before:  # a lock was set (a lockout that ended resets to 0)
            assert len([x for x in seen if t - x <= POLICY.window]) >= POLICY.limit
