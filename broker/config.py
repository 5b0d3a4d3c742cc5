"""The broker's configuration: one TOML file → frozen dataclasses, checked as a whole.

Every mistake is reported with file, key and what was expected (:class:`wire.errors.ConfigError`),
and cross-references (a pool naming a host that does not exist) are checked before anything starts:
the broker never runs half-configured. Secrets are named by file path and read here, once.
"""

from __future__ import annotations

import functools

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from datetime import date, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from wire.config import Section, load_toml, networks, read_aes_key, read_secret
from wire.serving import HTTP_IDLE_TIMEOUT
from wire.errors import ConfigError
from wire.ticket import CLIPBOARD_POLICIES, KEYBOARD_LAYOUTS, MAX_LIFETIME

from .maintenance import LAST, Calendar, Window, parse_weekday
from .throttle import Policy

PROTOCOLS = ("vnc", "rdp", "spice")
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

# Named defaults.
DEFAULT_TICKET_LIFETIME = 30          # seconds
DEFAULT_PENDING_TIMEOUT = 90          # seconds a seat is held for a ticket that was never used
DEFAULT_DISCONNECTED_KEEP = 15 * 60   # seconds a disconnected session keeps its seat
DEFAULT_LOGONS_IN_FLIGHT = 20         # sessions per host placed but not yet connected
DEFAULT_LOGIN_LIFETIME = 8 * 3600     # seconds a portal login lasts
DEFAULT_RECONNECT_PASS_LIFETIME = 300  # seconds a reconnect pass lives (renewed while connected)
DEFAULT_DIRECTORY_TIMEOUT = 3.0       # seconds to connect to / hear from a directory server
DEFAULT_DIRECTORY_THREADS = 8         # concurrent directory operations per broker
DEFAULT_GROUP_DEPTH = 8               # levels of nested groups resolved
DEFAULT_PROBE_INTERVAL = 15.0         # seconds between health probes of each host
DEFAULT_USER_FAILURES = 5             # failed logins or codes per user name before a lockout
DEFAULT_SOURCE_FAILURES = 50          # ... per client address (a town hall's NAT carries many)
DEFAULT_FAILURE_WINDOW = 900          # seconds in which failures count
DEFAULT_LOCKOUT = 900                 # seconds a lockout lasts
DEFAULT_DATABASE_CONNECTIONS = 8     # PostgreSQL connections per broker process
DEFAULT_HISTORY_DAYS = 400           # ended sessions kept for usage (a year, and the month after)
DEFAULT_TIME_ZONE = "Europe/Berlin"   # the municipalities' clock: months for usage, windows
DEFAULT_GATEWAY_LEASE = 95            # seconds a connected session lives without a gateway's word
DEFAULT_SSH_TIMEOUT = 5.0             # seconds to connect to a host over SSH / run a command
DEFAULT_REQUESTS_IN_FLIGHT = 48       # users' requests one broker process works on at once,
DEFAULT_REQUESTS_QUEUED = 2000        # and that wait for their turn; more are answered 503
                                      # with Retry-After at once


@dataclass(frozen=True)
class DirectoryConfig:
    servers: tuple[str, ...]          # ldap://host:port or ldaps://host:port, tried in order
    base_dn: str
    bind_dn: str
    bind_password: str
    login_attribute: str              # uid (OpenLDAP) or sAMAccountName (AD)
    user_object_class: str
    timeout: float
    group_depth: int
    kind: str                         # "openldap" or "ad"
    domains: tuple[str, ...]          # the tenant's login domains (AD: userPrincipalName suffixes)
    security: str                     # "ldaps", "starttls" or "plain" (said explicitly)
    ca_file: Path | None              # CA certificates for ldaps/starttls; None: the system's


@dataclass(frozen=True)
class HostConfig:
    id: str
    address: str
    port: int
    protocol: str
    seats: int
    secret: bytes | None              # the desktop's VNC password; users never see it
    ssh: "SshConfig | None" = None    # host control over SSH (notices, logoff, probes)
    certificate_sha256: str | None = None  # RDP: the certificate the host must show (hex)
    logon_domain: str = ""            # RDP: the Windows domain of the users' logon


