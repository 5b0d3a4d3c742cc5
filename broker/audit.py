"""The audit log: who did what, in which tenant, from where, with what result. Every use case
records its outcome here; admins read their tenant's entries, newest first."""

from __future__ import annotations

from typing import Any, Callable

from .store import Store


class AuditLog:
    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock

    async def record(self, tenant: str, actor: str, source: str, action: str, result: str,
                     detail: str = "") -> None:
        await self._store.audit(at=self._clock(), tenant=tenant, actor=actor, source=source,
                                action=action, result=result, detail=detail)

    async def entries(self, tenant: str, limit: int) -> list[dict[str, Any]]:
        return await self._store.audit_log(tenant, limit)
