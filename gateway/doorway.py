"""The first protocol of every connection the gateway accepts: the request head.

It reads the request
line; a ``GET /ws`` has its head read and checked here (RFC 6455 §4.2: ``Upgrade: websocket``,
``Connection: upgrade``, version 13, a 16-byte key; the Origin by the gateway's rule) and, once
the gateway takes it, is answered ``101`` and becomes a :class:`~gateway.viewer.ViewerLink` on the same transport.
Any other request (health, readiness, metrics, the broker's control calls) is handed with the
bytes read so far to aiohttp's HTTP protocol: the transport changes protocol, nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from dataclasses import dataclass
from typing import Callable

from wire import serving

from .viewer import ViewerLink

MAX_HEAD = 16 * 1024      # bytes of a request head (request line and headers)
MAX_HEADERS = 100
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_OUR_HEADERS = b"".join(f"{name}: {value}\r\n".encode()   # Server: Pforte, security headers
                        for name, value in serving.REFUSAL_HEADERS.items())


@dataclass(frozen=True, slots=True)
class Upgrade:
    """A websocket request the gateway may take: its target and headers (names in lower case;
    a header sent several times is one comma-joined value, as RFC 9110 §5.3 reads it)."""
    target: str
    headers: dict[str, str]
    peer: str | None          # the connecting address; None on a Unix socket
    via_unix: bool            # came over a Unix socket (a sibling worker's carry)


class BadHead(Exception):
    def __init__(self, status: int, text: str, extra: bytes = b"") -> None:
        super().__init__(text)
        self.status, self.text, self.extra = status, text, extra


_REASONS = {400: "Bad Request", 403: "Forbidden", 426: "Upgrade Required",
            431: "Request Header Fields Too Large", 505: "HTTP Version Not Supported"}


def plain_response(status: int, text: str, extra: bytes = b"") -> bytes:
    body = text.encode()
    return (b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, "Error").encode()) + _OUR_HEADERS
            + b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n" % len(body)
            + extra + b"Connection: close\r\n\r\n" + body)


def is_websocket_line(line: bytes) -> bool:
    """Whether a request line asks for the gateway's websocket path (with or without a query)."""
    method, _, rest = line.partition(b" ")
    target = rest.partition(b" ")[0]
    return method == b"GET" and (target == b"/ws" or target.startswith(b"/ws?"))


def parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    """The target and headers of a websocket request head (without its final empty line).

    Raises:
        BadHead: with the status and text to answer.
    """
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise BadHead(400, "request head is not ASCII\n") from None
    line, *fields = text.split("\r\n")
    parts = line.split(" ")
    if len(parts) != 3:
        raise BadHead(400, "malformed request line\n")
    if parts[2] != "HTTP/1.1":
        raise BadHead(505, "HTTP/1.1 required\n")
    if len(fields) > MAX_HEADERS:
        raise BadHead(431, "too many headers\n")
    headers: dict[str, str] = {}
    for field in fields:
        name, colon, value = field.partition(":")
        if not colon or not name or name != name.strip() or any(c in name for c in "\t\0"):
            raise BadHead(400, "malformed header\n")
        if any((ord(c) < 32 and c != "\t") or c == "\x7f" for c in value):
            raise BadHead(400, "control character in a header\n")
        name, value = name.lower(), value.strip(" \t")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return parts[1], headers


def _tokens(value: str | None) -> set[str]:
    return {t.strip().lower() for t in (value or "").split(",")}


def accept_key(headers: dict[str, str]) -> bytes:
    """The ``Sec-WebSocket-Accept`` value for a valid websocket request's headers.

    Raises:
        BadHead: the request is not a version-13 websocket upgrade.
    """
    if "websocket" not in _tokens(headers.get("upgrade")) or \
            "upgrade" not in _tokens(headers.get("connection")):
        raise BadHead(400, "this path takes websocket connections only\n")
    if headers.get("sec-websocket-version") != "13":
        raise BadHead(426, "websocket version 13 required\n", b"Sec-WebSocket-Version: 13\r\n")
    key = headers.get("sec-websocket-key", "")
    try:
        valid = len(base64.b64decode(key.encode(), validate=True)) == 16
    except ValueError:
        valid = False
    if not valid:
        raise BadHead(400, "invalid Sec-WebSocket-Key\n")
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest())


class Doorway(asyncio.Protocol):
    """The first protocol of every accepted connection (see the module's docstring).

    ``take(upgrade)`` is the gateway's word on a websocket request: None to take it (it is
    answered 101 and ``opened(viewer, upgrade)`` called), or ``(status, text)`` to refuse it.
    """

    __slots__ = ("http", "take", "opened", "max_message", "transport", "head", "timer")

    def __init__(self, http: Callable[[], asyncio.Protocol],
                 take: Callable[[Upgrade], tuple[int, str] | None],
                 opened: Callable[[ViewerLink, Upgrade], None],
                 idle_timeout: float, max_message: int) -> None:
        self.http, self.take, self.opened, self.max_message = http, take, opened, max_message
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.timer = asyncio.get_running_loop().call_later(idle_timeout, self._too_slow)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.timer.cancel()

    def _too_slow(self) -> None:
        self.transport.close()   # as aiohttp does with a silent connection: no response

    def data_received(self, data: bytes) -> None:
        self.head += data
        line_end = self.head.find(b"\r\n")
        if line_end < 0:
            if len(self.head) > MAX_HEAD:
                self._refuse(BadHead(431, "request line too long\n"))
            return
        if not is_websocket_line(bytes(self.head[:line_end])):
            self._hand_to_http()
            return
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > MAX_HEAD:
                self._refuse(BadHead(431, "request head too large\n"))
            return
        self.timer.cancel()
        rest = bytes(self.head[end + 4:])
        try:
            if end > MAX_HEAD:
                raise BadHead(431, "request head too large\n")
            target, headers = parse_head(bytes(self.head[:end]))
            key = accept_key(headers)
        except BadHead as exc:
            self._refuse(exc)
            return
        sockname = self.transport.get_extra_info("sockname")
        peer = self.transport.get_extra_info("peername")
        via_unix = isinstance(sockname, str)
        upgrade = Upgrade(target, headers, None if via_unix or not peer else peer[0], via_unix)
        refusal = self.take(upgrade)
        if refusal is not None:
            self._refuse(BadHead(*refusal))
            return
        self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + key + b"\r\n"
                             + _OUR_HEADERS + b"\r\n")
        viewer = ViewerLink(self.transport, self.max_message)
        self.transport.set_protocol(viewer)
        self.opened(viewer, upgrade)
        if rest:
            viewer.data_received(rest)

    def _refuse(self, exc: BadHead) -> None:
        self.timer.cancel()
        self.transport.write(plain_response(exc.status, exc.text, exc.extra))
        self.transport.close()

    def _hand_to_http(self) -> None:
        self.timer.cancel()
        http = self.http()
        self.transport.set_protocol(http)
        http.connection_made(self.transport)
        http.data_received(bytes(self.head))
