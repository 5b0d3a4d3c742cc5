"""The broker's session state machine (broker/session_states.py): a table, checked as one."""

from hypothesis import given, strategies as st

from broker.session_states import LIVE_STATES, TRANSITIONS, Event, InvalidTransition, State, next_state


def test_ended_is_final():
    for event in Event:
        try:
            next_state(State.ENDED, event)
        except InvalidTransition:
            continue
        raise AssertionError(f"{event} leaves ended")


def test_every_live_state_can_end_and_none_waits_forever():
    for state in LIVE_STATES:
        assert next_state(state, Event.END) is State.ENDED
    # pending and disconnected have a timer; connected has a viewer whose leaving is reported
    assert (State.PENDING, Event.EXPIRE) in TRANSITIONS
    assert (State.DISCONNECTED, Event.EXPIRE) in TRANSITIONS
    assert next_state(State.CONNECTED, Event.DISCONNECT) is State.DISCONNECTED


@given(st.lists(st.sampled_from(list(Event)), max_size=30))
def test_any_event_sequence_stays_inside_the_table(events):
    state = State.PENDING
    for event in events:
        try:
            state = next_state(state, event)
        except InvalidTransition:
            assert (state, event) not in TRANSITIONS
        assert state in State
