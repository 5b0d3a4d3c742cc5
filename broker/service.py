"""The broker's use cases — login, one-time code, entitlement, connect, gateway reports — over the
config, the directories and the store. No HTTP here: ``broker.web`` is a thin layer on top.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import random
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

from cryptography.hazmat.primitives.serialization import load_pem_private_key

from wire import reports, ticket
from wire.closes import EndReason
from wire.errors import TicketError

from . import mfa, placement, reconnect_pass
from .admin import Administration
from .audit import AuditLog, printable
from .changes import Changes
from .logons import LogonPhases
from .config import BrokerConfig, HostConfig, PoolConfig, TenantConfig
from .devices import Devices
from .directory import Directory, canonical
from .duties import Duties, Duty
from .entitlement import entitled_pool, entitled_pools
from .gateway_control import GatewayControl
from .hosts import HostControl, HostUnreachable, desktop_secret
from .throttle import Key, Outcome
from .errors import (BadCredentials, BadRequest, BrokerError, CodeRejected, DesktopStartFailed,
                     DirectoryUnavailable, LoginRequired, NoFreeDesktop, NotConnected, NotEntitled,
                     NotFound, OwnDesktopUnavailable, PoolBusy, StoreUnavailable,
                     TooManyAttempts, UnknownTenant)
from .engine import Tx
from .store import (OPERATOR, Assignment, Fragment, Login, Store, TicketAlreadyRedeemed,
                    UserMfa)
from .store.accounts import accept_step_in, read_mfa, set_recovery_codes_in, use_recovery_code_in
from .store.sessions import set_logon_in
from .store.throttles import lock_names as throttle_locks
from .store.throttles import reserve_in, settle_in

logger = logging.getLogger("pforte.broker")

# How a placement that found no seat is answered: (audit result, error, audit detail).
REFUSALS: dict[type, tuple[str, type[BrokerError], str]] = {
    placement.PoolFull: ("pool_full", NoFreeDesktop, "{pool}"),
    placement.PoolBusy: ("pool_busy", PoolBusy, "{pool}"),
    placement.OwnHostDown: ("own_host_unavailable", OwnDesktopUnavailable, "pool={pool}"),
}

HOUSEKEEPING_INTERVAL = 5.0  # seconds between timer sweeps of the session table
DRAIN_INTERVAL = 1.0         # seconds between looks at the drains
MAINTENANCE_INTERVAL = 15.0  # seconds between looks at the maintenance windows
OUTAGE_TICKET_LIFETIME = 15  # seconds a ticket minted from a reconnect pass lives
SIGN_OUTS_REMEMBERED = 100_000  # sign-outs a broker keeps before it forgets the expired ones
MAX_LOGIN_LENGTH = 256
MAX_PASSWORD_LENGTH = 1024


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


@dataclass
class Attempt:
    """A throttled attempt in progress (see Broker._attempt): the keys reserved so far, whom a
    failure is audited under, and what the use case records once it succeeded."""
    keys: list[Key]
    actor: str
    audit_failure: bool = False      # until the directory named the user
    on_success: list[Fragment] = field(default_factory=list)


@dataclass(frozen=True)
class Spend:
    """What a checked code is worth: a TOTP step, a recovery code (by its hash), or a refusal."""
    step: int = 0
    recovery_hash: str | None = None
    refused: CodeRejected | None = None
    phases: dict[str, float] = field(default_factory=dict)   # what the check took (logon)


@dataclass(frozen=True)
class AdminPrincipal:
    """Who calls the admin API: an API token (bound to a tenant, or to all: OPERATOR) or a portal
    login (password and second factor) of a member of a tenant's admin group."""
    actor: str                        # for the audit log: "token:NAME" or the admin's identity
    token_tenant: str | None = None   # an API token's scope
    login: Login | None = None        # a portal login's

    def may(self, tenant: TenantConfig) -> bool:
        if self.token_tenant is not None:
            return self.token_tenant in (OPERATOR, tenant.id)
        return (self.login is not None and self.login.tenant == tenant.id
                and bool(tenant.admin_group) and tenant.admin_group.lower() in self.login.groups)


