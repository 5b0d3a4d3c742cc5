"""Throttling of guesses: a pure rule over an attempt record, per identity and per source address.

Theory of operation
-------------------
Each key (a tenant's canonical user identity, a client address, or an address's guesses at device
secrets) has a record: attempts counted in a window that starts with the first one, and the time a
lockout ends. An attempt is **reserved before it is evaluated** (:func:`reserve`, stored in the same
transaction that reads the record), so a thousand concurrent guesses cannot all be evaluated: once
``limit`` attempts are counted in the window, whether still in flight or failed, the next is
refused without being looked at. When the attempt's outcome is known it is settled
(:func:`settle`):

========== ============================================================================
outcome    effect on the record
========== ============================================================================
FAILED     stays counted; the ``limit``-th counted failure locks the key for ``lockout``
SUCCEEDED  a user's record is forgotten; an address's gives the attempt back (one right
           password must not wipe a guessing run's trace, nor may a town hall's morning
           of right passwords lock its address)
VOID       given back (the directory did not answer; the password was right but the
           account may not log in): nothing was guessed
========== ============================================================================

A lockout ends by itself. Unknown user names are counted like known ones (under the name as the
directory would compare it), so the answers do not tell which names exist.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True)
class Record:
    failures: int = 0           # attempts counted in the window: failed or still in flight
    window_start: float = 0.0
    locked_until: float = 0.0


@dataclass(frozen=True)
class Policy:
    limit: int          # attempts that lock the key
    window: float       # seconds in which they count
    lockout: float      # seconds the key stays locked


@dataclass(frozen=True)
class Key:
    """One record an attempt counts against."""
    name: str
    policy: Policy
    forget_on_success: bool = False   # a user's record; an address's is only given back


class Outcome(enum.Enum):
    FAILED = "failed"
    SUCCEEDED = "succeeded"
    VOID = "void"


def locked_for(record: Record, now: float) -> float:
    """Seconds the key is still locked (0: not locked)."""
    return max(0.0, record.locked_until - now)


def reserve(record: Record, now: float, policy: Policy) -> Record | None:
    """The record with one more attempt counted, or None when the attempt is refused (the key is
    locked, or ``limit`` attempts already count in this window)."""
    if locked_for(record, now) > 0:
        return None
    lockout_over = record.locked_until > 0  # (and not locked any more): a fresh start
    if record.failures == 0 or now - record.window_start > policy.window or lockout_over:
        record = Record(0, now, 0.0)
    if record.failures >= policy.limit:
        return None
    return Record(record.failures + 1, record.window_start, record.locked_until)


def settle(record: Record, outcome: Outcome, now: float, key: Key) -> Record | None:
    """The record once a reserved attempt's outcome is known; None: forget the record."""
    if outcome is Outcome.FAILED:
        if record.failures >= key.policy.limit:
            return Record(record.failures, record.window_start, now + key.policy.lockout)
        return record
    if outcome is Outcome.SUCCEEDED and key.forget_on_success:
        return None
    return Record(max(record.failures - 1, 0), record.window_start, record.locked_until)
