"""TOML configuration: a typed reader that reports every mistake with file, key and expectation,
and the gateway's own section.

The broker reuses :class:`Section` for its larger config, so both processes word their errors alike.
The gateway reads only ``[gateway]``: it can be deployed alone with a file that holds nothing else.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .runtime import HTTP_IDLE_TIMEOUT

_MISSING = object()


class Section:
    """A view of one TOML table that knows where it came from.

    Every accessor raises :class:`ConfigError` naming file, dotted key and what was expected.
    Call :meth:`done` after reading to refuse unknown keys (typos must not pass silently).
    """

    def __init__(self, path: str, data: dict[str, Any], prefix: str = "") -> None:
        self.path = path
        self.data = data
        self.prefix = prefix
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def fail(self, name: str, expected: str) -> ConfigError:
        return ConfigError(self.path, self.key(name), expected)

    def _get(self, name: str, default: Any) -> Any:
        self._seen.add(name)
        if name in self.data:
            return self.data[name]
        if default is _MISSING:
            raise self.fail(name, "is required but missing")
        return default

    def str(self, name: str, default: Any = _MISSING) -> str:
        value = self._get(name, default)
        if not isinstance(value, str) or (not value and default is _MISSING):
            raise self.fail(name, "expected a non-empty string")
        return value

    def int(self, name: str, default: Any = _MISSING, *, minimum: int | None = None,
            maximum: int | None = None) -> int:
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, "expected an integer")
        if minimum is not None and value < minimum:
            raise self.fail(name, f"expected an integer >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise self.fail(name, f"expected an integer <= {maximum}, got {value}")
        return value

    def float(self, name: str, default: Any = _MISSING, *, minimum: float = 0.0) -> float:
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
            raise self.fail(name, f"expected a number >= {minimum}")
        return float(value)

    def bool(self, name: str, default: Any = _MISSING) -> bool:
        value = self._get(name, default)
        if not isinstance(value, bool):
            raise self.fail(name, "expected true or false")
        return value

    def str_list(self, name: str, default: Any = _MISSING, *, non_empty: bool = True) -> list[str]:
        value = self._get(name, default)
        if (not isinstance(value, list) or not all(isinstance(v, str) and v for v in value)
                or (non_empty and not value)):
            raise self.fail(name, "expected a list of non-empty strings"
                            + (" with at least one entry" if non_empty else ""))
        return list(value)

    def file(self, name: str, default: Any = _MISSING) -> Path:
        """A path to an existing, readable file; relative paths are relative to the config file."""
        raw = self.str(name, default)
        path = Path(raw)
        if not path.is_absolute():
            path = Path(self.path).parent / path
        if not path.is_file():
            raise self.fail(name, f"expected a readable file, but {str(path)!r} does not exist")
        return path

    def listen(self, name: str, default: Any = _MISSING) -> tuple[str, int]:
        raw = self.str(name, default)
        host, sep, port = raw.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise self.fail(name, f"expected HOST:PORT, got {raw!r}")
        return host.strip("[]"), int(port)

    def table(self, name: str, default: Any = _MISSING) -> "Section":
        value = self._get(name, default)
        if not isinstance(value, dict):
            raise self.fail(name, "expected a table")
        return Section(self.path, value, f"{self.key(name)}.")

    def tables(self, name: str, *, non_empty: bool = True) -> list["Section"]:
        value = self._get(name, [] if not non_empty else _MISSING)
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value) or (
                non_empty and not value):
            raise self.fail(name, "expected an array of tables ([[...]])"
                            + (" with at least one entry" if non_empty else ""))
        return [Section(self.path, v, f"{self.key(name)}[{i}].") for i, v in enumerate(value)]

    def done(self) -> None:
        unknown = sorted(set(self.data) - self._seen)
        if unknown:
            raise self.fail(unknown[0], "is not a known setting (misspelt?)")


def load_toml(path: str | Path) -> Section:
    """Parse a TOML file into a root :class:`Section`.

    Raises:
        ConfigError: the file is missing or not valid TOML (with line and column).
    """
    path = str(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML ({exc})") from None
    return Section(path, data)


def read_secret(path: Path) -> bytes:
    """The content of a secret file, without a trailing newline."""
    return path.read_bytes().rstrip(b"\r\n")


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
    audience: str
    ticket_public_key: bytes           # PEM of the broker's Ed25519 public key
    credential_key: bytes              # AES-256-GCM key shared with the broker for desktop secrets
    broker_url: str                    # where connect/disconnect reports go
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
    http_idle_timeout: float = DEFAULT_HTTP_IDLE_TIMEOUT


def networks(s: Section, name: str, default: Any = _MISSING) -> tuple:
    """A list of networks ("10.0.0.0/8", "127.0.0.1")."""
    nets = []
    for i, raw in enumerate(s.str_list(name, default, non_empty=default is _MISSING)):
        try:
            nets.append(ipaddress.ip_network(raw, strict=False))
        except ValueError:
            raise ConfigError(s.path, s.key(f"{name}[{i}]"),
                              f"expected a network like 10.0.0.0/8, got {raw!r}") from None
    return tuple(nets)


def gateway_config(root: Section) -> GatewayConfig:
    """Read the ``[gateway]`` table of a config file.

    Raises:
        ConfigError: with file, key and what was expected.
    """
    s = root.table("gateway")
    tls = "tls_cert_file" in s.data or "tls_key_file" in s.data
    cfg = GatewayConfig(
        listen=s.listen("listen"),
        audience=s.str("audience"),
        ticket_public_key=read_secret(s.file("ticket_public_key_file")),
        credential_key=read_aes_key(s, "credential_key_file"),
        broker_url=s.str("broker_url").rstrip("/"),
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
        http_idle_timeout=s.float("http_idle_timeout", DEFAULT_HTTP_IDLE_TIMEOUT, minimum=1.0),
    )
    s.done()
    return cfg


def read_aes_key(s: Section, name: str) -> bytes:
    path = s.file(name)
    key = read_secret(path)
    try:
        raw = bytes.fromhex(key.decode())
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise s.fail(name, "expected a file holding 64 hex digits (a 256-bit key)")
    return raw
