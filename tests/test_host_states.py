"""Host states and drain notices: pure rules."""

import pytest
from hypothesis import given, strategies as st

from broker.host_states import (POLICY, TRANSITIONS, Action, HostState, InvalidAction, apply,
                                notice_times, takes_new_sessions, takes_reconnects)


def test_only_active_healthy_hosts_take_new_sessions():
    assert takes_new_sessions(HostState.ACTIVE)
    assert not takes_new_sessions(HostState.ACTIVE, healthy=False)
    for state in (HostState.DRAINING, HostState.DISABLED, HostState.MAINTENANCE):
        assert not takes_new_sessions(state)


def test_draining_lets_users_back_disabled_does_not():
    assert takes_reconnects(HostState.DRAINING)
    assert not takes_reconnects(HostState.DISABLED)
    assert not takes_reconnects(HostState.MAINTENANCE)


def test_maintenance_is_left_only_by_enabling():
    assert apply(HostState.MAINTENANCE, Action.ENABLE) is HostState.ACTIVE
    for action in (Action.DRAIN, Action.DISABLE):
        with pytest.raises(InvalidAction):
            apply(HostState.MAINTENANCE, action)


def test_every_state_has_a_policy_and_can_be_enabled():
    for state in HostState:
        assert state in POLICY
        assert apply(state, Action.ENABLE) is HostState.ACTIVE


@given(st.lists(st.sampled_from(list(Action)), max_size=20))
def test_any_action_sequence_stays_in_the_table(actions):
    state = HostState.ACTIVE
    for action in actions:
        try:
            state = apply(state, action)
        except InvalidAction:
            assert (state, action) not in TRANSITIONS


def test_notices_go_out_at_once_and_as_the_deadline_nears():
    assert notice_times(1000.0, 0.0) == [0.0, 400.0, 700.0, 900.0]


@given(st.floats(0, 1e6), st.floats(0, 1e5))
def test_notices_are_never_after_the_deadline(start, span):
    times = notice_times(start + span, start)
    assert times[0] == start
    assert all(start <= t <= start + span for t in times)