@dataclass(frozen=True)
class SshConfig:
    address: str
    port: int
    user: str
    notify_command: str | None        # template: {user} and {message} arrive shell-quoted
    logoff_command: str | None        # template: {user}
    launch_command: str | None        # template: {user}; starts the user's desktop, prints its port


@dataclass(frozen=True)
class PoolConfig:
    id: str
    name: str
    group_dn: str                     # members (also nested) are entitled
    hosts: tuple[str, ...]
    disconnected_keep: int
    max_logons_in_flight: int         # per host; 0: no cap
    idle_logoff: int                  # seconds without input or output before logoff; 0: never
    dedicated: bool                   # a user keeps the same host across logins
    screen: str = "scale"             # "scale": the desktop keeps its size, scaled into the
                                      # window; "follow": it takes the browser window's size
    clipboard: str = "both"           # which way text may cross: "both", "in" (into the
                                      # desktop only), "out" (out of it only), "none"
    keyboard_layout: str = "de"       # RDP: the layout the host applies to the keys (gateway.rdp)
    audio: bool = False               # RDP: the desktop's sound plays on the user's computer
    drives: bool = False              # RDP: the user's drives reach the desktop
    printers: bool = False            # RDP: the user's printers reach the desktop


@dataclass(frozen=True)
class TenantConfig:
    id: str
    name: str
    domains: tuple[str, ...]          # login domains: user@domain
    portal_hosts: tuple[str, ...]     # host names whose portal takes plain user names
    admin_group: str | None           # members administer this tenant (with TOTP)
    directory: DirectoryConfig
    pools: tuple[PoolConfig, ...]
    hosts: tuple[HostConfig, ...]
    calendars: tuple[Calendar, ...] = ()            # holidays, for maintenance windows
    maintenance_windows: tuple[Window, ...] = ()

    def pool(self, pool_id: str) -> PoolConfig | None:
        return next((p for p in self.pools if p.id == pool_id), None)

    def host(self, host_id: str) -> HostConfig | None:
        return self._hosts_by_id.get(host_id)

    @functools.cached_property
    def _hosts_by_id(self) -> dict[str, HostConfig]:  # every placement looks up each host
        return {h.id: h for h in self.hosts}


@dataclass(frozen=True)
class BrokerConfig:
    path: str
    listen: tuple[str, int]
    state_dir: Path
    ticket_private_key: bytes         # PEM, Ed25519
    credential_key: bytes             # AES-256 key shared with gateways
    totp_key: bytes                   # AES-256 key for TOTP secrets at rest
    report_token: bytes               # gateways authenticate their reports with it
    gateway_url: str                  # the websocket URL clients use
    gateway_audience: str
    ticket_lifetime: int
    pending_timeout: int
    login_lifetime: int
    reconnect_pass_lifetime: int
    directory_threads: int
    gateway_control_urls: tuple[str, ...]  # gateways' HTTP base URLs, told to close logged-off sessions
    ssh_key: bytes | None             # private key the broker uses to control hosts
    ssh_known_hosts: Path | None      # the hosts' keys; a host whose key differs is refused
    probe_interval: float
    gateway_lease: int
    session_history_days: int         # ended sessions are kept this long (usage for billing)
    time_zone: ZoneInfo               # months of usage, maintenance windows
    user_throttle: Policy
    source_throttle: Policy
    profiles_dir: Path | None         # client profiles for enrolled devices
    tenants: tuple[TenantConfig, ...]
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # who may read /metrics (a scraper's address; behind a proxy the client's, so never the
    # internet's unless configured so)
    metrics_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    tls_cert: Path | None = None      # serve HTTPS directly (else plain HTTP, e.g. behind a proxy)
    tls_key: Path | None = None
    http_idle_timeout: float = HTTP_IDLE_TIMEOUT  # silent connections are closed
    requests_in_flight: int = DEFAULT_REQUESTS_IN_FLIGHT
    requests_queued: int = DEFAULT_REQUESTS_QUEUED
    database: str | None = None       # postgresql://… (fleet); None: SQLite in state_dir
    database_password: str | None = None
    database_connections: int = DEFAULT_DATABASE_CONNECTIONS

    def tenant(self, tenant_id: str) -> TenantConfig | None:
        return next((t for t in self.tenants if t.id == tenant_id), None)


