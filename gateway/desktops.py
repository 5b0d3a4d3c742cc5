"""The desktop's side of a session's handshake, one per protocol: how the gateway reaches a
desktop, proves itself to it, and greets the viewer before bytes are relayed.

The connection is TCP to the ticket's target; each attempt has ``connect_timeout`` seconds, one
that runs out is made again on a new connection, up to ``connect_attempts`` in all (a desktop
whose listen queue overflowed under a burst of logons can leave a connection open that never
greets — TigerVNC listens with a queue of 5). A refusal by the desktop is final.

VNC completes the desktop's RFB handshake with the ticket's sealed secret and greets the viewer
with security type None (:mod:`wire.rfb`). A protocol without a side of its own is relayed as it
comes. A second protocol plugs in here: a :class:`DesktopSide` in :data:`SIDES`.
"""

from __future__ import annotations

import asyncio
import logging

from wire import rfb, ticket

from .config import GatewayConfig
from .relay import DesktopLink
from .viewer import Ended, Kind, ViewerLink

logger = logging.getLogger("pforte.gateway")


class ViewerBytes:
    """The viewer's websocket as an RFB byte link: writes collect until the next read (or
    :meth:`flush`) sends them as one binary message; reads take binary messages, keeping what is
    left over in ``pending``."""

    def __init__(self, viewer: ViewerLink) -> None:
        self.viewer = viewer
        self.pending = bytearray()
        self._out = bytearray()

    def write(self, data: bytes) -> None:
        self._out += data

    def flush(self) -> None:
        if self._out:
            data, self._out = bytes(self._out), bytearray()
            self.viewer.send_binary(data)

    async def read_exactly(self, n: int) -> bytes:
        self.flush()
        while len(self.pending) < n:
            msg = await self.viewer.receive()
            if isinstance(msg, Ended) or msg.kind is not Kind.BINARY:
                raise ConnectionError("viewer left during the RFB handshake")
            self.pending += msg.data
        data = bytes(self.pending[:n])
        del self.pending[:n]
        return data


class DesktopSide:
    """What a protocol needs before its bytes are relayed: here, nothing."""

    def secret(self, key: bytes, claims: ticket.Claims) -> bytes | None:
        """The desktop's password from the ticket, opened before the first attempt.

        Raises:
            TicketError: the ticket's sealed secret is unusable.
        """
        return None

    async def authenticate(self, link: DesktopLink, secret: bytes | None) -> None:
        """Prove the gateway to the desktop on a fresh connection.

        Raises:
            DesktopError, ConnectionError: the desktop refused or hung up.
        """

    async def greet_viewer(self, viewer: ViewerLink, link: DesktopLink, timeout: float) -> None:
        """The viewer's half of the handshake, counted in the stream.

        Raises:
            asyncio.TimeoutError, OSError: the viewer took too long, left, or spoke no protocol
                the gateway understands; StreamNotUnderstood (a pool's clipboard guard).
        """


class VncSide(DesktopSide):
    """RFB 3.8: VNC authentication to the desktop, security type None to the viewer."""

    def secret(self, key: bytes, claims: ticket.Claims) -> bytes | None:
        return ticket.open_secret(key, claims)

    async def authenticate(self, link: DesktopLink, secret: bytes | None) -> None:
        await rfb.authenticate_desktop(link, secret)

    async def greet_viewer(self, viewer: ViewerLink, link: DesktopLink, timeout: float) -> None:
        stream = ViewerBytes(viewer)
        async with asyncio.timeout(timeout):
            greeting = await rfb.greet_viewer(stream)
        stream.flush()
        link.counters.up += greeting.received
        if link.replay is not None:
            link.replay.append(greeting.sent)
        if stream.pending:  # the viewer's ClientInit, sent along: forward it
            link.to_desktop(bytes(stream.pending))
            link.counters.up += len(stream.pending)


SIDES: dict[str, DesktopSide] = {"vnc": VncSide()}
RELAYED_AS_IS = DesktopSide()


def side_for(protocol: str) -> DesktopSide:
    return SIDES.get(protocol, RELAYED_AS_IS)


async def reach_desktop(claims: ticket.Claims, config: GatewayConfig) -> DesktopLink:
    """Connect to the ticket's desktop and prove the gateway to it (see the module's docstring).

    Raises:
        OSError, asyncio.TimeoutError, ConnectionError: the desktop was not reached.
        DesktopError, TicketError: the desktop refused, or the ticket's secret is unusable.
    """
    side = side_for(claims.target.protocol)
    secret = side.secret(config.credential_key, claims)
    attempt = 1
    while True:
        try:
            return await _connect(claims, side, secret, config)
        except (OSError, asyncio.TimeoutError) as exc:  # ConnectionError is an OSError
            if attempt == config.connect_attempts:
                raise
            attempt += 1
            logger.info("session %s: desktop %s:%s did not answer (%s), attempt %d of %d",
                        claims.session, claims.target.host, claims.target.port,
                        type(exc).__name__, attempt, config.connect_attempts)


async def _connect(claims: ticket.Claims, side: DesktopSide, secret: bytes | None,
                   config: GatewayConfig) -> DesktopLink:
    """One attempt of :func:`reach_desktop`; the connection is closed if it fails."""
    link: DesktopLink | None = None
    try:
        async with asyncio.timeout(config.connect_timeout):
            _, link = await asyncio.get_running_loop().create_connection(
                lambda: DesktopLink(config.max_buffered, config.replay_limit),
                claims.target.host, claims.target.port)
            await side.authenticate(link, secret)
        return link
    except BaseException:
        if link is not None:
            link.close()
        raise
