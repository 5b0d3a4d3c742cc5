"""Connecting a user to a desktop: entitlement, placement, starting her own desktop on a
multi-session host, the ticket for the gateway, and the reconnect passes that bring her back
while the database is down (:mod:`broker.reconnect_pass`)."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from wire import ticket
from wire.events import printable

from . import placement, reconnect_pass
from .admin import Administration
from .audit import AuditLog
from .changes import Changes
from .config import BrokerConfig, HostConfig, PoolConfig, TenantConfig
from .entitlement import entitled_pool, entitled_pools
from .errors import (BrokerError, DesktopStartFailed, NoFreeDesktop, NotConnected,
                     NotEntitled, OwnDesktopUnavailable, PoolBusy, StoreUnavailable)
from .host_control import HostControl, HostUnreachable, desktop_secret
from .logins import check_csrf, open_logon
from .logons import LogonPhases
from .store import Assignment, Login, Store
from .store.sessions import set_logon_in

logger = logging.getLogger("pforte.broker")

# How a placement that found no seat is answered: (audit result, error, audit detail).
REFUSALS: dict[type, tuple[str, type[BrokerError], str]] = {
    placement.PoolFull: ("pool_full", NoFreeDesktop, "{pool}"),
    placement.PoolBusy: ("pool_busy", PoolBusy, "{pool}"),
    placement.OwnHostDown: ("own_host_unavailable", OwnDesktopUnavailable, "pool={pool}"),
}

OUTAGE_TICKET_LIFETIME = 15  # seconds a ticket minted from a reconnect pass lives
SIGN_OUTS_REMEMBERED = 100_000  # sign-outs a broker keeps before it forgets the expired ones


@dataclass(frozen=True)
class Connection:
    """What a client needs to open its desktop through the gateway."""
    ticket: str
    gateway_url: str
    session_id: str
    pool: PoolConfig
    host_id: str
    expires_at: int
    port: int
    protocol: str = "vnc"     # the desktop's: the client speaks to the gateway accordingly


class Connections:
    """A user's way to her desktop, and back to it during a database outage."""

    def __init__(self, config: BrokerConfig, store: Store, audit: AuditLog,
                 admin: Administration, hosts: HostControl, logons: LogonPhases,
                 changes: Changes, signing_key: Ed25519PrivateKey, clock: Callable[[], float],
                 rng: random.Random) -> None:
        self.config = config
        self.store = store
        self.audit = audit
        self.admin = admin
        self.hosts = hosts
        self.logons = logons
        self.changes = changes
        self._signing_key = signing_key
        self.clock = clock
        self.rng = rng
        self._signed_out: dict[str, float] = {}   # login hash -> until when its passes could live

    def forget_passes(self, token: str) -> None:
        """Refuse the reconnect passes of this login token from now on, here, even while the
        database is down: this broker remembers the sign-out for as long as a pass can live
        (at most :data:`SIGN_OUTS_REMEMBERED`, the oldest forgotten first)."""
        now = self.clock()
        until = now + self.config.reconnect_pass_lifetime
        self._signed_out[reconnect_pass.login_hash(token)] = until
        if len(self._signed_out) > SIGN_OUTS_REMEMBERED:
            live = [(h, until) for h, until in self._signed_out.items() if until > now]
            self._signed_out = dict(live[-SIGN_OUTS_REMEMBERED:])

    def entitled_pools(self, login: Login) -> list[PoolConfig]:
        return entitled_pools(self.config.tenant(login.tenant), login.groups)

    async def connect(self, login: Login, pool_id: str, *, source: str,
                      device: str | None = None) -> Connection:
        """Place the user in a pool and issue a ticket for the gateway (``device``: the thin
        client's name, when one asks).

        Raises:
            NotEntitled: unknown pool or not a member of its group (one answer for both).
            NoFreeDesktop: every seat is taken.
        """
        tenant = self.config.tenant(login.tenant)
        pool = entitled_pool(tenant, login.groups, pool_id)
        if pool is None:
            await self.audit.record(login.tenant, login.user, source, "connect", "not_entitled",
                                    pool_id)
            raise NotEntitled(pool_id)
        now = self.clock()
        started = time.perf_counter()
        hosts, reconnect_hosts = await self.admin.availability(tenant, pool.hosts)
        assignment = await self.store.sessions.assign(
            tenant.id, login.user, pool.id, hosts, now=now,
            pending_timeout=self.config.pending_timeout, keep_seconds=pool.disconnected_keep,
            reconnect_hosts=reconnect_hosts, max_in_flight=pool.max_logons_in_flight,
            dedicated=pool.dedicated, rng=self.rng)
        phases = {"placement": time.perf_counter() - started}
        if not isinstance(assignment, Assignment):
            await self.audit.record(login.tenant, login.user, source, "connect",
                                    *self._connect_audit(assignment, pool))
            raise REFUSALS[type(assignment)][1](pool.id)
        host = tenant.host(assignment.host_id)
        port = assignment.port or host.port
        if host.ssh is not None and host.ssh.launch_command and assignment.port is None:
            launching = time.perf_counter()
            port = await self._launch(tenant, host, login, assignment.session_id, source)
            phases["desktop_start"] = time.perf_counter() - launching
        minting = time.perf_counter()
        minted, expires = self._ticket(tenant.id, login.user, assignment.session_id, pool, host,
                                       port, now, self.config.ticket_lifetime,
                                       password=self._password(login.tenant, login.user,
                                                               login.sealed_logon))
        phases["ticket"] = time.perf_counter() - minting
        # The audit entry and the logon's phases are one transaction of their own, after the
        # pool's lock is released: written under the lock it made every placement of a pool
        # wait longer, and in the fleet storm database threads waiting for that lock starved
        # the gateways' redemptions.
        self.logons.observe_all(phases)
        logon = {**dict(login.phases), **phases}
        result, detail = self._connect_audit(assignment, pool)
        await self.store.unit(lambda db: (
            self.audit.entry(login.tenant, login.user, source, "connect", result, detail)(db),
            set_logon_in(db, assignment.session_id, logon, device)))
        self.changes.bump()
        return Connection(minted, self.config.gateway_url, assignment.session_id, pool, host.id,
                          expires, port, host.protocol)

    @staticmethod
    def _connect_audit(decision: Assignment | placement.Refusal,
                       pool: PoolConfig) -> tuple[str, str]:
        """The result and detail a connect's audit entry records."""
        if isinstance(decision, Assignment):
            return "ok", (f"pool={pool.id} host={decision.host_id} "
                          f"session={decision.session_id}"
                          f"{' reconnect' if decision.reconnect else ''}")
        result, _, detail = REFUSALS[type(decision)]
        if isinstance(decision, placement.OwnHostDown):
            detail = f"{detail} host={decision.host_id}"
        return result, detail.format(pool=pool.id)

    @property
    def pass_renew_after(self) -> int:
        """Seconds after which a client asks for a fresh reconnect pass: a third of its life, so
        that a database outage finds every connected user with most of a pass's life left."""
        return max(10, self.config.reconnect_pass_lifetime // 3)

    def reconnect_pass(self, token: str, login: Login, conn: Connection) -> str:
        """The sealed pass back to this desktop while the database is down (broker.reconnect_pass):
        it lives ``reconnect_pass_lifetime`` seconds (at most as long as the login) and is
        renewed while the user is connected (:meth:`renew_pass`)."""
        return self._pass(token, login, conn.pool.id, conn.session_id, conn.host_id, conn.port)

    def _pass(self, token: str, login: Login, pool: str, session: str, host: str,
              port: int) -> str:
        expires = min(int(self.clock()) + self.config.reconnect_pass_lifetime, int(login.expires))
        tenant = self.config.tenant(login.tenant)
        rdp = tenant is not None and (found := tenant.host(host)) is not None and \
            found.protocol == "rdp"
        return reconnect_pass.issue(self.config.totp_key, reconnect_pass.ReconnectPass(
            login_hash=reconnect_pass.login_hash(token), csrf=login.csrf, tenant=login.tenant,
            user=login.user, pool=pool, session=session, host=host, port=port,
            expires_at=expires, sealed_logon=login.sealed_logon if rdp else None))

    def _password(self, tenant: str, user: str, sealed: str | None) -> str | None:
        return open_logon(self.config.credential_key, tenant, user, sealed)

    async def renew_pass(self, token: str, login: Login, pool_id: str) -> str:
        """A fresh reconnect pass to the desktop the user is connected to in the pool.

        Raises:
            NotEntitled: unknown pool or not a member of its group.
            NotConnected: she has no connected session there (a pass is renewed only while
                she uses her desktop).
        """
        tenant = self.config.tenant(login.tenant)
        pool = entitled_pool(tenant, login.groups, pool_id)
        if pool is None:
            raise NotEntitled(pool_id)
        found = await self.store.sessions.connected_desktop(tenant.id, login.user, pool.id)
        host = tenant.host(found.host_id) if found is not None else None
        if found is None or host is None:
            raise NotConnected(pool_id)
        return self._pass(token, login, pool.id, found.session_id, host.id,
                          found.port or host.port)

    def reconnect_in_outage(self, token: str | None, sealed: str, pool_id: str, *,
                            csrf: str | None, source: str) -> Connection:
        """A ticket back to the desktop a pass names, while the database is down; the ticket
        lives :data:`OUTAGE_TICKET_LIFETIME` seconds and is marked for the gateway.

        Raises:
            StoreUnavailable: no valid pass for this login and pool (the database is down, so
                nothing else can be said), or its host is no longer configured.
            BadRequest: a page signed in by cookie sent the wrong CSRF token.
        """
        now = self.clock()
        found = reconnect_pass.open_pass(self.config.totp_key, sealed, token or "",
                                         pool=pool_id, now=now)
        tenant = self.config.tenant(found.tenant) if found else None
        pool = tenant.pool(found.pool) if tenant else None
        host = tenant.host(found.host) if tenant else None
        if found is None or pool is None or host is None or found.login_hash in self._signed_out:
            raise StoreUnavailable("database unavailable and no valid reconnect pass")
        if csrf is not None:
            check_csrf(csrf, found.csrf)
        minted, expires = self._ticket(found.tenant, found.user, found.session, pool, host,
                                       found.port, now, OUTAGE_TICKET_LIFETIME, outage=True,
                                       password=self._password(found.tenant, found.user,
                                                               found.sealed_logon))
        logger.warning("database unavailable: %s@%s reconnects to session %s on %s from %s "
                       "with a reconnect pass", found.user, found.tenant, found.session, host.id,
                       printable(source))
        return Connection(minted, self.config.gateway_url, found.session, pool, host.id,
                          expires, found.port, host.protocol)

    def _ticket(self, tenant: str, user: str, session: str, pool: PoolConfig, host: HostConfig,
                port: int, now: float, lifetime: int, *, outage: bool = False,
                password: str | None = None) -> tuple[str, int]:
        """The one ticket minter: a signed ticket to that session's desktop (its secret sealed
        in it: a VNC desktop's password, or for an RDP host the user's Windows logon when her
        ``password`` is known), and when it expires."""
        ticket_id = ticket.new_ticket_id()
        issued = int(now)
        rdp = host.protocol == "rdp"
        if rdp:
            secret = (ticket.logon_secret(user, host.logon_domain, password)
                      if password is not None else None)
        else:
            secret = desktop_secret(host, session)
        claims = ticket.Claims(
            ticket_id=ticket_id, issued_at=issued, expires_at=issued + lifetime,
            audience=self.config.gateway_audience, tenant=tenant, user=user, session=session,
            target=ticket.Target(host.address, port, host.protocol),
            sealed_secret=(ticket.seal_secret(self.config.credential_key, ticket_id, secret)
                           if secret is not None else None),
            idle_after=pool.idle_logoff, clipboard=pool.clipboard, outage=outage,
            keyboard=ticket.KEYBOARD_LAYOUTS[pool.keyboard_layout] if rdp else 0,
            channels=tuple(name for name, on in (("drives", pool.drives),
                                                  ("printers", pool.printers),
                                                  ("audio", pool.audio)) if on and rdp),
            certificate=host.certificate_sha256)
        return ticket.mint(self._signing_key, claims), issued + lifetime

    async def _launch(self, tenant: TenantConfig, host: HostConfig, login: Login,
                      session_id: str, source: str) -> int:
        """Start the user's own desktop on a multi-session host; its port."""
        try:
            port = await self.hosts.launch(host, login.user, desktop_secret(host, session_id))
        except HostUnreachable as exc:
            await self.store.sessions.end(tenant.id, session_id, now=self.clock())
            await self.audit.record(tenant.id, login.user, source, "desktop.launch", "failed",
                             f"host={host.id} {exc}")
            raise DesktopStartFailed(host.id) from None
        await self.store.sessions.set_port(session_id, port)
        await self.audit.record(tenant.id, login.user, source, "desktop.launch", "ok",
                         f"host={host.id} port={port} session={session_id}")
        return port