def load_config(path: str | Path) -> BrokerConfig:
    """Read and check a broker config file.

    Raises:
        ConfigError: the first mistake found, with file, key and expectation.
    """
    root = load_toml(path)
    b = root.table("broker")
    tls = "tls_cert_file" in b.data or "tls_key_file" in b.data
    window = b.int("failure_window", DEFAULT_FAILURE_WINDOW, minimum=1)   # both throttles'
    lockout = b.int("lockout", DEFAULT_LOCKOUT, minimum=1)
    cfg = BrokerConfig(
        path=str(path),
        listen=b.listen("listen"),
        state_dir=_private_dir(b, "state_dir"),
        ticket_private_key=read_secret(b.file("ticket_private_key_file")),
        credential_key=read_aes_key(b, "credential_key_file"),
        totp_key=read_aes_key(b, "totp_key_file"),
        report_token=read_secret(b.file("report_token_file")),
        gateway_url=_ws_url(b, "gateway_url"),
        gateway_audience=b.str("gateway_audience"),
        ticket_lifetime=b.int("ticket_lifetime", DEFAULT_TICKET_LIFETIME, minimum=1,
                              maximum=MAX_LIFETIME),
        pending_timeout=b.int("pending_timeout", DEFAULT_PENDING_TIMEOUT, minimum=10),
        login_lifetime=b.int("login_lifetime", DEFAULT_LOGIN_LIFETIME, minimum=60),
        reconnect_pass_lifetime=b.int("reconnect_pass_lifetime", DEFAULT_RECONNECT_PASS_LIFETIME,
                                      minimum=30, maximum=3600),
        directory_threads=b.int("directory_threads", DEFAULT_DIRECTORY_THREADS, minimum=1,
                                maximum=256),
        gateway_control_urls=tuple(u.rstrip("/") for u in b.str_list(
            "gateway_control_urls", [], non_empty=False)),
        ssh_key=read_secret(b.file("ssh_key_file")) if "ssh_key_file" in b.data else None,
        ssh_known_hosts=b.file("ssh_known_hosts_file") if "ssh_known_hosts_file" in b.data
        else None,
        probe_interval=b.float("probe_interval", DEFAULT_PROBE_INTERVAL, minimum=1.0),
        gateway_lease=b.int("gateway_lease", DEFAULT_GATEWAY_LEASE, minimum=35),
        session_history_days=b.int("session_history_days", DEFAULT_HISTORY_DAYS, minimum=32),
        time_zone=_zone(b, "time_zone", DEFAULT_TIME_ZONE),
        profiles_dir=_existing_dir(b, "profiles_dir") if "profiles_dir" in b.data else None,
        user_throttle=Policy(b.int("failures_per_user", DEFAULT_USER_FAILURES, minimum=1),
                             window, lockout),
        source_throttle=Policy(b.int("failures_per_source", DEFAULT_SOURCE_FAILURES, minimum=1),
                               window, lockout),
        tenants=tuple(_tenant(t) for t in root.tables("tenants")),
        trusted_proxies=networks(b, "trusted_proxies", []),
        metrics_networks=networks(b, "metrics_networks", ["127.0.0.0/8", "::1/128"]),
        tls_cert=b.file("tls_cert_file") if tls else None,
        tls_key=b.file("tls_key_file") if tls else None,
        http_idle_timeout=b.float("http_idle_timeout", HTTP_IDLE_TIMEOUT, minimum=1.0),
        requests_in_flight=b.int("requests_in_flight", DEFAULT_REQUESTS_IN_FLIGHT, minimum=1),
        requests_queued=b.int("requests_queued", DEFAULT_REQUESTS_QUEUED, minimum=0),
        database=_database(b),
        database_password=read_secret(b.file("database_password_file")).decode()
        if "database_password_file" in b.data else None,
        database_connections=b.int("database_connections", DEFAULT_DATABASE_CONNECTIONS,
                                   minimum=1, maximum=100),
    )
    b.done()
    if any(h.ssh for t in cfg.tenants for h in t.hosts) and (
            cfg.ssh_key is None or cfg.ssh_known_hosts is None):
        raise b.fail("ssh_key_file", "expected ssh_key_file and ssh_known_hosts_file, because "
                     "hosts have [tenants.hosts.ssh] tables")
    _check_unique(root, "tenants", [t.id for t in cfg.tenants])
    domains = [d for t in cfg.tenants for d in t.domains]
    _check_unique(root, "tenants[].domains", domains)
    if "gateway" in root.data:
        root.table("gateway")  # read by the gateway; accepted here
    root.done()
    return cfg


