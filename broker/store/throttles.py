"""Throttle records (:mod:`broker.throttle` has the rule): reserved and settled inside the
transaction of the use case that guesses, under a lock per key."""

from __future__ import annotations

from typing import Sequence

from ..engine import Tx
from ..throttle import Key, Outcome, Record, reserve, settle
from .base import Fragment, Repository


class Throttled(Exception):
    """A throttle key refused the attempt before anything was looked at."""


def lock_names(keys: Sequence[Key]) -> list[str]:
    """The locks a unit of work that reserves or settles on ``keys`` takes."""
    return [f"throttle:{k.name}" for k in keys]


def _record(db: Tx, key: str) -> Record:
    row = db.execute("SELECT failures, window_start, locked_until FROM throttle WHERE key=?",
                     (key,)).fetchone()
    return Record(*row) if row else Record()


def _write_record(db: Tx, key: str, record: Record | None) -> None:
    if record is None:
        db.execute("DELETE FROM throttle WHERE key=?", (key,))
        return
    db.execute("INSERT INTO throttle VALUES (?,?,?,?) ON CONFLICT (key) DO UPDATE SET "
               "failures=excluded.failures, window_start=excluded.window_start, "
               "locked_until=excluded.locked_until",
               (key, record.failures, record.window_start, record.locked_until))


def reserve_in(db: Tx, keys: Sequence[Key], now: float) -> bool:
    """Count one attempt against every key; False (and nothing counted) when any refuses."""
    reserved = []
    for key in keys:
        record = reserve(_record(db, key.name), now, key.policy)
        if record is None:
            return False
        reserved.append((key.name, record))
    for name, record in reserved:
        _write_record(db, name, record)
    return True


def settle_in(db: Tx, keys: Sequence[Key], outcome: Outcome, now: float) -> None:
    """Settle a reserved attempt on every key by how it ended."""
    for key in keys:
        _write_record(db, key.name, settle(_record(db, key.name), outcome, now, key))


class Throttles(Repository):
    """For a use case whose evaluation waits for something outside (a directory's bind): the
    attempt is reserved in one transaction and settled in another."""

    async def reserve(self, keys: Sequence[Key], *, now: float) -> bool:
        """Count one attempt against every key, in one transaction; False (and nothing counted)
        when any key refuses it. Every reserved attempt must be settled."""
        return await self._write(lambda db: reserve_in(db, keys, now), locks=lock_names(keys))

    async def settle(self, keys: Sequence[Key], outcome: Outcome, *, now: float,
                     also: Sequence[Fragment] = ()) -> None:
        """Settle a reserved attempt on every key (see :mod:`broker.throttle`), and record what
        the use case adds (``also``: a new login, audit entries) in the same transaction."""
        def q(db: Tx) -> None:
            settle_in(db, keys, outcome, now)
            for fragment in also:
                fragment(db)
        await self._write(q, locks=lock_names(keys))
