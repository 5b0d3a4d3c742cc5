"""Drains at work (a duty that runs once across the fleet: ``broker.duties``).

A drain sets the host ``draining`` with a deadline (:meth:`broker.admin.Administration.act`);
its users are notified at once and again as the deadline nears (``notice_times``) — in the
session (the gateway shows it) and over SSH on the host; it finishes early when the host is
empty, and at the deadline who is left is logged off (unless the admin chose to wait). The
drain's next step is stored (``next_notice``) and each step is claimed in one conditional update
before it is carried out, so a step happens once even when the broker running the duties dies
and another takes over: no notice is sent twice, no logoff repeated. Every step is written to
the audit log.
"""

from __future__ import annotations

import logging
from typing import Callable

from .admin import Administration
from .audit import AuditLog
from .config import BrokerConfig, HostConfig, TenantConfig
from .errors import NotFound
from .gateway_control import GatewayControl
from .host_states import notice_times
from .host_control import HostControl
from .store import HostStateRow, SessionRow, Store

logger = logging.getLogger("pforte.admin")

FOREVER = float("inf")  # a drain's next step once only the host's emptying is awaited


class Drains:
    """Moves every drain on by what is due."""

    def __init__(self, config: BrokerConfig, store: Store, audit: AuditLog,
                 admin: Administration, hosts: HostControl, gateways: GatewayControl,
                 clock: Callable[[], float]) -> None:
        self.config = config
        self.store = store
        self.audit = audit
        self.admin = admin
        self.hosts = hosts
        self.gateways = gateways
        self.clock = clock

    async def users_on(self, tenant: TenantConfig, host_id: str) -> list[SessionRow]:
        return [s for s in await self.store.sessions.live(tenant.id) if s.host == host_id]

    async def tick(self) -> None:
        """Move every drain on by what is due now (one broker of the fleet runs this)."""
        for tenant_id, host_id, row in await self.store.hosts.draining():
            tenant = self.config.tenant(tenant_id)
            if tenant is None or tenant.host(host_id) is None or row.next_notice is None:
                continue  # not ours, or finished: the host waits for an admin to enable it
            await self._drain_step(tenant, tenant.host(host_id), row)

    async def _drain_step(self, tenant: TenantConfig, host: HostConfig,
                          row: HostStateRow) -> None:
        step, now = row.next_notice, self.clock()
        users = await self.users_on(tenant, host.id)
        if not users:
            if await self.store.hosts.claim_drain_step(tenant.id, host.id, step, None):
                await self.audit.record(tenant.id, "pforte", "broker", "host.drained", "ok",
                                        f"host={host.id} is empty")
                logger.info("host %s of %s is empty", host.id, tenant.id)
            return
        if now < step:
            return
        if row.deadline is None or step < row.deadline:
            if await self.store.hosts.claim_drain_step(tenant.id, host.id, step,
                                                 self._next_step(row, now)):
                await self._notify(tenant, host, users, row, now)
            return
        if not await self.store.hosts.claim_drain_step(tenant.id, host.id, step, FOREVER):
            return
        if not row.logoff:
            await self.audit.record(tenant.id, "pforte", "broker", "host.drain_deadline", "ok",
                                    f"host={host.id} deadline passed; waiting for "
                                    f"{len(users)} users")
            return
        for session in users:
            try:
                await self.admin.logoff(tenant, session.id, actor="pforte", source="broker",
                                  why="drain deadline")
            except NotFound:
                pass  # left meanwhile
        if await self.store.hosts.claim_drain_step(tenant.id, host.id, FOREVER, None):
            await self.audit.record(tenant.id, "pforte", "broker", "host.drained", "ok",
                                    f"host={host.id} is empty (users logged off at the "
                                    f"deadline)")

    @staticmethod
    def _next_step(row: HostStateRow, now: float) -> float:
        """After a notice: the next notice still ahead, else the deadline (or nothing more)."""
        schedule = notice_times(row.deadline, row.since) if row.deadline else [row.since]
        ahead = [t for t in schedule if t > now]
        if ahead:
            return ahead[0]
        return row.deadline if row.deadline is not None else FOREVER

    async def _notify(self, tenant: TenantConfig, host: HostConfig, users: list[SessionRow],
                      row: HostStateRow, now: float) -> None:
        if row.deadline is not None:
            minutes = max(1, round((row.deadline - now) / 60))
            text = f"{row.message} (in {minutes} min)" if row.message else \
                f"This desktop will be shut down for maintenance in {minutes} min."
        else:
            text = row.message or "This desktop will be shut down for maintenance."
        # in the session (the user's page or thin client shows it in the user's language around
        # the admin's words, with a countdown) and over SSH on the host (the text above)
        deadline = round(row.deadline) if row.logoff and row.deadline is not None else 0
        for session in users:
            on_host = await self.hosts.notify(host, session.login, text)
            in_session = await self.gateways.notify(session.id, row.message, deadline)
            await self.audit.record(tenant.id, "pforte", "broker", "host.notice",
                                    "ok" if on_host or in_session else "not_delivered",
                                    f"host={host.id} user={session.login} "
                                    f"on_host={'yes' if on_host else 'no'} "
                                    f"in_session={'yes' if in_session else 'no'}")