def _database(s: Section) -> str | None:
    if "database" not in s.data:
        return None
    url = s.str("database")
    if not url.startswith(("postgresql://", "postgres://")):
        raise s.fail("database", "expected a postgresql:// URL (leave it out for SQLite)")
    if "@" in url.split("//", 1)[1].split("/", 1)[0] and ":" in url.split("//", 1)[1].split(
            "@", 1)[0]:
        raise s.fail("database", "expected no password in the URL: use database_password_file")
    return url


def _private_dir(s: Section, name: str) -> Path:
    """A directory only the broker's user may enter (0700), created if missing."""
    raw = Path(s.str(name))
    path = raw if raw.is_absolute() else Path(s.path).parent / raw
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.chmod(0o700)
    except OSError as exc:
        raise s.fail(name, f"expected a directory the broker can create ({exc.strerror})") from None
    return path


def _existing_dir(s: Section, name: str) -> Path:
    raw = Path(s.str(name))
    path = raw if raw.is_absolute() else Path(s.path).parent / raw
    if not path.is_dir():
        raise s.fail(name, f"expected an existing directory, but {str(path)!r} is none")
    return path


def _ws_url(s: Section, name: str) -> str:
    url = s.str(name)
    if not url.startswith(("ws://", "wss://")):
        raise s.fail(name, f"expected a ws:// or wss:// URL, got {url!r}")
    return url


def _id(s: Section, name: str) -> str:
    value = s.str(name)
    if not _ID.match(value):
        raise s.fail(name, "expected an id of lower-case letters, digits, '-' and '_'")
    return value


def _check_unique(s: Section, name: str, values: list[str]) -> None:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise s.fail(name, f"expected unique values, but {v!r} appears twice")
        seen.add(v)


def _tenant(t: Section) -> TenantConfig:
    tenant_id = _id(t, "id")
    hosts = tuple(_host(h) for h in t.tables("hosts"))
    _check_unique(t, "hosts", [h.id for h in hosts])
    host_ids = {h.id for h in hosts}
    pools = tuple(_pool(p, host_ids) for p in t.tables("pools"))
    for i, pool in enumerate(pools):   # the pool chooses the user's viewer
        if len({h.protocol for h in hosts if h.id in pool.hosts}) > 1:
            raise ConfigError(t.path, t.key(f"pools[{i}].hosts"), "hosts of one protocol")
    _check_unique(t, "pools", [p.id for p in pools])
    calendars = tuple(_calendar(c) for c in t.tables("calendars", non_empty=False))
    _check_unique(t, "calendars", [c.id for c in calendars])
    windows = tuple(_window(w, host_ids, {c.id for c in calendars})
                    for w in t.tables("maintenance_windows", non_empty=False))
    _check_unique(t, "maintenance_windows", [w.id for w in windows])
    cfg = TenantConfig(
        id=tenant_id,
        name=t.str("name"),
        domains=tuple(d.lower() for d in t.str_list("domains")),
        portal_hosts=tuple(h.lower() for h in t.str_list("portal_hosts", [], non_empty=False)),
        admin_group=t.str("admin_group") if "admin_group" in t.data else None,
        directory=_directory(t.table("directory"), tuple(d.lower() for d in t.data.get(
            "domains", ()) if isinstance(d, str))),
        pools=pools,
        hosts=hosts,
        calendars=calendars,
        maintenance_windows=windows,
    )
    t.done()
    return cfg


