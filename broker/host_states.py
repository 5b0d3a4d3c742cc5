"""Host states: what an admin has said about a desktop host. Pure; the store keeps the state.

Theory of operation
-------------------
``active`` hosts take new sessions and reconnects. ``draining`` hosts take no new sessions but let
users come back to the session they have (a drain ends at its deadline, when the users left have
been logged off or the admin chose to wait). ``disabled`` hosts take neither: users with a session
there are placed afresh elsewhere. ``maintenance`` takes the host out of its pools altogether
(patching). An admin action moves a host between states along :data:`TRANSITIONS`; health is a
separate, measured fact — an unhealthy active host takes nothing new either.
"""

from __future__ import annotations

from enum import Enum


class HostState(str, Enum):
    ACTIVE = "active"
    DRAINING = "draining"
    DISABLED = "disabled"
    MAINTENANCE = "maintenance"


class Action(str, Enum):
    ENABLE = "enable"
    DRAIN = "drain"
    DISABLE = "disable"
    MAINTENANCE = "maintenance"


TRANSITIONS: dict[tuple[HostState, Action], HostState] = {
    (HostState.ACTIVE, Action.DRAIN): HostState.DRAINING,
    (HostState.ACTIVE, Action.DISABLE): HostState.DISABLED,
    (HostState.ACTIVE, Action.MAINTENANCE): HostState.MAINTENANCE,
    (HostState.ACTIVE, Action.ENABLE): HostState.ACTIVE,
    (HostState.DRAINING, Action.ENABLE): HostState.ACTIVE,       # drain called off
    (HostState.DRAINING, Action.DRAIN): HostState.DRAINING,      # new deadline or message
    (HostState.DRAINING, Action.DISABLE): HostState.DISABLED,
    (HostState.DRAINING, Action.MAINTENANCE): HostState.MAINTENANCE,
    (HostState.DISABLED, Action.ENABLE): HostState.ACTIVE,
    (HostState.DISABLED, Action.DRAIN): HostState.DRAINING,
    (HostState.DISABLED, Action.MAINTENANCE): HostState.MAINTENANCE,
    (HostState.MAINTENANCE, Action.ENABLE): HostState.ACTIVE,
}

#: state -> (takes new sessions, lets users back into their session)
POLICY: dict[HostState, tuple[bool, bool]] = {
    HostState.ACTIVE: (True, True),
    HostState.DRAINING: (False, True),
    HostState.DISABLED: (False, False),
    HostState.MAINTENANCE: (False, False),
}


class InvalidAction(Exception):
    pass


def apply(state: HostState, action: Action) -> HostState:
    """The state after an admin action.

    Raises:
        InvalidAction: the action does not apply (draining a host in maintenance: enable it first).
    """
    try:
        return TRANSITIONS[(state, action)]
    except KeyError:
        raise InvalidAction(f"cannot {action.value} a host that is {state.value}") from None


def takes_new_sessions(state: HostState, healthy: bool = True) -> bool:
    return POLICY[state][0] and healthy


def takes_reconnects(state: HostState) -> bool:
    return POLICY[state][1]


def notice_times(deadline: float, start: float) -> list[float]:
    """When users on a draining host are told (again): at once, then as the deadline nears.

    Notices go out at the start and when 60 %, 30 % and 10 % of the time is left; never after the
    deadline.
    """
    span = max(deadline - start, 0.0)
    later = {deadline - span * share for share in (0.6, 0.3, 0.1)}
    return sorted({start} | {t for t in later if start < t < deadline})
