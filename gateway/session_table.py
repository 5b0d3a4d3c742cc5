"""The gateway's relayed sessions: each one's state, and the table that holds them all.

Theory of operation
-------------------
A relay session begins once the desktop is reached and ends once. While it lives, the client's
websocket may drop and a new one take over (resumable sessions only):

============ ========== =========== ====================================================
state        event      next state  what happens
============ ========== =========== ====================================================
ATTACHED     DROP       DETACHED    the desktop is paused; a grace timer runs
ATTACHED     REATTACH   ATTACHED    a newer websocket supersedes the old one (closed 4001)
DETACHED     REATTACH   ATTACHED    the grace timer stops; the stream goes on
ATTACHED     END        ENDED       idle, logoff, shutdown, either side closed
DETACHED     END        ENDED       grace over, logoff, shutdown
============ ========== =========== ====================================================

Every other pair is a bug and raises :class:`InvalidTransition`. :class:`SessionTable` owns every
open websocket (with the per-source counts that caps need), every relay session with its resume
token, and the grace timers; the rest of the gateway asks it, and changes states only through it.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import Callable

from wire.ticket import Claims

from .relay import DesktopLink
from .viewer import ViewerLink


class State(enum.Enum):
    ATTACHED = "attached"
    DETACHED = "detached"
    ENDED = "ended"


class Event(enum.Enum):
    DROP = "drop"
    REATTACH = "reattach"
    END = "end"


TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.ATTACHED, Event.DROP): State.DETACHED,
    (State.ATTACHED, Event.REATTACH): State.ATTACHED,
    (State.DETACHED, Event.REATTACH): State.ATTACHED,
    (State.ATTACHED, Event.END): State.ENDED,
    (State.DETACHED, Event.END): State.ENDED,
}


class InvalidTransition(Exception):
    pass


def next_state(state: State, event: Event) -> State:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(f"{event.value} in state {state.value}") from None


@dataclass(eq=False, slots=True)
class RelaySession:
    """One desktop connection; it outlives a dropped websocket when resumable."""
    claims: Claims
    link: DesktopLink
    ws: ViewerLink | None       # the client's websocket while ATTACHED
    token: str | None = None               # resume token, for resumable sessions
    state: State = State.ATTACHED
    notice: str | None = None              # the last notice (encoded), again after a resume
    outage_ticket: str | None = None       # admitted by the gateway's memory: the ticket, the
                                           # proof shown to a broker until one recorded it
    _grace: asyncio.TimerHandle | None = None

    def _apply(self, event: Event) -> None:
        self.state = next_state(self.state, event)


class SessionTable:
    """Every websocket open on this gateway and every relay session it holds."""

    def __init__(self) -> None:
        self._open: dict[ViewerLink, RelaySession | None] = {}
        self._per_source: dict[str, int] = {}
        self._resumable: dict[str, RelaySession] = {}

    # -- websockets --------------------------------------------------------------------------
    def opened(self, ws: ViewerLink, source: str) -> None:
        self._open[ws] = None
        self._per_source[source] = self._per_source.get(source, 0) + 1

    def closed(self, ws: ViewerLink, source: str) -> None:
        del self._open[ws]
        self._per_source[source] -= 1
        if not self._per_source[source]:
            del self._per_source[source]

    @property
    def open_count(self) -> int:
        return len(self._open)

    def from_source(self, source: str) -> int:
        return self._per_source.get(source, 0)

    def websockets(self) -> list[ViewerLink]:
        return list(self._open)

    def attached(self) -> list[tuple[ViewerLink, RelaySession]]:
        return [(ws, s) for ws, s in self._open.items() if s is not None]

    # -- sessions ----------------------------------------------------------------------------
    def begin(self, ws: ViewerLink, session: RelaySession) -> None:
        """A new session, attached to ``ws`` (and findable by its token when resumable)."""
        self._open[ws] = session
        if session.token is not None:
            self._resumable[session.token] = session

    def resumable(self, token: str) -> RelaySession | None:
        return self._resumable.get(token)

    def drop(self, session: RelaySession, grace: float,
             on_over: Callable[[RelaySession], None]) -> None:
        """The websocket broke: hold the session ``grace`` seconds for a resume."""
        session._apply(Event.DROP)
        session.ws = None
        session.link.detach()
        session._grace = asyncio.get_running_loop().call_later(grace, on_over, session)

    def reattach(self, session: RelaySession,
                 ws: ViewerLink) -> ViewerLink | None:
        """``ws`` takes the session over; the websocket it supersedes, if one was attached."""
        old = session.ws
        session._apply(Event.REATTACH)
        if old is not None:
            session.link.detach()
        self._stop_grace(session)
        session.ws = ws
        self._open[ws] = session
        return old

    def end(self, session: RelaySession) -> bool:
        """The session is over; False if it had ended already."""
        if session.state is State.ENDED:
            return False
        session._apply(Event.END)
        self._stop_grace(session)
        if session.token is not None:
            self._resumable.pop(session.token, None)
        return True

    def _stop_grace(self, session: RelaySession) -> None:
        if session._grace is not None:
            session._grace.cancel()
            session._grace = None

    def with_id(self, session_id: str) -> list[RelaySession]:
        """The live sessions of a broker session id (attached or held)."""
        found = {s for _, s in self.attached() if s.claims.session == session_id}
        found |= {s for s in self._resumable.values() if s.claims.session == session_id}
        return [s for s in found if s.state is not State.ENDED]

    def detached(self) -> list[RelaySession]:
        return [s for s in self._resumable.values() if s.state is State.DETACHED]

    def _live(self) -> set[RelaySession]:
        return {s for _, s in self.attached()} | set(self._resumable.values())

    def held(self) -> list[tuple[str, str, str, str | None]]:
        """(tenant, session, ticket id, outage ticket or None) of every session held, attached
        or awaiting a resume: once per session, an unrecorded outage admission first (its
        ticket is the proof), else the viewer with the first ticket id."""
        chosen: dict[tuple[str, str], RelaySession] = {}
        for s in sorted(self._live(), key=lambda s: (s.outage_ticket is None, s.claims.ticket_id)):
            chosen.setdefault((s.claims.tenant, s.claims.session), s)
        return [(tenant, session_id, s.claims.ticket_id, s.outage_ticket)
                for (tenant, session_id), s in sorted(chosen.items())]

    def unrecorded(self) -> bool:
        """Whether a session admitted by the gateway's memory is still unknown to the brokers."""
        return any(s.outage_ticket is not None for s in self._live())

    def recorded(self, sessions: set[tuple[str, str]]) -> None:
        """A broker heard of these (tenant, session): their outage admissions are recorded."""
        for s in self._live():
            if (s.claims.tenant, s.claims.session) in sessions:
                s.outage_ticket = None
