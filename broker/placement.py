"""Placement: which host a user's new or returning session goes to. A pure function, no I/O.

Rules, in order:
1. A user who already has a live session in the pool goes back to it (reconnect first).
2. Otherwise the host with the fewest sessions among those with a free seat that take new sessions
   and have fewer logons in flight (sessions still pending) than their cap; ties are broken by the
   caller's ``tie_break`` (a random number in production, so a storm spreads evenly).
3. Never more sessions on a host than its seats: with no free seat the answer is "full"; with free
   seats only on hosts at their in-flight cap it is "busy" (try again in a few seconds).

The store runs this inside its write transaction, with the counts it read in that transaction, so
two brokers deciding at the same instant cannot over-book a host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence


class Candidate(NamedTuple):
    """A host of the pool as placement's caller knows it (its state and health decide
    ``accepting``); the store adds what the sessions say, making a :class:`HostLoad`."""
    host_id: str
    seats: int
    accepting: bool


@dataclass(frozen=True)
class HostLoad:
    host_id: str
    seats: int
    sessions: int
    accepting: bool = True   # False while the host may take no new sessions
    in_flight: int = 0       # sessions placed but not yet connected
    max_in_flight: int = 0   # cap on in_flight; 0: none


@dataclass(frozen=True)
class Reconnect:
    session_id: str
    host_id: str


@dataclass(frozen=True)
class NewSession:
    host_id: str


@dataclass(frozen=True)
class PoolFull:
    pass


@dataclass(frozen=True)
class PoolBusy:
    """Seats are free, but every host with one has as many logons in flight as it may."""


@dataclass(frozen=True)
class OwnHostDown:
    """A dedicated pool's user: their own host takes no sessions now (decided by the store,
    which knows the dedication; :func:`place` sees only that host)."""
    host_id: str


Decision = Reconnect | NewSession | PoolFull | PoolBusy
Refusal = PoolFull | PoolBusy | OwnHostDown   # what a placement may end in instead of a seat


def place(existing: Reconnect | None, hosts: Sequence[HostLoad],
          tie_break: Callable[[Sequence[HostLoad]], HostLoad] = lambda hs: hs[0]) -> Decision:
    """Decide where a user's session goes.

    Args:
        existing: the user's live session in this pool, if any.
        hosts: the pool's hosts with their current load.
        tie_break: picks one of several equally loaded hosts.
    """
    if existing is not None:
        return existing
    free = [h for h in hosts if h.accepting and h.sessions < h.seats]
    if not free:
        return PoolFull()
    ready = [h for h in free if not h.max_in_flight or h.in_flight < h.max_in_flight]
    if not ready:
        return PoolBusy()
    least = min(h.sessions for h in ready)
    return NewSession(tie_break([h for h in ready if h.sessions == least]).host_id)
