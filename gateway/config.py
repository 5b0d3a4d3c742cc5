"""The gateway's own section of a config file (``[gateway]``), read with :mod:`wire.config`.

The gateway reads only ``[gateway]``: it can be deployed alone with a file that holds nothing else.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from wire.config import Section, networks, read_aes_key, read_secret
from wire.serving import HTTP_IDLE_TIMEOUT

# Named defaults of the gateway.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0       # seconds from TCP accept to a redeemed ticket
DEFAULT_CONNECT_TIMEOUT = 3.0          # seconds per attempt to reach the desktop (TCP + VNC auth)
DEFAULT_CONNECT_ATTEMPTS = 3           # attempts on new connections before "desktop unavailable"
DEFAULT_MAX_BUFFERED = 4 * 1024 * 1024 # bytes held for a slow peer before reading from the other stops
DEFAULT_MAX_MESSAGE = 1024 * 1024      # largest websocket message accepted from a client
DEFAULT_MAX_SESSIONS = 20_000          # sessions one gateway process holds at most
DEFAULT_MAX_PER_SOURCE = 200           # sessions from one client address (a town hall's NAT)
DEFAULT_IDLE_TIMEOUT = 0.0             # seconds without a byte either way; 0: never
DEFAULT_DRAIN_TIMEOUT = 30.0           # seconds sessions get to finish when the gateway stops
DEFAULT_RESUME_GRACE = 60.0            # seconds a dropped websocket may be reattached
DEFAULT_REPLAY_LIMIT = 8 * 1024 * 1024 # unacknowledged bytes a resumable session holds
DEFAULT_HTTP_IDLE_TIMEOUT = HTTP_IDLE_TIMEOUT  # seconds a connection may send nothing


@dataclass(frozen=True)
class GatewayConfig:
    listen: tuple[str, int]
    name: str                          # this gateway's server name in the balancer ("": alone)
    audience: str
    ticket_public_key: bytes           # PEM of the broker's Ed25519 public key
    credential_key: bytes              # AES-256-GCM key shared with the broker for desktop secrets
    broker_urls: tuple[str, ...]       # where redemptions and reports go (next one on failure)
    report_token: bytes                # authenticates those reports
    allowed_targets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    allowed_origins: tuple[str, ...]   # empty: any origin (native clients send none)
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    connect_attempts: int = DEFAULT_CONNECT_ATTEMPTS
    max_buffered: int = DEFAULT_MAX_BUFFERED
    max_message: int = DEFAULT_MAX_MESSAGE
    max_sessions: int = DEFAULT_MAX_SESSIONS
    max_per_source: int = DEFAULT_MAX_PER_SOURCE
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    resume_grace: float = DEFAULT_RESUME_GRACE
    replay_limit: int = DEFAULT_REPLAY_LIMIT
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    broker_ca_file: Path | None = None # the CA of the brokers' HTTPS certificates (else the system's)
    http_idle_timeout: float = DEFAULT_HTTP_IDLE_TIMEOUT


def _name(s: Section) -> str:
    """``name``: how a load balancer tells this gateway from the others (letters, digits, ``.``,
    ``_``, ``-``); clients reattach naming it. Empty (the default) for a gateway alone."""
    name = s.str("name", "")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}|", name):
        raise s.fail("name", "expected letters, digits, '.', '_' or '-' (at most 63)")
    return name


def _broker_urls(s: Section) -> tuple[str, ...]:
    """``broker_urls = [...]`` (a fleet), or ``broker_url = "..."`` (one broker)."""
    if "broker_urls" in s.data:
        if "broker_url" in s.data:
            raise s.fail("broker_url", "expected either broker_url or broker_urls, not both")
        return tuple(u.rstrip("/") for u in s.str_list("broker_urls"))
    return (s.str("broker_url").rstrip("/"),)


def gateway_config(root: Section) -> GatewayConfig:
    """Read the ``[gateway]`` table of a config file.

    Raises:
        ConfigError: with file, key and what was expected.
    """
    s = root.table("gateway")
    tls = "tls_cert_file" in s.data or "tls_key_file" in s.data
    cfg = GatewayConfig(
        listen=s.listen("listen"),
        name=_name(s),
        audience=s.str("audience"),
        ticket_public_key=read_secret(s.file("ticket_public_key_file")),
        credential_key=read_aes_key(s, "credential_key_file"),
        broker_urls=_broker_urls(s),
        report_token=read_secret(s.file("report_token_file")),
        allowed_targets=networks(s, "allowed_targets"),
        allowed_origins=tuple(s.str_list("allowed_origins", [], non_empty=False)),
        handshake_timeout=s.float("handshake_timeout", DEFAULT_HANDSHAKE_TIMEOUT, minimum=0.1),
        connect_timeout=s.float("connect_timeout", DEFAULT_CONNECT_TIMEOUT, minimum=0.1),
        connect_attempts=s.int("connect_attempts", DEFAULT_CONNECT_ATTEMPTS, minimum=1,
                               maximum=10),
        max_buffered=s.int("max_buffered_bytes", DEFAULT_MAX_BUFFERED, minimum=65536),
        max_message=s.int("max_message_bytes", DEFAULT_MAX_MESSAGE, minimum=4096),
        max_sessions=s.int("max_sessions", DEFAULT_MAX_SESSIONS, minimum=1),
        max_per_source=s.int("max_sessions_per_source", DEFAULT_MAX_PER_SOURCE, minimum=1),
        idle_timeout=s.float("idle_timeout", DEFAULT_IDLE_TIMEOUT),
        drain_timeout=s.float("drain_timeout", DEFAULT_DRAIN_TIMEOUT),
        resume_grace=s.float("resume_grace", DEFAULT_RESUME_GRACE),
        replay_limit=s.int("replay_limit_bytes", DEFAULT_REPLAY_LIMIT, minimum=65536),
        trusted_proxies=networks(s, "trusted_proxies", []),
        tls_cert=s.file("tls_cert_file") if tls else None,
        tls_key=s.file("tls_key_file") if tls else None,
        broker_ca_file=s.file("broker_ca_file") if "broker_ca_file" in s.data else None,
        http_idle_timeout=s.float("http_idle_timeout", DEFAULT_HTTP_IDLE_TIMEOUT, minimum=1.0),
    )
    s.done()
    return cfg


