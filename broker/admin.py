"""Administration: host states and drains, health probes, sessions and logoff (maintenance
windows drain through it: :mod:`broker.maintenance_windows`).

Theory of operation
-------------------
Host states and health live in the store (``broker.host_states`` has the rules), so every broker
of a fleet sees the same. Placement asks :meth:`Administration.availability` which hosts take new
sessions and which let users back.

The health probes run once across the fleet (``broker.duties``: the broker holding the lease runs
them): :meth:`probe_all` refreshes health every ``probe_interval``. Drains move on by
:mod:`broker.drains`. Logging a session off ends it in the store, runs the host's logoff command
over SSH where configured, and tells every gateway to close its connection. Every step is
written to the audit log.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from .audit import AuditLog
from .config import BrokerConfig, TenantConfig
from .errors import BadRequest, Conflict, NotFound
from .host_states import (TRANSITIONS, Action, InvalidAction, apply,
                          takes_new_sessions, takes_reconnects)
from .gateway_control import GatewayControl
from .logons import summary
from .placement import Candidate
from .usage import Past, PoolUsage, month_bounds, month_of, tally
from .host_control import HostControl
from .store import ACTIVE_ROW, HostStateRow, SessionRow, Store

logger = logging.getLogger("pforte.admin")

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

    # -- what placement needs ----------------------------------------------------------------
    async def availability(self, tenant: TenantConfig, host_ids: tuple[str, ...]
                           ) -> tuple[list[Candidate], set[str]]:
        """What placement needs to know of the hosts by their state and health: each host as a
        candidate, and the hosts users may return to."""
        states, health = await self.store.hosts.states_and_health(tenant.id)
        hosts, back = [], set()
        for host_id in host_ids:
            state = states.get(host_id, ACTIVE_ROW).state
            healthy = health.get(host_id, True)
            hosts.append(Candidate(host_id, tenant.host(host_id).seats,
                                   takes_new_sessions(state, healthy)))
            if takes_reconnects(state):
                back.add(host_id)
        return hosts, back

    # -- views -------------------------------------------------------------------------------
    async def host_overview(self, tenant: TenantConfig) -> list[dict]:
        states, health = await self.store.hosts.states_and_health(tenant.id)
        sessions = await self.store.sessions.live(tenant.id)
        out = []
        for host in tenant.hosts:
            row = states.get(host.id, ACTIVE_ROW)
            used = sum(1 for s in sessions if s.host == host.id)
            out.append({"id": host.id, "address": host.address, "state": row.state.value,
                        "healthy": health.get(host.id, True),
                        "seats": host.seats, "used": used, "free": max(host.seats - used, 0),
                        "message": row.message, "deadline": row.deadline,
                        "logoff_at_deadline": row.logoff,
                        "actions": [a.value for (st, a) in TRANSITIONS
                                    if st is row.state and (apply(st, a) is not st
                                                            or a is Action.DRAIN)]})
        return out

    async def session_overview(self, tenant: TenantConfig) -> list[dict]:
        logons = await self.store.sessions.logons(tenant.id)
        return [{"id": s.id, "user": s.login, "pool": s.pool,
                 "pool_name": pool_name(tenant, s.pool), "host": s.host,
                 "state": s.state.value, "since": s.created,
                 "logon": summary(logons[s.id][0]) if s.id in logons else None,
                 "device": logons[s.id][1] if s.id in logons else None}
                for s in await self.store.sessions.live(tenant.id)]

    async def usage(self, tenant: TenantConfig, month: str | None = None
                    ) -> tuple[str, list[PoolUsage]]:
        """Desktop-hours and sessions per pool in a month (``YYYY-MM``; the current one when
        None), in the broker's time zone.

        Raises:
            BadRequest: not a month.
        """
        now = self.clock()
        month = month or month_of(now, self.config.time_zone)
        try:
            start, end = month_bounds(month, self.config.time_zone)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        history = [Past(*row) for row in await self.store.sessions.history(tenant.id, start, end)]
        return month, tally(history, start, end, now)

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
        current = (await self.store.hosts.states(tenant.id)).get(host_id, ACTIVE_ROW)
        try:
            state = apply(current.state, action)
        except InvalidAction as exc:
            raise Conflict(str(exc)) from None
        now = self.clock()
        drain = action is Action.DRAIN
        deadline = now + deadline_seconds if (drain and deadline_seconds) else None
        row = HostStateRow(state, message if drain else "", deadline, logoff,
                           next_notice=now if drain else None)  # the first notice: at once
        await self.store.hosts.set_state(tenant.id, host_id, row, now=now)
        detail = f"host={host_id} state={state.value}"
        if action is Action.DRAIN:
            detail += f" deadline={deadline_seconds or 0:.0f}s logoff={logoff}"
        await self.audit.record(tenant.id, actor, source, f"host.{action.value}", "ok", detail)
        return (await self._one(tenant, host_id))

    async def _one(self, tenant: TenantConfig, host_id: str) -> dict:
        return next(h for h in await self.host_overview(tenant) if h["id"] == host_id)

    async def revoke_tokens(self, scope: str, name: str, *, actor: str, source: str) -> int:
        """Revoke the admin API tokens named ``name`` of a tenant (``scope``: its id, or
        OPERATOR); how many. They are refused from their next request on, and the event streams
        they opened end at their next wake-up (the audit entry wakes them)."""
        count = await self.store.admin.revoke_tokens(scope, name)
        await self.audit.record(scope, actor, source, "admin_token.revoke", "ok",
                                f"name={name} tokens={count}")
        return count

    async def logoff(self, tenant: TenantConfig, session_id: str, *, actor: str, source: str,
                     why: str = "admin") -> SessionRow:
        """End a session now: store, host (SSH logoff command) and gateways.

        Raises:
            NotFound: no live session with that id in this tenant.
        """
        session = await self.store.sessions.end(tenant.id, session_id, now=self.clock())
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
        return await self.store.sessions.dedicated_hosts(tenant.id, pool_id)

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
        await self.store.sessions.dedicate(tenant.id, pool_id, user, host_id)
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
        if not await self.store.accounts.reset_mfa(tenant.id, user):
            raise NotFound(user)
        await self.audit.record(tenant.id, actor, source, "mfa.reset", "ok", f"user={user}")
        return user

    # -- drains (a duty) ----------------------------------------------------------------------
    async def message(self, tenant: TenantConfig, session_id: str, text: str, *, actor: str,
                      source: str) -> bool:
        """Show an admin's message to the user of a session: inside the session, and over SSH
        on the host where one is configured; whether it reached the user either way.

        Raises:
            NotFound: no live session with that id in this tenant.
        """
        session = next((s for s in await self.store.sessions.live(tenant.id)
                        if s.id == session_id), None)
        if session is None:
            raise NotFound(session_id)
        host = tenant.host(session.host)
        on_host = host is not None and await self.hosts.notify(host, session.login, text)
        in_session = await self.gateways.notify(session_id, text)
        await self.audit.record(tenant.id, actor, source, "session.message",
                                "ok" if on_host or in_session else "not_delivered",
                                f"session={session_id} user={session.login} "
                                f"on_host={'yes' if on_host else 'no'} "
                                f"in_session={'yes' if in_session else 'no'}")
        return on_host or in_session

    # -- health (a duty) ----------------------------------------------------------------------
    async def probe_all(self) -> None:
        """Probe every host and record what was found (one broker of the fleet runs this)."""
        for tenant in self.config.tenants:
            results = await asyncio.gather(*(self.hosts.probe(h) for h in tenant.hosts))
            for host, healthy in zip(tenant.hosts, results):
                found = "healthy" if healthy else "unhealthy"
                if await self.store.hosts.set_health(
                        tenant.id, host.id, healthy, now=self.clock(),
                        if_changed=self.audit.entry(tenant.id, "pforte", "broker", "host.health",
                                                    found, f"host={host.id}")):
                    logger.warning("host %s of %s is now %s", host.id, tenant.id, found.upper()
                                   if not healthy else found)


def pool_name(tenant: TenantConfig, pool_id: str) -> str:
    """What users call a pool (its id when it is no longer configured)."""
    pool = tenant.pool(pool_id)
    return pool.name if pool is not None else pool_id
