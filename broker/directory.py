"""Directory authentication with ldap3: find the user with a service account, bind as the user,
resolve nested group membership.

ldap3 is blocking; every directory operation runs in a bounded thread pool (``directory_threads``),
so a login storm cannot exhaust threads or the directory, and the event loop never waits on a socket.
Connections are pooled per server and reused, in two kinds: service-account connections, which
search, and password-check connections, which only ever bind (each bind replaces the identity of the
previous one, and nothing else is sent on them). A login thus opens no new TCP or TLS connection.

A login is two calls: :meth:`Directory.find` looks the typed name up with the service account and
returns the entry with its **canonical identity** (the login attribute's value as the entry holds
it, normalised by :func:`canonical`), and :meth:`Directory.verify` checks the password against that
entry (or, for a name that found nothing, against a DN that does not exist, so that both paths do
the same work and take the same time) and reads the groups. The broker keys everything on the
canonical identity, never on what was typed: the directory matches names case-insensitively,
ignores insignificant spaces and accepts several forms of one account (``name``, the UPN).

Passwords are sent byte-exact (UTF-8): ldap3 would otherwise apply SASLprep to a ``str``, which
changes or refuses characters that the directory itself accepts.

Servers are tried in order; one that does not answer within ``timeout`` is set aside for
``DEAD_SERVER_HOLD`` seconds so that the next logins do not wait for it again. When none answers, the
caller gets :class:`DirectoryUnavailable` within a bounded time, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import secrets
import ssl
import threading
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import ldap3
from ldap3.core import exceptions as ldap_exc
from ldap3.utils.conv import escape_filter_chars

from .config import DirectoryConfig
from .errors import (AccountDisabled, AccountExpired, AuthError, BadCredentials,
                     DirectoryUnavailable, LogonRestricted, MustChangePassword, PasswordExpired)

logger = logging.getLogger("pforte.directory")

DEAD_SERVER_HOLD = 30.0  # seconds a server that did not answer is skipped
IN_CHAIN = "1.2.840.113556.1.4.1941"  # AD's LDAP_MATCHING_RULE_IN_CHAIN: nested membership

# Active Directory explains a refused bind with "data XXX" in the diagnostic message. Only a right
# password gets past 52e for the states below, so they are told only to whoever knows it. A locked
# account (775) answers so to *any* password: telling it would tell a guesser nothing about the
# password but would confirm the account and its state, so it gets the wrong-password answer.
AD_BIND_ERRORS: dict[str, type[AuthError]] = {
    "525": BadCredentials,        # no such user
    "52e": BadCredentials,        # wrong password
    "530": LogonRestricted,       # not at this time
    "531": LogonRestricted,       # not from this workstation
    "532": PasswordExpired,
    "533": AccountDisabled,
    "701": AccountExpired,
    "773": MustChangePassword,    # "user must change password at next logon"
    "775": BadCredentials,        # locked out: said whatever the password (see above)
}
_AD_DATA = re.compile(r"data ([0-9a-f]{3})", re.IGNORECASE)


def refused_bind(message: str, *, active_directory: bool) -> AuthError:
    """The refusal a failed user bind means (AD tells why; other directories do not)."""
    if active_directory:
        m = _AD_DATA.search(message or "")
        if m and m.group(1).lower() in AD_BIND_ERRORS:
            return AD_BIND_ERRORS[m.group(1).lower()](f"AD bind refused: {m.group(1)}")
    return BadCredentials("bind refused")
POOL_SIZE = 8            # idle connections of each kind kept per server
NESTING_TTL = 60.0       # seconds the groups enclosing a set of groups are remembered
NESTING_REMEMBERED = 4096  # sets of groups remembered at most (then forgotten all at once)
GROUP_CLASSES = "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=group))"

_UNREACHABLE = (ldap_exc.LDAPSocketOpenError, ldap_exc.LDAPSocketReceiveError,
                ldap_exc.LDAPSocketSendError, ldap_exc.LDAPSessionTerminatedByServerError,
                ldap_exc.LDAPResponseTimeoutError, ldap_exc.LDAPServerPoolExhaustedError,
                ldap_exc.LDAPStartTLSError)


def canonical(name: str) -> str:
    """A login name as the directory compares it: NFC, lower case, insignificant spaces removed
    (RFC 4518). Applied to the value read from the entry, it is the user's identity; applied to
    a typed name that found no entry, it keys the throttle as that identity would be keyed."""
    return " ".join(unicodedata.normalize("NFC", name).split()).lower()


@dataclass(frozen=True)
class DirectoryEntry:
    """A user's entry, found by the service account; ``login`` is the canonical identity."""
    dn: str
    login: str
    display_name: str


