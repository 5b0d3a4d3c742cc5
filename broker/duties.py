"""Work that must be done once across a fleet of brokers — expiring sessions and tickets, health
probes, moving drains on — run by whichever broker holds the duties' lease in the database.

Theory of operation
-------------------
Every broker ticks once a :data:`TICK`. At each tick it tries to take or renew the lease (one
conditional statement, ``store.hosts.hold_lease``) for :data:`LEASE` seconds; the holder then runs
each duty whose interval has passed. A holder that dies (``kill -9``) stops renewing, and within
:data:`LEASE` seconds another broker's tick takes the lease over. The duties themselves claim each
step in the database before they act (a drain step, a session's end), so a step is never done
twice, even by two holders in the moment of a takeover. A database that does not answer skips the
tick; the next one tries again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from dataclasses import dataclass
from typing import Awaitable, Callable

from .errors import StoreUnavailable
from .store import Store

logger = logging.getLogger("pforte.duties")

LEASE_NAME = "duties"
LEASE = 8.0    # seconds a holder keeps the duties without renewing: a dead one is replaced in time
TICK = 1.0     # seconds between ticks


@dataclass
class Duty:
    name: str
    every: float                        # seconds between runs
    run: Callable[[], Awaitable[object]]
    last: float = float("-inf")         # when this broker last ran it (monotonic)


class Duties:
    def __init__(self, store: Store, clock: Callable[[], float], duties: list[Duty]) -> None:
        self.store = store
        self.clock = clock
        self.duties = duties
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.holding = False
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.holding:  # let another broker take over at once
            try:
                await self.store.hosts.release_lease(LEASE_NAME, self.holder)
            except StoreUnavailable:
                pass

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.tick(loop.time())
            await asyncio.sleep(TICK)

    async def tick(self, monotonic: float) -> None:
        """Renew (or take) the lease; run what is due if this broker holds it."""
        now = self.clock()
        try:
            held = await self.store.hosts.hold_lease(LEASE_NAME, self.holder, now=now,
                                               until=now + LEASE)
        except StoreUnavailable as exc:
            logger.warning("duties skipped: database unavailable (%s)", exc)
            return
        if held != self.holding:
            logger.info("this broker %s the fleet's duties", "runs" if held else "no longer runs")
            self.holding = held
        if not held:
            return
        for duty in self.duties:
            if monotonic - duty.last < duty.every:
                continue
            duty.last = monotonic
            try:
                await duty.run()
            except StoreUnavailable as exc:
                logger.warning("%s skipped: database unavailable (%s)", duty.name, exc)
            except Exception:
                logger.exception("%s failed", duty.name)
