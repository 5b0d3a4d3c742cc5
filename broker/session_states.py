"""Session lifecycle: one table of states and events. Pure; the store applies it in transactions,
one session at a time with :func:`next_state` and in bulk (timers) with :func:`bulk`.

Theory of operation
-------------------
A session is created ``pending`` when the broker issues its first ticket: a seat is held for the
user. The gateway's redemption report makes it ``connected``; when the last viewer leaves it is
``disconnected`` and keeps its seat for the pool's ``disconnected_keep``, during which the user
comes back to it. Timers end a pending session whose ticket was never used and a disconnected one
whose time is up; an admin or a logoff ends any session. ``ended`` is final and holds no seat.
Nothing can stay in a state forever: every state but ``ended`` has a timer or a viewer attached.
"""

from __future__ import annotations

from enum import Enum


class State(str, Enum):
    PENDING = "pending"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    ENDED = "ended"


class Event(str, Enum):
    CONNECT = "connect"          # a gateway redeemed a ticket for the session
    DISCONNECT = "disconnect"    # the last viewer left
    EXPIRE = "expire"            # the state's timer ran out
    END = "end"                  # logoff or admin action


TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.PENDING, Event.CONNECT): State.CONNECTED,
    (State.PENDING, Event.EXPIRE): State.ENDED,
    (State.PENDING, Event.END): State.ENDED,
    (State.CONNECTED, Event.CONNECT): State.CONNECTED,        # a second viewer
    (State.CONNECTED, Event.DISCONNECT): State.DISCONNECTED,
    (State.CONNECTED, Event.END): State.ENDED,
    (State.DISCONNECTED, Event.CONNECT): State.CONNECTED,
    (State.DISCONNECTED, Event.EXPIRE): State.ENDED,
    (State.DISCONNECTED, Event.END): State.ENDED,
}

LIVE_STATES = (State.PENDING, State.CONNECTED, State.DISCONNECTED)  # these hold a seat


class InvalidTransition(Exception):
    pass


def next_state(state: State, event: Event) -> State:
    """The state after ``event``.

    Raises:
        InvalidTransition: the event does not apply in this state (for example any event on an
            ended session).
    """
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(f"{event.value} in state {state.value}") from None


def bulk(event: Event, among: tuple[State, ...] | None = None) -> tuple[tuple[State, ...], State]:
    """For an update of many sessions at once: the states (of ``among``, or all) in which
    ``event`` applies, and the one state it leads to from each of them.

    Raises:
        InvalidTransition: the event leads to different states from those states.
    """
    moves = {s: t for (s, e), t in TRANSITIONS.items()
             if e is event and (among is None or s in among)}
    targets = set(moves.values())
    if len(targets) != 1:
        raise InvalidTransition(f"{event.value} leads to {sorted(t.value for t in targets)}")
    return tuple(moves), targets.pop()