@dataclass(frozen=True)
class DirectoryUser:
    dn: str
    login: str              # canonical identity, read from the entry
    display_name: str
    groups: frozenset[str]  # DNs, lower-case, nested membership included
    bind_seconds: float = 0.0    # what the password check took (the logon's phases)
    groups_seconds: float = 0.0  # what reading the groups took


class Directory:
    """One tenant's directory servers."""

    def __init__(self, config: DirectoryConfig, executor: ThreadPoolExecutor) -> None:
        self.config = config
        self.executor = executor
        self._dead_until: dict[str, float] = {}
        self._idle: dict[tuple[str, str], list[ldap3.Connection]] = {}  # (kind, server) → idle
        self._nesting: dict[frozenset[str], tuple[float, frozenset[str]]] = {}  # see _enclosing
        self._lock = threading.Lock()

    async def find(self, typed: str) -> DirectoryEntry | None:
        """The one entry a typed login name means, or None (unknown or ambiguous).

        Raises:
            DirectoryUnavailable: no server answered in time.
        """
        if not typed:
            return None
        return await self._in_pool(self._find, typed)

    async def verify(self, entry: DirectoryEntry | None, password: str) -> DirectoryUser:
        """Check the password of an entry :meth:`find` returned and read its groups. For None
        (nothing found) a bind with a DN that does not exist does the same work, and fails.

        Raises:
            BadCredentials: unknown user or wrong password (one answer for both).
            AccountState: the password is right, but the account may not log in now.
            DirectoryUnavailable: no server answered in time.
        """
        if not password:
            raise BadCredentials("empty password")  # an empty password binds anonymously
        return await self._in_pool(self._verify, entry, password.encode("utf-8"))

    async def groups(self, entry: DirectoryEntry) -> frozenset[str]:
        """The groups an entry :meth:`find` returned is in, read by the service account without
        the user's password (``pforte init`` checks a test user this way).

        Raises:
            DirectoryUnavailable: no server answered in time.
        """
        return await self._in_pool(self._groups_of, entry)

    async def _in_pool(self, fn, *args):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self._on_any_server, fn, *args)

    # -- in the thread pool ----------------------------------------------------------------
    def _servers(self) -> list[str]:
        now = time.monotonic()
        with self._lock:
            alive = [s for s in self.config.servers if self._dead_until.get(s, 0) <= now]
        return alive or list(self.config.servers)  # all set aside: try them all again

    def _mark(self, url: str, dead: bool) -> None:
        with self._lock:
            if dead:
                self._dead_until[url] = time.monotonic() + DEAD_SERVER_HOLD
            else:
                self._dead_until.pop(url, None)

    def _on_any_server(self, fn, *args):
        """``fn(url, *args, reuse=...)`` on the first server that answers."""
        for url in self._servers():
            try:
                try:
                    result = fn(url, *args, reuse=True)
                except _UNREACHABLE:
                    # A pooled connection may have been closed by the server meanwhile:
                    # only a fresh connection that fails says the server is down.
                    result = fn(url, *args, reuse=False)
            except _UNREACHABLE as exc:
                logger.warning("directory server %s unavailable: %s", url, type(exc).__name__)
                self._mark(url, dead=True)
                continue
            self._mark(url, dead=False)
            return result
        raise DirectoryUnavailable("no directory server answered")

    def _connection(self, url: str, user: str, password: str) -> ldap3.Connection:
        """An opened (and for starttls, encrypted) connection, not yet bound."""
        c = self.config
        tls = None
        if c.security != "plain":
            tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, version=ssl.PROTOCOL_TLS_CLIENT,
                            ca_certs_file=str(c.ca_file) if c.ca_file else None)
        server = ldap3.Server(url, connect_timeout=c.timeout, get_info=ldap3.NONE,
                              use_ssl=c.security == "ldaps", tls=tls)
        # ldap3 packs receive_timeout into SO_RCVTIMEO as whole seconds.
        conn = ldap3.Connection(server, user=user, password=password,
                                receive_timeout=max(1, math.ceil(c.timeout)),
                                raise_exceptions=False, read_only=True)
        try:
            conn.open()
            if c.security == "starttls" and not conn.start_tls():
                raise ldap_exc.LDAPStartTLSError("StartTLS refused")
        except (ldap_exc.LDAPSSLConfigurationError, ssl.SSLError) as exc:
            logger.error("directory server %s: TLS failed (%s) — check ca_file", url, exc)
            raise ldap_exc.LDAPSocketOpenError("TLS failed") from None
        return conn

    def _pooled(self, kind: str, url: str, reuse: bool) -> ldap3.Connection:
        """An idle pooled connection of this kind ("service" or "check"), or a new one: service
        connections are bound as the service account, check connections start anonymous."""
        if reuse:
            with self._lock:
                idle = self._idle.get((kind, url))
                if idle:
                    return idle.pop()
        c = self.config
        if kind == "check":
            return self._connection(url, None, None)
        service = self._connection(url, c.bind_dn, c.bind_password)
        if not service.bind():
            logger.error("service account bind to %s failed: %s", url,
                         service.result.get("description"))
            service.unbind()
            raise ldap_exc.LDAPSocketOpenError("service bind refused")
        return service

    def _give_back(self, kind: str, url: str, conn: ldap3.Connection) -> None:
        with self._lock:
            idle = self._idle.setdefault((kind, url), [])
            if len(idle) < POOL_SIZE:
                idle.append(conn)
                return
        conn.unbind()

    @contextlib.contextmanager
    def _service(self, url: str, reuse: bool) -> Iterator[ldap3.Connection]:
        """Lend a service connection: given back when the directory answered (an AuthError
        included), closed otherwise."""
        conn = self._pooled("service", url, reuse)
        answered = False
        try:
            yield conn
            answered = True
        except AuthError:
            answered = True
            raise
        finally:
            if answered:
                self._give_back("service", url, conn)
            else:
                conn.unbind()

    def _check_password(self, url: str, dn: str, password: bytes, reuse: bool) -> None:
        """Bind as the user on a check connection (which is then given back, or closed when the
        server did not answer); a refused bind raises the refusal it means."""
        check = self._pooled("check", url, reuse)
        answered = False
        try:
            check.authentication, check.user, check.password = ldap3.SIMPLE, dn, password
            bound = check.bind()
            check.password = None
            refusal = "" if bound else check.result.get("message", "")
            answered = True
        finally:
            if answered:
                self._give_back("check", url, check)
            else:
                check.unbind()
        if not bound:
            raise refused_bind(refusal, active_directory=self.config.kind == "ad")

    def _find(self, url: str, typed: str, *, reuse: bool) -> DirectoryEntry | None:
        c = self.config
        login_attribute = "sAMAccountName" if c.kind == "ad" else c.login_attribute
        name = escape_filter_chars(typed)
        who = f"({login_attribute}={name})"
        if c.kind == "ad":  # sAMAccountName, or the userPrincipalName in a login domain
            who = "(|" + who + "".join(f"(userPrincipalName={name}@"
                                       f"{escape_filter_chars(d)})" for d in c.domains) + ")"
        user_filter = f"(&(objectClass={escape_filter_chars(c.user_object_class)}){who})"
        with self._service(url, reuse) as service:
            service.search(c.base_dn, user_filter,
                           attributes=[login_attribute, "displayName", "cn"], size_limit=2)
            entries = [e for e in service.response or () if e.get("type") == "searchResEntry"]
        if len(entries) != 1:
            return None
        attrs = entries[0]["attributes"]
        values = attrs.get(login_attribute)
        values = [str(v) for v in (values if isinstance(values, list) else [values]) if v]
        if not values:  # the search matched by UPN on an entry without a login name
            return None
        login = min(canonical(v) for v in values)
        display = _first(attrs.get("displayName")) or _first(attrs.get("cn")) or login
        return DirectoryEntry(entries[0]["dn"], login, display)

    def _verify(self, url: str, entry: DirectoryEntry | None, password: bytes, *,
                reuse: bool) -> DirectoryUser:
        if entry is None:
            # The same bind as for a known user, against a DN that does not exist: an unknown
            # name must cost what a wrong password costs, or timing tells which names exist.
            nobody = f"cn=pforte-nobody-{secrets.token_hex(8)},{self.config.base_dn}"
            self._check_password(url, nobody, password, reuse)
            raise BadCredentials("unknown user")  # reached only if the directory bound it
        started = time.perf_counter()
        self._check_password(url, entry.dn, password, reuse)
        bound = time.perf_counter()
        groups = self._groups_of(url, entry, reuse=reuse)
        return DirectoryUser(entry.dn, entry.login, entry.display_name, groups,
                             bound - started, time.perf_counter() - bound)

    def _groups_of(self, url: str, entry: DirectoryEntry, *, reuse: bool) -> frozenset[str]:
        with self._service(url, reuse) as service:
            return self._groups(service, entry.dn, entry.login)

    def _groups(self, conn: ldap3.Connection, dn: str, login: str) -> frozenset[str]:
        """Groups that contain the user, directly (read fresh at every login) or through nested
        groups (see :meth:`_enclosing`); posixGroups name their members by login (memberUid)."""
        if self.config.kind == "ad":  # the directory resolves the nesting in one search
            conn.search(self.config.base_dn, f"(member:{IN_CHAIN}:={escape_filter_chars(dn)})",
                        attributes=[])
            return frozenset(e["dn"].lower() for e in conn.response or ()
                             if e.get("type") == "searchResEntry")
        posix = f"(&(objectClass=posixGroup)(memberUid={escape_filter_chars(login)}))"
        direct = self._containing(conn, [dn], also=posix)
        return direct | self._enclosing(conn, direct) if direct else direct

    def _containing(self, conn: ldap3.Connection, members: list[str],
                    also: str = "") -> frozenset[str]:
        """Groups (of names or of unique names) with any of ``members`` as a member, plus the
        entries ``also`` matches."""
        named = "".join(f"(member={escape_filter_chars(m)})(uniqueMember="
                        f"{escape_filter_chars(m)})" for m in members)
        conn.search(self.config.base_dn, f"(|{also}(&{GROUP_CLASSES}(|{named})))",
                    attributes=[])
        return frozenset(e["dn"].lower() for e in conn.response or ()
                         if e.get("type") == "searchResEntry")

    def _enclosing(self, conn: ldap3.Connection, groups: frozenset[str]) -> frozenset[str]:
        """The groups that contain these groups, through up to ``group_depth`` levels of nesting.

        Remembered for :data:`NESTING_TTL` seconds per set of groups: at 8 a.m. most users of a
        directory share a few sets of direct groups, and nesting changes rarely (an admin's change
        applies within that time; a change of a user's own memberships applies at once)."""
        now = time.monotonic()
        with self._lock:
            remembered = self._nesting.get(groups)
        if remembered is not None and remembered[0] > now:
            return remembered[1]
        found: set[str] = set()
        frontier = sorted(groups)
        for _ in range(self.config.group_depth - 1):
            if not frontier:
                break
            new = self._containing(conn, frontier) - found - groups
            found |= new
            frontier = sorted(new)
        enclosing = frozenset(found)
        with self._lock:
            if len(self._nesting) >= NESTING_REMEMBERED:
                self._nesting.clear()
            self._nesting[groups] = (now + NESTING_TTL, enclosing)
        return enclosing


def _first(value: object) -> str:
    if isinstance(value, list):
        return str(value[0]) if value else ""
    return str(value) if value else ""
