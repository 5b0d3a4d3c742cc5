"""What every repository of the store shares: the engine it runs on, fragments of a unit of work,
and the one hash under which secrets handed to people are kept."""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Sequence

from ..engine import Engine, Tx

Fragment = Callable[[Tx], None]   # a part of a unit of work, run inside another's transaction


def token_hash(token: str) -> str:
    """How a secret handed out (login token, admin token, device credential, enrolment code) is
    stored: never as itself."""
    return hashlib.sha256(token.encode()).hexdigest()


class Repository:
    """A group of tables that change together, over the store's one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def _write(self, fn: Callable[[Tx], Any], *, locks: Sequence[str] = ()) -> Any:
        return await self.engine.write(fn, locks=locks)

    async def _read(self, fn: Callable[[Tx], Any]) -> Any:
        return await self.engine.read(fn)
