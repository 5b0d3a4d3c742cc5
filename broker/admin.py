"""Administration: host states and drains, health probes, sessions and logoff.

Theory of operation
-------------------
Host states live in the store (``broker.host_states`` has the rules); health lives in memory,
refreshed by probes every ``probe_interval``. Placement asks :meth:`Administration.placement` which
hosts take new sessions and which let users back.

A drain sets the host ``draining`` with a deadline and runs a task: it notifies the users on the
host at once and again as the deadline nears (``notice_times``), finishes early when the host is
empty, and at the deadline logs off who is left (unless the admin chose to wait). Drains are stored,
so a restarted broker picks them up again. Logging a session off ends it in the store, runs the
host's logoff command over SSH where configured, and tells every gateway to close its connection.
Every step is written to the audit log.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from .audit import AuditLog
from .config import BrokerConfig, HostConfig, TenantConfig
from .errors import Conflict, NotFound
from .host_states import (Action, HostState, InvalidAction, apply, notice_times,
                          takes_new_sessions, takes_reconnects)
from .gateway_control import GatewayControl
from .hosts import HostControl
from .store import ACTIVE_ROW, HostStateRow, SessionRow, Store

logger = logging.getLogger("pforte.admin")

DRAIN_POLL = 1.0        # seconds between checks whether a draining host is empty


class Administration:
    """Host states, drains, probes, logoff and the admin's user actions of every tenant.

    Args:
        identify: ``(tenant, typed) → identity``: the user an admin names, as the directory says.
    """

    def __init__(self, config: BrokerConfig, store: Store, audit: AuditLog, hosts: HostControl,
                 gateways: GatewayControl,
                 identify: Callable[[TenantConfig, str], Awaitable[str]],
                 clock: Callable[[], float]) -> None:
        self.config = config
        self.store = store
        self.audit = audit
        self.hosts = hosts
        self.gateways = gateways
        self.identify = identify
        self.clock = clock
        self.health: dict[tuple[str, str], bool] = {}
        self._drains: dict[tuple[str, str], asyncio.Task] = {}
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._probe_forever()))
        for tenant, host, row in await self.store.draining_hosts():
            if self.config.tenant(tenant) and self.config.tenant(tenant).host(host):
                self._start_drain(tenant, host, row)

    async def close(self) -> None:
        for task in [*self._tasks, *self._drains.values()]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._drains.values(), return_exceptions=True)

    # -- what placement needs ----------------------------------------------------------------
    async def availability(self, tenant: TenantConfig, host_ids: tuple[str, ...]
                           ) -> tuple[list[tuple[str, int, bool]], set[str]]:
        """What placement needs to know of the hosts by their state and health: (host id,
        seats, takes new sessions) of each, and the hosts users may return to."""
        states = await self.store.host_states(tenant.id)
        hosts, back = [], set()
        for host_id in host_ids:
            state = states.get(host_id, ACTIVE_ROW).state
            healthy = self.health.get((tenant.id, host_id), True)
            hosts.append((host_id, tenant.host(host_id).seats, takes_new_sessions(state, healthy)))
            if takes_reconnects(state):
                back.add(host_id)
        return hosts, back

    # -- views -------------------------------------------------------------------------------
    async def host_overview(self, tenant: TenantConfig) -> list[dict]:
        states = await self.store.host_states(tenant.id)
        sessions = await self.store.live_sessions(tenant.id)
        out = []
        for host in tenant.hosts:
            row = states.get(host.id, ACTIVE_ROW)
            used = sum(1 for s in sessions if s.host == host.id)
            out.append({"id": host.id, "address": host.address, "state": row.state.value,
                        "healthy": self.health.get((tenant.id, host.id), True),
                        "seats": host.seats, "used": used, "free": max(host.seats - used, 0),
                        "message": row.message, "deadline": row.deadline,
                        "logoff_at_deadline": row.logoff})
        return out

    async def session_overview(self, tenant: TenantConfig) -> list[dict]:
        return [{"id": s.id, "user": s.login, "pool": s.pool, "host": s.host,
                 "state": s.state.value, "since": s.created}
                for s in await self.store.live_sessions(tenant.id)]

    # -- actions -----------------------------------------------------------------------------
    async def act(self, tenant: TenantConfig, host_id: str, action: Action, *, actor: str,
                  source: str, deadline_seconds: float | None = None, message: str = "",
                  logoff: bool = True) -> dict:
        """Change a host's state; a drain starts its notices and deadline.

        Raises:
            NotFound: no such host in this tenant.
            Conflict: the action does not apply in the host's state.
        """
        host = tenant.host(host_id)
        if host is None:
            raise NotFound(host_id)
        current = (await self.store.host_states(tenant.id)).get(host_id, ACTIVE_ROW)
        try:
            state = apply(current.state, action)
        except InvalidAction as exc:
            raise Conflict(str(exc)) from None
        now = self.clock()
        deadline = now + deadline_seconds if (action is Action.DRAIN and deadline_seconds) else None
        row = HostStateRow(state, message if action is Action.DRAIN else "", deadline, logoff)
        await self.store.set_host_state(tenant.id, host_id, row, now=now)
        detail = f"host={host_id} state={state.value}"
        if action is Action.DRAIN:
            detail += f" deadline={deadline_seconds or 0:.0f}s logoff={logoff}"
        await self.audit.record(tenant.id, actor, source, f"host.{action.value}", "ok", detail)
        task = self._drains.pop((tenant.id, host_id), None)
        if task is not None:
            task.cancel()
        if state is HostState.DRAINING:
            self._start_drain(tenant.id, host_id, row)
        return (await self._one(tenant, host_id))

    async def _one(self, tenant: TenantConfig, host_id: str) -> dict:
        return next(h for h in await self.host_overview(tenant) if h["id"] == host_id)

    async def logoff(self, tenant: TenantConfig, session_id: str, *, actor: str, source: str,
                     why: str = "admin") -> SessionRow:
        """End a session now: store, host (SSH logoff command) and gateways.

        Raises:
            NotFound: no live session with that id in this tenant.
        """
        session = await self.store.end_session(tenant.id, session_id, now=self.clock())
        if session is None:
            raise NotFound(session_id)
        host = tenant.host(session.host)
        if host is not None:
            await self.hosts.logoff(host, session.login)
        await self.gateways.close_session(session_id)
        await self.audit.record(tenant.id, actor, source, "session.logoff", "ok",
                                f"session={session_id} user={session.login} host={session.host} "
                                f"reason={why}")
        return session

    async def assignments(self, tenant: TenantConfig, pool_id: str) -> dict[str, str]:
        """user → host of a dedicated pool."""
        return await self.store.dedicated_hosts(tenant.id, pool_id)

    async def dedicate(self, tenant: TenantConfig, pool_id: str, user: str, host_id: str, *,
                       actor: str, source: str) -> str:
        """Give a user of a dedicated pool their own host; returns the user's canonical identity
        (``user`` is any spelling the directory accepts).

        Raises:
            NotFound: no such pool or host; Conflict: the pool is not dedicated or the host not
                in it.
        """
        pool = tenant.pool(pool_id)
        if pool is None or tenant.host(host_id) is None:
            raise NotFound(f"{pool_id}/{host_id}")
        if not pool.dedicated or host_id not in pool.hosts:
            raise Conflict("the pool is not dedicated, or the host is not in it")
        user = await self.identify(tenant, user)
        await self.store.dedicate(tenant.id, pool_id, user, host_id)
        await self.audit.record(tenant.id, actor, source, "pool.dedicate", "ok",
                                f"pool={pool_id} user={user} host={host_id}")
        return user

    async def reset_mfa(self, tenant: TenantConfig, user: str, *, actor: str,
                        source: str) -> str:
        """Forget a user's authenticator (lost phone): they enrol again at their next login.
        ``user`` is any spelling the directory accepts; the record is the canonical identity's.

        Raises:
            NotFound: the directory has no such user, or the user has no enrolment.
        """
        user = await self.identify(tenant, user)
        if not await self.store.reset_mfa(tenant.id, user):
            raise NotFound(user)
        await self.audit.record(tenant.id, actor, source, "mfa.reset", "ok", f"user={user}")
        return user

    # -- drains ------------------------------------------------------------------------------
    def _start_drain(self, tenant_id: str, host_id: str, row: HostStateRow) -> None:
        self._drains[(tenant_id, host_id)] = asyncio.create_task(
            self._drain(self.config.tenant(tenant_id), host_id, row))

    async def _users_on(self, tenant: TenantConfig, host_id: str) -> list[SessionRow]:
        return [s for s in await self.store.live_sessions(tenant.id) if s.host == host_id]

    async def _drain(self, tenant: TenantConfig, host_id: str, row: HostStateRow) -> None:
        host = tenant.host(host_id)
        clock = self.clock
        pending = notice_times(row.deadline, clock()) if row.deadline else [clock()]
        while True:
            users = await self._users_on(tenant, host_id)
            if not users:
                await self.audit.record(tenant.id, "pforte", "broker", "host.drained", "ok",
                                        f"host={host_id} is empty")
                logger.info("host %s of %s is empty", host_id, tenant.id)
                return
            now = clock()
            if pending and now >= pending[0]:
                pending = [t for t in pending if t > now]
                await self._notify(tenant, host, users, row, now)
            if row.deadline is not None and now >= row.deadline:
                break
            await asyncio.sleep(DRAIN_POLL)
        if not row.logoff:
            await self.audit.record(tenant.id, "pforte", "broker", "host.drain_deadline", "ok",
                                    f"host={host_id} deadline passed; waiting for "
                                    f"{len(users)} users")
            while await self._users_on(tenant, host_id):
                await asyncio.sleep(DRAIN_POLL)
            await self.audit.record(tenant.id, "pforte", "broker", "host.drained", "ok",
                                    f"host={host_id} is empty")
            return
        for session in users:
            try:
                await self.logoff(tenant, session.id, actor="pforte", source="broker",
                                  why="drain deadline")
            except NotFound:
                pass  # left meanwhile
        await self.audit.record(tenant.id, "pforte", "broker", "host.drained", "ok",
                                f"host={host_id} is empty (users logged off at the deadline)")

    async def _notify(self, tenant: TenantConfig, host: HostConfig, users: list[SessionRow],
                      row: HostStateRow, now: float) -> None:
        if row.deadline is not None:
            minutes = max(1, round((row.deadline - now) / 60))
            text = f"{row.message} (in {minutes} min)" if row.message else \
                f"This desktop will be shut down for maintenance in {minutes} min."
        else:
            text = row.message or "This desktop will be shut down for maintenance."
        for session in users:
            delivered = await self.hosts.notify(host, session.login, text)
            await self.audit.record(tenant.id, "pforte", "broker", "host.notice",
                                    "ok" if delivered else "not_delivered",
                                    f"host={host.id} user={session.login}")

    # -- health ------------------------------------------------------------------------------
    async def probe_all(self) -> None:
        for tenant in self.config.tenants:
            results = await asyncio.gather(*(self.hosts.probe(h) for h in tenant.hosts))
            for host, healthy in zip(tenant.hosts, results):
                key = (tenant.id, host.id)
                if self.health.get(key, True) != healthy:
                    logger.warning("host %s of %s is now %s", host.id, tenant.id,
                                   "healthy" if healthy else "UNHEALTHY")
                    await self.audit.record(tenant.id, "pforte", "broker", "host.health",
                                            "healthy" if healthy else "unhealthy",
                                            f"host={host.id}")
                self.health[key] = healthy

    async def _probe_forever(self) -> None:
        while True:
            try:
                await self.probe_all()
            except Exception:
                logger.exception("health probes failed")
            await asyncio.sleep(self.config.probe_interval)
