"""Login throttling: a pure rule over a failure record, per user and per source address.

Theory of operation
-------------------
Each key (a tenant's login name as typed, or a client address) has a record: failures counted in
a window that starts with the first failure, and the time a lockout ends. ``limit`` failures within
``window`` seconds lock the key for ``lockout`` seconds; the lockout ends by itself, and a
successful login clears the user's record (never the address's: one right password must not
wipe a guessing run's trace). Unknown user names are counted like known ones, so the answers do
not tell which names exist.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Record:
    failures: int = 0
    window_start: float = 0.0
    locked_until: float = 0.0


@dataclass(frozen=True)
class Policy:
    limit: int          # failures that lock the key
    window: float       # seconds in which they count
    lockout: float      # seconds the key stays locked


def locked_for(record: Record, now: float) -> float:
    """Seconds the key is still locked (0: not locked)."""
    return max(0.0, record.locked_until - now)


def failed(record: Record, now: float, policy: Policy) -> Record:
    """The record after one more failure."""
    if now - record.window_start > policy.window or record.failures == 0:
        record = Record(0, now, record.locked_until)
    failures = record.failures + 1
    locked_until = now + policy.lockout if failures >= policy.limit else record.locked_until
    return Record(failures, record.window_start, locked_until)
