"""The audit log: who did what, in which tenant, from where, with what result. Every use case
records its outcome here; admins read their tenant's entries, newest first."""

from __future__ import annotations

from typing import Any, Callable

from .store import Fragment, Store


def printable(text: str) -> str:
    """Text as it may enter the audit log and logs: control and other unprintable characters
    escaped, so that a typed name cannot forge or hide log lines."""
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


class AuditLog:
    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock

    async def record(self, tenant: str, actor: str, source: str, action: str, result: str,
                     detail: str = "") -> None:
        """Record an action; text that came from outside (names, ids from a URL) is escaped,
        so that it can neither forge lines nor hide characters."""
        await self._store.admin.audit(at=self._clock(), tenant=tenant, actor=printable(actor),
                                source=source, action=action, result=result,
                                detail=printable(detail))

    def entry(self, tenant: str, actor: str, source: str, action: str, result: str,
              detail: str = "") -> Fragment:
        """The same record, as a part of another unit of work (written in its transaction)."""
        return self._store.admin.audit_entry(
            at=self._clock(), tenant=tenant, actor=printable(actor), source=source,
            action=action, result=result, detail=printable(detail))

    async def entries(self, tenant: str, limit: int) -> list[dict[str, Any]]:
        return await self._store.admin.audit_log(tenant, limit)
