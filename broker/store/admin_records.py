"""Administration: admin API tokens, and the audit log every action and refusal is written to."""

from __future__ import annotations

from typing import Any

from ..engine import Tx
from .base import Fragment, Repository, token_hash

OPERATOR = "*"  # the tenant of an operator-level admin token: every tenant


class AdminRecords(Repository):

    async def create_token(self, token: str, tenant: str, name: str, *, now: float) -> None:
        def q(db: Tx) -> None:
            db.execute("INSERT INTO admin_tokens VALUES (?,?,?,?)",
                       (token_hash(token), tenant, name, now))
        await self._write(q)

    async def revoke_tokens(self, tenant: str, name: str) -> int:
        """Revoke the admin tokens named ``name`` of ``tenant`` (or OPERATOR); how many."""
        def q(db: Tx) -> int:
            return db.execute("DELETE FROM admin_tokens WHERE tenant=? AND name=?",
                              (tenant, name)).rowcount
        return await self._write(q)

    async def token(self, token: str) -> tuple[str, str] | None:
        """(tenant or OPERATOR, name) of an admin token; None if unknown."""
        def q(db: Tx) -> tuple[str, str] | None:
            row = db.execute("SELECT tenant, name FROM admin_tokens WHERE token_hash=?",
                                     (token_hash(token),)).fetchone()
            return (row[0], row[1]) if row else None
        return await self._read(q)

    @staticmethod
    def audit_entry(*, at: float, tenant: str, actor: str, source: str, action: str,
                    result: str, detail: str = "") -> Fragment:
        """An audit entry (as part of a unit of work)."""
        def q(db: Tx) -> None:
            db.execute("INSERT INTO audit (at, tenant, actor, source, action, result, detail) "
                       "VALUES (?,?,?,?,?,?,?)", (at, tenant, actor, source, action, result,
                                detail))
        return q

    async def audit(self, *, at: float, tenant: str, actor: str, source: str, action: str,
                    result: str, detail: str = "") -> None:
        await self._write(self.audit_entry(at=at, tenant=tenant, actor=actor, source=source,
                                           action=action, result=result, detail=detail))

    async def audit_log(self, tenant: str, limit: int = 100) -> list[dict[str, Any]]:
        def q(db: Tx) -> list[dict[str, Any]]:
            rows = db.execute(
                "SELECT at, actor, source, action, result, detail FROM audit WHERE tenant=? "
                "ORDER BY id DESC LIMIT ?", (tenant, limit)).fetchall()
            keys = ("at", "actor", "source", "action", "result", "detail")
            return [dict(zip(keys, r)) for r in rows]
        return await self._read(q)