GERMAN_STATES = ("BB", "BE", "BW", "BY", "HB", "HE", "HH", "MV", "NI", "NW", "RP", "SH", "SL",
                 "SN", "ST", "TH")


def _calendar(c: Section) -> Calendar:
    state = c.str("state", "")
    if state and state not in GERMAN_STATES:
        raise c.fail("state", f"a German state's code ({', '.join(GERMAN_STATES)})")
    own = []
    for i, text in enumerate(c.str_list("own_days", [], non_empty=False)):
        day, _, name = text.partition(" ")
        try:
            own.append((date.fromisoformat(day), name.strip() or day))
        except ValueError:
            raise ConfigError(c.path, c.key(f"own_days[{i}]"),
                              f'expected "YYYY-MM-DD name", got {text!r}') from None
    cfg = Calendar(_id(c, "id"), state, tuple(own))
    c.done()
    return cfg


def _window(w: Section, host_ids: set[str], calendar_ids: set[str]) -> Window:
    hosts = w.str_list("hosts")
    if unknown := [h for h in hosts if h not in host_ids]:
        raise w.fail("hosts", f"hosts of this tenant (unknown: {', '.join(unknown)})")
    try:
        weekday = parse_weekday(w.str("weekday"))
    except ValueError:
        raise w.fail("weekday", "an English weekday, e.g. \"tuesday\"") from None
    weeks = w.value("weeks", [])
    if not isinstance(weeks, list) or not all(
            type(x) is int and (1 <= x <= 5 or x == LAST) for x in weeks):
        raise w.fail("weeks", "a list of the month's weeks, 1 to 5, or -1 for the last")
    try:
        start = time.fromisoformat(w.str("start"))
    except ValueError:
        raise w.fail("start", "a time of day, e.g. \"22:00\"") from None
    calendar = w.str("calendar") if "calendar" in w.data else None
    if calendar is not None and calendar not in calendar_ids:
        raise w.fail("calendar", "the id of one of this tenant's calendars")
    cfg = Window(_id(w, "id"), tuple(hosts), weekday, tuple(weeks), start,
                 w.int("minutes", minimum=1), w.int("notice_minutes", 30, minimum=0),
                 w.str("message", "") if "message" in w.data else "", calendar,
                 _one_of(w, "on_holidays", ("skip", "only"), "skip"))
    w.done()
    return cfg


SECURITY = ("ldaps", "starttls", "plain")


KINDS = ("openldap", "ad")


def _directory(d: Section, domains: tuple[str, ...]) -> DirectoryConfig:
    servers = d.str_list("servers")
    kind = d.str("kind", "openldap")
    if kind not in KINDS:
        raise d.fail("kind", f"expected openldap or ad, got {kind!r}")
    ad = kind == "ad"
    security = d.str("security", "ldaps")
    if security not in SECURITY:
        raise d.fail("security", f"expected one of {', '.join(SECURITY)}, got {security!r}")
    for i, url in enumerate(servers):
        if not url.startswith(("ldap://", "ldaps://")):
            raise ConfigError(d.path, d.key(f"servers[{i}]"),
                              f"expected an ldap:// or ldaps:// URL, got {url!r}")
        if (security == "ldaps") != url.startswith("ldaps://"):
            raise ConfigError(d.path, d.key(f"servers[{i}]"), (
                "expected an ldaps:// URL, because security is \"ldaps\" (for ldap:// say "
                "security = \"starttls\", or \"plain\" to allow unencrypted LDAP)")
                if security == "ldaps" else
                f"expected an ldap:// URL, because security is {security!r}")
    cfg = DirectoryConfig(
        servers=tuple(servers),
        base_dn=d.str("base_dn"),
        bind_dn=d.str("bind_dn"),
        bind_password=read_secret(d.file("bind_password_file")).decode(),
        login_attribute=d.str("login_attribute", "sAMAccountName" if ad else "uid"),
        user_object_class=d.str("user_object_class", "user" if ad else "inetOrgPerson"),
        timeout=d.float("timeout", DEFAULT_DIRECTORY_TIMEOUT, minimum=0.1),
        group_depth=d.int("group_depth", DEFAULT_GROUP_DEPTH, minimum=1, maximum=32),
        kind=kind,
        domains=domains,
        security=security,
        ca_file=d.file("ca_file") if "ca_file" in d.data else None,
    )
    d.done()
    return cfg


