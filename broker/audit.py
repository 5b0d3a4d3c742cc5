"""The audit log: who did what, in which tenant, from where, with what result. Every use case
records its outcome here; admins read their tenant's entries, newest first. Each record is also
a line in the broker's log (:mod:`wire.events`: ``event=login.password tenant=… user=… source=…
result=…``), for the journal and whatever the operator ships it to."""

from __future__ import annotations

import logging
from typing import Any, Callable

from wire import events
from wire.events import printable

from .store import Fragment, Store

logger = logging.getLogger("pforte.audit")

SEARCHED = 10_000   # newest entries a search looks through


class AuditLog:
    def __init__(self, store: Store, clock: Callable[[], float],
                 on_record: Callable[[], None] = lambda: None) -> None:
        self._store = store
        self._clock = clock
        self._on_record = on_record   # something admins watch has changed

    async def record(self, tenant: str, actor: str, source: str, action: str, result: str,
                     detail: str = "") -> None:
        """Record an action; text that came from outside (names, ids from a URL) is escaped,
        so that it can neither forge lines nor hide characters."""
        await self._store.admin.audit(at=self._clock(), tenant=tenant, actor=printable(actor),
                                source=source, action=action, result=result,
                                detail=printable(detail))
        _log(tenant, actor, source, action, result, detail)
        self._on_record()

    def entry(self, tenant: str, actor: str, source: str, action: str, result: str,
              detail: str = "") -> Fragment:
        """The same record, as a part of another unit of work (written in its transaction)."""
        _log(tenant, actor, source, action, result, detail)
        return self._store.admin.audit_entry(
            at=self._clock(), tenant=tenant, actor=printable(actor), source=source,
            action=action, result=result, detail=printable(detail))

    async def entries(self, tenant: str, limit: int, search: str = "") -> list[dict[str, Any]]:
        """The newest ``limit`` entries; with ``search``, those whose actor, action, result or
        detail contain it (case-insensitive)."""
        if not search:
            return await self._store.admin.audit_log(tenant, limit)
        needle = search.casefold()
        return [e for e in await self._store.admin.audit_log(tenant, SEARCHED)
                if any(needle in str(e[k]).casefold() for k in ("actor", "action", "result",
                                                                 "detail", "source"))][:limit]


def _log(tenant: str, actor: str, source: str, action: str, result: str, detail: str) -> None:
    """Each record is also an event in the broker's log, for the journal and a SIEM."""
    events.log(logger, action, tenant=tenant, user=actor, source=source, result=result,
               detail=detail or None)
