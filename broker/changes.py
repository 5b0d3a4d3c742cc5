"""A signal that something an admin watches has changed (a host's state, a session, a drain's
step), so that open consoles update at once rather than poll. Every such change is audited, so
the audit log raises it; changes made by another broker of the fleet show at the next
``REFRESH`` instead."""

from __future__ import annotations

import asyncio

REFRESH = 5.0   # seconds: a console looks again at the latest after this, whatever happened


class Changes:
    def __init__(self) -> None:
        self.version = 0
        self._changed = asyncio.Event()

    def bump(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def after(self, version: int, timeout: float = REFRESH) -> int:
        """Wait until the version passes ``version`` (or ``timeout``); the version now."""
        if self.version == version:
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        return self.version