@dataclass(frozen=True)
class Enrolment:
    secret: str
    uri: str
    qr_svg: str


class Broker:
    def __init__(self, config: BrokerConfig, store: Store, *,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.rng = rng or random.SystemRandom()
        self._signing_key = load_pem_private_key(config.ticket_private_key, password=None)
        self._signed_out: dict[str, float] = {}   # login hash -> until when its passes could live
        self._executor = ThreadPoolExecutor(max_workers=config.directory_threads,
                                            thread_name_prefix="pforte-ldap")
        self.directories = {t.id: Directory(t.directory, self._executor) for t in config.tenants}
        # the composition root: each collaborator gets what it needs, none gets the Broker
        self.changes = Changes()
        self.logons = LogonPhases()
        self.audit = AuditLog(store, clock, on_record=self.changes.bump)
        self.hosts = HostControl(config.ssh_key, str(config.ssh_known_hosts)
                                 if config.ssh_known_hosts else None)
        self.gateways = GatewayControl(config.gateway_control_urls, config.report_token)
        self.admin = Administration(config, store, self.audit, self.hosts, self.gateways,
                                    self.identity, clock)
        self.devices = Devices(config, store, self.audit, clock)
        self.duties = Duties(store, clock, [
            Duty("expiry", HOUSEKEEPING_INTERVAL, self._expire),
            Duty("probes", config.probe_interval, self.admin.probe_all),
            Duty("drains", DRAIN_INTERVAL, self.admin.drain_tick),
            Duty("maintenance windows", MAINTENANCE_INTERVAL, self.admin.maintenance_tick)])

    async def start(self) -> None:
        await self.store.open()
        await self.gateways.start()
        await self.duties.start()

    async def close(self) -> None:
        await self.duties.close()
        await self.hosts.close()
        await self.gateways.close()
        await self.store.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _expire(self) -> None:
        """Apply the session timers and the gateways' leases (a duty)."""
        ended = await self.store.sessions.expire(
            self.clock(), gateway_lease=self.config.gateway_lease,
            keep_history=self.config.session_history_days * 86400)
        if ended:
            logger.info("ended %d sessions whose time ran out", ended)

    # -- tenants -----------------------------------------------------------------------------
    def resolve(self, typed: str, portal_host: str | None) -> tuple[TenantConfig, str]:
        """Find the tenant and the directory login from what the user typed.

        ``name@domain`` and ``DOMAIN\\name`` name the tenant by one of its login domains (for
        ``DOMAIN\\`` the first label); a plain name needs a tenant-specific portal host name, or
        a broker with a single tenant. Never guesses across tenants.

        Raises:
            UnknownTenant: no tenant matches.
        """
        typed = typed.strip()
        if "\\" in typed:
            prefix, _, name = typed.partition("\\")
            for t in self.config.tenants:
                if any(prefix.lower() == d.split(".")[0] for d in t.domains):
                    return t, name
            raise UnknownTenant(prefix)
        if "@" in typed:
            name, _, domain = typed.rpartition("@")
            for t in self.config.tenants:
                if domain.lower() in t.domains:
                    return t, name
            raise UnknownTenant(domain)
        host = (portal_host or "").split(":")[0].lower()
        for t in self.config.tenants:
            if host and host in t.portal_hosts:
                return t, typed
        if len(self.config.tenants) == 1:
            return self.config.tenants[0], typed
        raise UnknownTenant("plain name without a tenant portal")

    # -- login -------------------------------------------------------------------------------
    async def password_login(self, typed: str, password: str, *, source: str,
                             portal_host: str | None = None) -> tuple[str, Login]:
        """First factor. Returns a new login token (for the cookie) and the login, which names
        the user by the canonical identity the directory's entry gives, whatever was typed.

        The attempt is counted against the client's address before the directory is asked, and
        against the user's identity before the password is checked (see :mod:`broker.throttle`).

        Raises:
            BadRequest, UnknownTenant, TooManyAttempts, BadCredentials, AccountState,
            DirectoryUnavailable.
        """
        if len(typed) > MAX_LOGIN_LENGTH or len(password) > MAX_PASSWORD_LENGTH:
            raise BadRequest("field too long")
        if "\x00" in typed:  # no directory name holds one; PostgreSQL could not even store it
            raise BadRequest("user name with a NUL character")
        try:
            tenant, name = self.resolve(typed, portal_host)
        except UnknownTenant:
            await self.audit.record("-", typed[:64], source, "login", "unknown_tenant")
            raise
        directory = self.directories[tenant.id]
        async with self._attempt([self._source_key(source)], tenant.id, name, source,
                                 "login.password") as attempt:
            started = time.perf_counter()
            entry = await directory.find(name)
            searched = time.perf_counter() - started
            identity = entry.login if entry is not None else canonical(name)
            await self._reserve_also(attempt, [self._user_key(tenant.id, identity, complete=False)],
                                     tenant.id, identity, source, "login.password")
            user = await directory.verify(entry, password)
            token = secrets.token_urlsafe(32)
            login = Login(tenant=tenant.id, user=user.login, display_name=user.display_name,
                          groups=user.groups, mfa_done=False, csrf=secrets.token_urlsafe(24),
                          expires=self.clock() + self.config.login_lifetime,
                          phases=(("directory_search", searched),
                                  ("directory_bind", user.bind_seconds),
                                  ("directory_groups", user.groups_seconds)))
            self.logons.observe_all(dict(login.phases))
            attempt.on_success += [  # recorded with the settlement: one transaction
                self.store.accounts.new_login(token, login),
                self.audit.entry(tenant.id, user.login, source, "login.password", "ok")]
        return token, login

    def _user_key(self, tenant: str, identity: str, *, complete: bool) -> Key:
        """The user's record; only a ``complete`` login (second factor passed) forgets it, so
        that a known password cannot wipe a guessing run against the one-time code."""
        return Key(f"user:{tenant}/{identity}", self.config.user_throttle,
                   forget_on_success=complete)

    def _source_key(self, source: str) -> Key:
        return Key(f"source:{source}", self.config.source_throttle)

    @contextlib.asynccontextmanager
    async def _attempt(self, keys: list[Key], tenant: str, actor: str, source: str,
                       action: str) -> AsyncIterator[Attempt]:
        """For a use case whose check waits for something outside (the directory's bind): reserve
        an attempt on ``keys`` (or refuse it: TooManyAttempts), run the body, then settle every
        key reserved by how the body ended — a wrong secret counts, success forgets or gives back,
        anything else (directory down, account state) gives back. The settlement, what the body
        adds to ``on_success`` and a failure's audit entry are one transaction."""
        await self._reserve(keys, tenant, actor, source, action)
        attempt = Attempt(list(keys), actor)
        outcome, also = Outcome.VOID, []
        try:
            yield attempt
            outcome, also = Outcome.SUCCEEDED, attempt.on_success
        except (BadCredentials, CodeRejected) as exc:
            outcome = Outcome.FAILED
            if attempt.audit_failure:
                also = [self.audit.entry(tenant, attempt.actor, source, action, exc.code,
                                         str(exc))]
            raise
        except BrokerError as exc:
            if attempt.audit_failure:
                also = [self.audit.entry(tenant, attempt.actor, source, action, exc.code)]
            raise
        finally:
            await self.store.throttles.settle(attempt.keys, outcome, now=self.clock(), also=also)

    async def _reserve_also(self, attempt: Attempt, keys: list[Key], tenant: str, actor: str,
                            source: str, action: str) -> None:
        """Reserve on more keys once the body knows them (the user's, after the directory named
        them); they are settled with the rest, and a failure from now on is audited as ``actor``."""
        await self._reserve(keys, tenant, actor, source, action)
        attempt.keys += keys
        attempt.actor, attempt.audit_failure = actor, True

    async def _reserve(self, keys: list[Key], tenant: str, actor: str, source: str,
                       action: str) -> None:
        if not await self.store.throttles.reserve(keys, now=self.clock()):
            await self.audit.record(tenant, actor, source, action, "locked_out")
            raise TooManyAttempts("locked out")

    async def identity(self, tenant: TenantConfig, typed: str) -> str:
        """The canonical identity of a user an admin names (any spelling the directory accepts,
        also ``name@domain`` or ``DOMAIN\\name`` of this tenant).

        Raises:
            NotFound: the directory knows no such user; DirectoryUnavailable.
        """
        name = typed.strip()
        if "\\" in name:
            name = name.partition("\\")[2]
        elif "@" in name:
            local, _, domain = name.rpartition("@")
            name = local if domain.lower() in tenant.domains else name
        entry = await self.directories[tenant.id].find(name)
        if entry is None:
            raise NotFound("user")
        return entry.login

    async def admin_principal(self, token: str) -> AdminPrincipal:
        """Who an admin API token (or a complete portal login's token) is.

        Raises:
            LoginRequired: neither an admin token nor a complete login.
        """
        scope = await self.store.admin.token(token)
        if scope is not None:
            return AdminPrincipal(f"token:{scope[1]}", token_tenant=scope[0])
        login = await self.login_for(token)
        return AdminPrincipal(login.user, login=login)

    async def still_admin(self, token: str, tenant: TenantConfig, *,
                          ask_directory: bool) -> bool:
        """Whether ``token`` still makes its holder an admin of ``tenant``: the login (signed
        out, expired) or the API token (revoked) is still valid and, with ``ask_directory``, a
        portal login's user is still in the tenant's admin group as the directory says now (a
        directory that does not answer leaves the login's word standing)."""
        try:
            principal = await self.admin_principal(token)
        except LoginRequired:
            return False
        if not principal.may(tenant):
            return False
        if not ask_directory or principal.login is None:
            return True
        directory = self.directories[tenant.id]
        try:
            entry = await directory.find(principal.login.user)
            return entry is not None and tenant.admin_group.lower() in {
                g.lower() for g in await directory.groups(entry)}
        except DirectoryUnavailable:
            return True

    async def login_for(self, token: str | None, *, need_mfa: bool = True) -> Login:
        """The login behind a token.

        Raises:
            LoginRequired: no such login, expired, or the second factor is still missing.
        """
        login = await self.store.accounts.get_login(token, self.clock()) if token else None
        if login is None or (need_mfa and not login.mfa_done):
            raise LoginRequired("no valid login")
        return login

    async def is_enrolled(self, login: Login) -> bool:
        return (await self.store.accounts.user_mfa(login.tenant, login.user)).confirmed

    async def enrolment(self, login: Login) -> Enrolment:
        """The secret to enrol (the same one until it is confirmed).

        Raises:
            BadRequest: the user is enrolled already.
        """
        state = await self.store.accounts.user_mfa(login.tenant, login.user)
        if state.confirmed:
            raise BadRequest("already enrolled")
        context = f"{login.tenant}/{login.user}"
        if state.totp_sealed:  # started before: show the same secret again
            secret = mfa.unseal(self.config.totp_key, state.totp_sealed, context)
        else:
            secret = mfa.new_secret()
            await self.store.accounts.begin_enrolment(login.tenant, login.user,
                                             mfa.seal(self.config.totp_key, secret, context))
        tenant = self.config.tenant(login.tenant)
        account = f"{login.user}@{tenant.domains[0]}"
        uri = mfa.provisioning_uri(secret, account)
        return Enrolment(secret, uri, mfa.qr_svg(uri))

    async def import_enrolment(self, tenant: str, login: str, secret: str) -> None:
        """Enrol a user with a known TOTP secret, confirmed (the demo's users; migrations)."""
        await self.store.accounts.set_enrolment(tenant, login,
                                       mfa.seal(self.config.totp_key, secret, f"{tenant}/{login}"))
        await self.audit.record(tenant, login, "admin", "mfa.import", "ok")

    async def second_factor(self, token: str, login: Login, code: str, *,
                            source: str) -> list[str] | None:
        """Check a one-time code or a recovery code; the first code also confirms an enrolment.

        Returns:
            The new recovery codes when this code completed an enrolment (show them once), else
            None.

        Two short transactions under the throttle keys' locks, the code checked between them
        (no database work while a lock is held but the database's own): the first counts the
        attempt against the user and the address and reads the enrolment; the second spends the
        step (or recovery code) — a conditional statement, so a step is taken once however many
        checks raced — completes the login, settles the throttle and writes the audit. A town
        hall's thin clients share one address: a lock held across the whole check would queue
        them all. A login whose second factor is complete answers any further code with success
        and changes nothing: a request repeated by a load balancer (its first broker died after
        accepting the code) must not turn into "code already used".

        Raises:
            CodeRejected (or its CodeReplayed), TooManyAttempts, LoginRequired.
        """
        if login.mfa_done:
            return None
        tenant, user = login.tenant, login.user
        started = time.perf_counter()
        keys = [self._user_key(tenant, user, complete=True), self._source_key(source)]
        locks = throttle_locks(keys)
        state = await self.store.unit(
            lambda db: self._begin_code_check(db, login, code, keys, source, self.clock()),
            locks=locks)
        if isinstance(state, BrokerError):
            raise state
        context = f"{tenant}/{user}"
        recovery = state.confirmed and mfa.looks_like_recovery_code(code)
        try:
            if recovery:
                spend = Spend(recovery_hash=mfa.recovery_hash(self.config.totp_key, context, code))
            else:
                secret = mfa.unseal(self.config.totp_key, state.totp_sealed, context)
                spend = Spend(step=mfa.check_code(secret, code, now=self.clock(),
                                                  last_step=state.last_step))
        except CodeRejected as exc:
            spend = Spend(refused=exc)
        spend.phases["second_factor"] = time.perf_counter() - started
        new_codes = None if state.confirmed else mfa.new_recovery_codes()
        verdict = await self.store.unit(
            lambda db: self._finish_code_check(db, token, login, state, spend, keys, source,
                                               self.clock(), new_codes), locks=locks)
        if isinstance(verdict, BrokerError):
            raise verdict
        self.logons.observe_all(spend.phases)
        return new_codes

    @staticmethod
    def _action(state: UserMfa, code_is_recovery: bool) -> str:
        return ("login.recovery" if code_is_recovery else "login.totp" if state.confirmed
                else "mfa.enrol")

    def _begin_code_check(self, db: Tx, login: Login, code: str, keys: list[Key], source: str,
                          now: float) -> UserMfa | BrokerError:
        """Count the attempt (or refuse it) and read the enrolment: the first transaction."""
        state = read_mfa(db, login.tenant, login.user)
        if not reserve_in(db, keys, now):
            recovery = state.confirmed and mfa.looks_like_recovery_code(code)
            self.audit.entry(login.tenant, login.user, source,
                             self._action(state, recovery), "locked_out")(db)
            return TooManyAttempts("locked out")
        if not state.totp_sealed:
            settle_in(db, keys, Outcome.VOID, now)
            return LoginRequired("no enrolment started")
        return state

    def _finish_code_check(self, db: Tx, token: str, login: Login, state: UserMfa, spend: Spend,
                           keys: list[Key], source: str, now: float,
                           new_codes: list[str] | None) -> BrokerError | None:
        """Spend what the code was worth, settle, audit: the second transaction. A refusal is
        returned, not raised, so that what it counted is committed."""
        tenant, user = login.tenant, login.user
        action = self._action(state, spend.recovery_hash is not None)
        refused = spend.refused
        if refused is None and spend.recovery_hash is not None:
            if not use_recovery_code_in(db, tenant, user, spend.recovery_hash, now=now,
                                        completes=token, phases=spend.phases):
                refused = CodeRejected("unknown or spent recovery code")
        elif refused is None and not accept_step_in(db, tenant, user, spend.step,
                                                    confirm=not state.confirmed,
                                                    completes=token, phases=spend.phases):
            refused = mfa.CodeReplayed("step used concurrently")
        if refused is not None:
            settle_in(db, keys, Outcome.FAILED, now)
            self.audit.entry(tenant, user, source, action, refused.code, str(refused))(db)
            return refused
        settle_in(db, keys, Outcome.SUCCEEDED, now)
        self.audit.entry(tenant, user, source, action, "ok")(db)
        if new_codes is not None:
            set_recovery_codes_in(db, tenant, user, [
                mfa.recovery_hash(self.config.totp_key, f"{tenant}/{user}", c)
                for c in new_codes])
        return None

    async def logout(self, token: str) -> None:
        """End a portal login; its reconnect passes die with it (:meth:`forget_passes`)."""
        self.forget_passes(token)
        await self.store.accounts.delete_login(token)

    def forget_passes(self, token: str) -> None:
        """Refuse the reconnect passes of this login token from now on, here, even while the
        database is down: this broker remembers the sign-out for as long as a pass can live
        (at most :data:`SIGN_OUTS_REMEMBERED`, the oldest forgotten first)."""
        now = self.clock()
        self._signed_out[reconnect_pass.login_hash(token)] = now + self.config.reconnect_pass_lifetime
        if len(self._signed_out) > SIGN_OUTS_REMEMBERED:
            live = [(h, until) for h, until in self._signed_out.items() if until > now]
            self._signed_out = dict(live[-SIGN_OUTS_REMEMBERED:])

    # -- desktops ----------------------------------------------------------------------------
    def administers(self, login: Login) -> bool:
        """Whether a portal login may use the admin API (and so the console) for its tenant."""
        tenant = self.config.tenant(login.tenant)
        return tenant is not None and AdminPrincipal(login.user, login=login).may(tenant)

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
        ticket_id = ticket.new_ticket_id()
        issued = int(now)
        expires = issued + self.config.ticket_lifetime
        secret = desktop_secret(host, assignment.session_id)
        sealed = (ticket.seal_secret(self.config.credential_key, ticket_id, secret)
                  if secret is not None else None)
        claims = ticket.Claims(
            ticket_id=ticket_id, issued_at=issued, expires_at=expires,
            audience=self.config.gateway_audience, tenant=tenant.id, user=login.user,
            session=assignment.session_id,
            target=ticket.Target(host.address, port, host.protocol), sealed_secret=sealed,
            idle_after=pool.idle_logoff, clipboard=pool.clipboard)
        minted = ticket.mint(self._signing_key, claims)
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
                          expires, port)

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
        return reconnect_pass.issue(self.config.totp_key, reconnect_pass.ReconnectPass(
            login_hash=reconnect_pass.login_hash(token), csrf=login.csrf, tenant=login.tenant,
            user=login.user, pool=pool, session=session, host=host, port=port,
            expires_at=expires))

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
        if csrf is not None and not hmac.compare_digest(csrf.encode(), found.csrf.encode()):
            raise BadRequest("CSRF token missing or wrong")
        ticket_id = ticket.new_ticket_id()
        issued = int(now)
        expires = issued + OUTAGE_TICKET_LIFETIME
        claims = ticket.Claims(
            ticket_id=ticket_id, issued_at=issued, expires_at=expires,
            audience=self.config.gateway_audience, tenant=found.tenant, user=found.user,
            session=found.session, target=ticket.Target(host.address, found.port, host.protocol),
            sealed_secret=(ticket.seal_secret(self.config.credential_key, ticket_id,
                                              desktop_secret(host, found.session))
                           if host.secret is not None else None),
            idle_after=pool.idle_logoff, clipboard=pool.clipboard, outage=True)
        logger.warning("database unavailable: %s@%s reconnects to session %s on %s from %s "
                       "with a reconnect pass", found.user, found.tenant, found.session, host.id,
                       printable(source))
        return Connection(ticket.mint(self._signing_key, claims), self.config.gateway_url,
                          found.session, pool, host.id, expires, found.port)

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

    # -- gateway reports ---------------------------------------------------------------------
    async def redeem(self, batch: list[reports.Redemption]) -> list[str]:
        """Record tickets' single use, a gateway's batch in one transaction; per ticket
        :data:`~wire.reports.REDEEMED`, or why not (used before, or its session is gone)."""
        refusals = await self.store.sessions.redeem_many(
            [(r.ticket_id, r.expires_at, r.tenant, r.user, r.session) for r in batch],
            now=self.clock())
        results = []
        for r, refusal in zip(batch, refusals):
            if refusal is None:
                results.append(reports.REDEEMED)
                continue
            await self.audit.record(r.tenant, r.user, "gateway", "ticket.redeem",
                                    refusal.__name__)
            results.append("replayed" if refusal is TicketAlreadyRedeemed else "unknown_session")
        return results

    async def disconnected(self, batch: list[reports.Disconnect]) -> None:
        """A gateway's reports (the sessions' states in one transaction); a session the gateway
        ended for idleness is logged off (the pool's ``idle_logoff`` policy, which the ticket
        carried). A report counts only for a viewer the reporting gateway redeemed (it names
        the ticket): another one's is audited and changes nothing."""
        applied = await self.store.sessions.disconnect_many(
            [(r.tenant, r.session, r.ticket) for r in batch], now=self.clock())
        self.changes.bump()
        for report, viewer in zip(batch, applied):
            if viewer:
                await self._after_disconnect(report)
            else:    # not a viewer this gateway redeemed (or one gone already): nothing changes
                await self.audit.record(report.tenant if self.config.tenant(report.tenant)
                                        else "-", report.user or "?", "gateway",
                                        "session.disconnect", "not_a_viewer",
                                        f"session={report.session}")

    async def _after_disconnect(self, report: reports.Disconnect) -> None:
        tenant = self.config.tenant(report.tenant)
        if report.clipboard and tenant is not None:
            counts = " ".join(f"{k}={n}" for k, n in report.clipboard.items())
            blocked = report.clipboard.get("in_blocked", 0) + report.clipboard.get("out_blocked", 0)
            await self.audit.record(tenant.id, report.user or "?", "gateway", "session.clipboard",
                                    "blocked" if blocked else "ok",
                                    f"session={report.session} {counts}")
        if report.reason is EndReason.IDLE and tenant is not None:
            try:
                await self.admin.logoff(tenant, report.session, actor="pforte",
                                        source="gateway", why="idle")
            except NotFound:
                pass

    async def gateway_connected(self, connected: list[reports.Connected]) -> None:
        """A gateway's word that sessions' viewers are through: its part of their logons (one
        transaction for the batch)."""
        added = []
        for report in connected:
            phases = {"gateway_redeem": report.redeem_seconds,
                      "desktop_handshake": report.desktop_seconds}
            self.logons.observe_all(phases)
            added.append((report.tenant, report.session, phases))
        await self.store.sessions.add_logons(added)
        self.changes.bump()

    async def gateway_alive(self, held: list[reports.Held]) -> list[tuple[str, str]]:
        """A gateway vouches that it holds these sessions: each it proves is connected (see
        :meth:`~broker.store.sessions.Sessions.held`), by the id of a ticket it redeemed for
        that session or by the outage ticket it admitted (signed here, naming the session).
        Returns those ended here, for it to close. One it cannot prove changes nothing and is
        audited: a gateway vouches only for the viewers that came through it."""
        over, unproven = await self.store.sessions.held(
            [(h.tenant, h.session, h.ticket, self._proves_outage_admission(h)) for h in held],
            now=self.clock())
        self.changes.bump()
        for tenant, session_id in unproven:
            await self.audit.record(tenant if self.config.tenant(tenant) else "-", "?",
                                    "gateway", "session.alive", "not_a_viewer",
                                    f"session={session_id}")
        return over

    def _proves_outage_admission(self, held: reports.Held) -> bool:
        """Whether ``held`` shows an outage ticket this broker's key signed for that very
        session and ticket id (at any time: it is evidence, not leave to redeem)."""
        if held.outage_ticket is None:
            return False
        try:
            claims = ticket.signed_claims(self._signing_key.public_key(), held.outage_ticket,
                                          audience=self.config.gateway_audience)
        except TicketError:
            return False
        return (claims.outage and claims.tenant == held.tenant
                and claims.session == held.session and claims.ticket_id == held.ticket)
