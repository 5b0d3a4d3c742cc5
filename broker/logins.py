"""Signing in: which tenant a typed name belongs to, the password (the first factor) as a
throttled attempt, login tokens, and who may use the admin API.

The room for a new way of signing in (a security key, an identity provider) is a module beside
:mod:`broker.second_factor`: it takes a :class:`Logins` for the tenant, the throttle and the
login records, and completes the login the same way (``Login.mfa_done``).
"""

from __future__ import annotations

import contextlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

from wire import sealing

from .audit import AuditLog
from .config import BrokerConfig, TenantConfig
from .directory import Directory, canonical
from .entitlement import entitled_pools
from .errors import (BadCredentials, BadRequest, BrokerError, CodeRejected,
                     DirectoryUnavailable, LoginRequired, NotFound, TooManyAttempts,
                     UnknownTenant)
from .logons import LogonPhases
from .store import OPERATOR, Fragment, Login, Store
from .throttle import Key, Outcome

MAX_LOGIN_LENGTH = 256
MAX_PASSWORD_LENGTH = 1024


def user_key(config: BrokerConfig, tenant: str, identity: str, *, complete: bool) -> Key:
    """The user's throttle record; only a ``complete`` login (second factor passed) forgets
    it, so that a known password cannot wipe a guessing run against the one-time code."""
    return Key(f"user:{tenant}/{identity}", config.user_throttle, forget_on_success=complete)


def source_key(config: BrokerConfig, source: str) -> Key:
    """The client address's throttle record."""
    return Key(f"source:{source}", config.source_throttle)


def _logon_context(tenant: str, user: str) -> bytes:
    return b"logon\0" + tenant.encode() + b"\0" + user.encode()


def seal_logon(key: bytes, tenant: str, user: str, password: str) -> str:
    """The directory password a user signed in with, sealed for her RDP desktops' Windows logon
    (kept with the login, never in the clear; bound to the user: a seal copied into another
    user's login does not open)."""
    return sealing.seal(key, password.encode(), _logon_context(tenant, user))


def open_logon(key: bytes, tenant: str, user: str, sealed: str | None) -> str | None:
    """The password :func:`seal_logon` sealed for this user (kept with her login, and in the
    reconnect passes to her RDP desktops); None when there is none, or one that does not open
    (the host then asks her)."""
    if sealed is None:
        return None
    try:
        return sealing.unseal(key, sealed, _logon_context(tenant, user)).decode()
    except (sealing.SealBroken, UnicodeDecodeError):
        return None


def check_csrf(sent: str | None, login_csrf: str) -> None:
    """A request made with a login's cookie must carry that login's CSRF token (another site
    can send the cookie, but cannot read the token).

    Raises:
        BadRequest: missing or wrong.
    """
    if sent is None or not hmac.compare_digest(sent.encode(), login_csrf.encode()):
        raise BadRequest("CSRF token missing or wrong")


@dataclass
class Attempt:
    """A throttled attempt in progress (see Logins._attempt): the keys reserved so far, whom a
    failure is audited under, and what the use case records once it succeeded."""
    keys: list[Key]
    actor: str
    audit_failure: bool = False      # until the directory named the user
    on_success: list[Fragment] = field(default_factory=list)


@dataclass(frozen=True)
class ApiToken:
    """An admin API token, bound to a tenant or to all of them (``scope``: OPERATOR)."""
    name: str
    scope: str

    @property
    def actor(self) -> str:           # for the audit log
        return f"token:{self.name}"

    def may(self, tenant: TenantConfig) -> bool:
        return self.scope in (OPERATOR, tenant.id)


@dataclass(frozen=True)
class AdminLogin:
    """A portal login (password and second factor) of a member of a tenant's admin group."""
    login: Login

    @property
    def actor(self) -> str:           # for the audit log: the admin's identity
        return self.login.user

    def may(self, tenant: TenantConfig) -> bool:
        return (self.login.tenant == tenant.id and bool(tenant.admin_group)
                and tenant.admin_group.lower() in self.login.groups)


AdminPrincipal = ApiToken | AdminLogin   # who calls the admin API


class Logins:
    """Sign-in by password, the login tokens, and the admin principal."""

    def __init__(self, config: BrokerConfig, store: Store, audit: AuditLog,
                 directories: dict[str, Directory], logons: LogonPhases,
                 clock: Callable[[], float], on_sign_out: Callable[[str], None]) -> None:
        self.config = config
        self.store = store
        self.audit = audit
        self.directories = directories
        self.logons = logons
        self.clock = clock
        self.on_sign_out = on_sign_out    # a login token was signed out (its passes die)

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
        async with self._attempt([source_key(self.config, source)], tenant.id, name, source,
                                 "login.password") as attempt:
            started = time.perf_counter()
            entry = await directory.find(name)
            searched = time.perf_counter() - started
            identity = entry.login if entry is not None else canonical(name)
            await self._reserve_also(
                attempt, [user_key(self.config, tenant.id, identity, complete=False)],
                tenant.id, identity, source, "login.password")
            user = await directory.verify(entry, password)
            token = secrets.token_urlsafe(32)
            login = Login(tenant=tenant.id, user=user.login, display_name=user.display_name,
                          groups=user.groups, mfa_done=False, csrf=secrets.token_urlsafe(24),
                          expires=self.clock() + self.config.login_lifetime,
                          phases=(("directory_search", searched),
                                  ("directory_bind", user.bind_seconds),
                                  ("directory_groups", user.groups_seconds)),
                          sealed_logon=(seal_logon(self.config.credential_key, tenant.id,
                                                   user.login, password)
                                        if any(h.protocol == "rdp" for h in tenant.hosts)
                                        else None))
            self.logons.observe_all(dict(login.phases))
            attempt.on_success += [  # recorded with the settlement: one transaction
                self.store.accounts.new_login(token, login),
                self.audit.entry(tenant.id, user.login, source, "login.password", "ok")]
        return token, login

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
            return ApiToken(name=scope[1], scope=scope[0])
        login = await self.login_for(token)
        return AdminLogin(login)

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
        if not ask_directory or not isinstance(principal, AdminLogin):
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

    async def logout(self, token: str) -> None:
        """End a portal login; its reconnect passes die with it (``Connections.forget_passes``)."""
        self.on_sign_out(token)
        await self.store.accounts.delete_login(token)

    def has_a_use(self, login: Login) -> bool:
        """Whether the login may use anything here — a desktop or the console: only then is a
        second factor enrolled (a user with neither learns it before, not after)."""
        tenant = self.config.tenant(login.tenant)
        return tenant is not None and (bool(entitled_pools(tenant, login.groups))
                                       or self.administers(login))

    def administers(self, login: Login) -> bool:
        """Whether a portal login may use the admin API (and so the console) for its tenant."""
        tenant = self.config.tenant(login.tenant)
        return tenant is not None and AdminLogin(login).may(tenant)