def _host(h: Section) -> HostConfig:
    host_id = _id(h, "id")
    address = h.str("address")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise h.fail("address", f"expected an IP address, got {address!r}") from None
    protocol = _one_of(h, "protocol", PROTOCOLS, "vnc")
    secret = read_secret(h.file("secret_file")) if "secret_file" in h.data else None
    pin = h.str("certificate_sha256").replace(":", "").lower() if protocol == "rdp" else None
    if pin is not None and not re.fullmatch(r"[0-9a-f]{64}", pin):
        raise h.fail("certificate_sha256", "the SHA-256 fingerprint of the host's RDP "
                     "certificate: 64 hex digits (colons allowed)")
    cfg = HostConfig(id=host_id, address=address, port=h.int("port", minimum=1, maximum=65535),
                     protocol=protocol, seats=h.int("seats", minimum=1), secret=secret,
                     ssh=_ssh(h.table("ssh"), address) if "ssh" in h.data else None,
                     certificate_sha256=pin,
                     logon_domain=h.str("logon_domain", "") if protocol == "rdp" else "")
    h.done()
    return cfg


def _ssh(s: Section, address: str) -> SshConfig:
    cfg = SshConfig(address=s.str("address", address), port=s.int("port", 22, minimum=1,
                                                                    maximum=65535),
                    user=s.str("user", "root"),
                    notify_command=s.str("notify_command") if "notify_command" in s.data else None,
                    logoff_command=s.str("logoff_command") if "logoff_command" in s.data else None,
                    launch_command=s.str("launch_command") if "launch_command" in s.data else None)
    s.done()
    return cfg


def _zone(s: Section, name: str, default: str) -> ZoneInfo:
    text = s.str(name, default)
    try:
        return ZoneInfo(text)
    except (ValueError, ZoneInfoNotFoundError):
        raise ConfigError(f"{name}: {text!r} is not a time zone (e.g. \"Europe/Berlin\")") \
            from None


def _one_of(s: Section, name: str, choices: tuple[str, ...], default: str) -> str:
    value = s.str(name, default)
    if value not in choices:
        raise s.fail(name, f"expected one of {', '.join(choices)}, got {value!r}")
    return value


def _pool(p: Section, host_ids: set[str]) -> PoolConfig:
    hosts = p.str_list("hosts")
    for i, host in enumerate(hosts):
        if host not in host_ids:
            raise ConfigError(p.path, p.key(f"hosts[{i}]"),
                              f"expected the id of a host of this tenant, got {host!r}")
    cfg = PoolConfig(id=_id(p, "id"), name=p.str("name"), group_dn=p.str("group"),
                     hosts=tuple(hosts),
                     disconnected_keep=p.int("disconnected_keep", DEFAULT_DISCONNECTED_KEEP,
                                             minimum=0),
                     max_logons_in_flight=p.int("max_logons_in_flight", DEFAULT_LOGONS_IN_FLIGHT,
                                                minimum=0),
                     dedicated=_one_of(p, "kind", ("floating", "dedicated"), "floating")
                     == "dedicated",
                     idle_logoff=p.int("idle_logoff", 0, minimum=0),
                     screen=_one_of(p, "screen", ("scale", "follow"), "scale"),
                     clipboard=_one_of(p, "clipboard", CLIPBOARD_POLICIES, "both"),
                     keyboard_layout=_one_of(p, "keyboard_layout", tuple(KEYBOARD_LAYOUTS), "de"),
                     audio=p.bool("audio", False),
                     drives=p.bool("drives", False), printers=p.bool("printers", False))
    p.done()
    return cfg
