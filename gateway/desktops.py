"""The desktop's side of a session's handshake, one per protocol: how the gateway reaches a
desktop, proves itself to it, and greets the viewer before bytes are relayed.

The connection is TCP to the ticket's target; each attempt has ``connect_timeout`` seconds, one
that runs out is made again on a new connection, up to ``connect_attempts`` in all (a desktop
whose listen queue overflowed under a burst of logons can leave a connection open that never
greets — TigerVNC listens with a queue of 5). A refusal by the desktop is final.

VNC completes the desktop's RFB handshake with the ticket's sealed secret and greets the viewer
with security type None (:mod:`wire.rfb`). RDP opens the host's connection with the gateway's own
X.224 request, takes TLS with it (the host's certificate must be the one the ticket names), does
the host's Network Level Authentication as the user where it requires it, and answers the
page's RDCleanPath request with the host's confirm and certificate; the client's
stream then passes :class:`gateway.rdp.ClientStream`, which fills in the user's logon and the
pool's policies (:mod:`gateway.rdp`). A protocol without a side of its own is relayed as it comes.
A protocol plugs in here: a :class:`DesktopSide` in :data:`SIDES`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import ssl

from wire import der, rdcleanpath, rfb, ticket
from wire.errors import DesktopError

from . import credssp, rdp
from .clipboard import ClipboardGuard
from .config import GatewayConfig
from .rdp_channels import DEVICE_SWITCHES, AllowedDevices, ClientChannels, OneWayClipboard
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

    def secret(self, key: bytes, claims: ticket.Claims) -> object:
        """The desktop's secret from the ticket, opened before the first attempt.

        Raises:
            TicketError: the ticket's sealed secret is unusable.
        """
        return None

    async def authenticate(self, link: DesktopLink, secret: object,
                           claims: ticket.Claims) -> None:
        """Prove the gateway to the desktop on a fresh connection.

        Raises:
            DesktopError, ConnectionError: the desktop refused or hung up.
        """

    def guard(self, claims: ticket.Claims, secret: object, totals: dict[str, int],
              link: DesktopLink) -> object:
        """What walks the session's stream both ways for the pool's policies (None: nothing);
        ``totals``: the gateway's clipboard counters."""
        return None

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

    async def authenticate(self, link: DesktopLink, secret: object,
                           claims: ticket.Claims) -> None:
        await rfb.authenticate_desktop(link, secret)

    def guard(self, claims: ticket.Claims, secret: object, totals: dict[str, int],
              link: DesktopLink) -> object:
        return ClipboardGuard.for_policy(claims.clipboard, totals)

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


class _Untouched:
    """One direction of a stream that passes as it is."""

    @staticmethod
    def feed(data: bytes) -> bytes:
        return data


class RdpGuard:
    """An RDP session's stream: the client's connection sequence walked, the host's read until
    its MCS Connect Response. Once the client's logon went by, the guard takes itself off the
    link — the rest of the session is relayed as it comes, at the relay's full speed — unless
    a channel the pool allows in part needs its policy: then ``channels`` walks the client's
    side on (the host's stays untouched)."""

    __slots__ = ("stream", "host", "channels", "link", "desktop")

    def __init__(self, stream: rdp.ClientStream, link: DesktopLink,
                 channels: ClientChannels | None = None) -> None:
        self.stream, self.link, self.channels = stream, link, channels
        self.host = rdp.HostStream()
        self.desktop: object = _HostReading(self)

    @property
    def viewer(self) -> "RdpGuard":
        return self

    @property
    def counts(self) -> dict[str, int] | None:
        return self.channels.counts if self.channels is not None else None

    def feed(self, data: bytes) -> bytes:
        out = self.stream.feed(data)
        if self.stream.done and self.channels is None:
            self.link.guard = None
        return out

    def host_feed(self, data: bytes) -> bytes:
        out = self.host.feed(data)
        if self.host.done:
            self.desktop = _Untouched
            if self.channels is not None:
                self.channels.name(self.stream.channel_names, self.host.channel_ids)
        return out


class _HostReading:
    """The host's side of an :class:`RdpGuard` until its Connect Response went by."""

    __slots__ = ("guard",)

    def __init__(self, guard: RdpGuard) -> None:
        self.guard = guard

    def feed(self, data: bytes) -> bytes:
        return self.guard.host_feed(data)


def _host_tls() -> ssl.SSLContext:
    """The gateway's TLS with RDP hosts: no CA store (each host's certificate is pinned by the
    ticket and checked after the handshake), made once — loading the system's CAs for every
    connection cost ~20 ms of CPU per setup."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


_HOST_TLS = _host_tls()


class RdpSide(DesktopSide):
    """RDP behind TLS: the gateway's X.224 request, TLS with the certificate the ticket pins,
    the host's Network Level Authentication done with the user's logon, RDCleanPath's answer to
    the viewer, the logon filled in (see the module's docstring)."""

    def secret(self, key: bytes, claims: ticket.Claims) -> object:
        logon = ticket.open_logon(key, claims)
        return rdp.Logon(*logon) if logon is not None else None

    async def authenticate(self, link: DesktopLink, secret: object,
                           claims: ticket.Claims) -> None:
        if claims.certificate is None:
            raise DesktopError("the ticket names no certificate for the RDP host")
        link.write(rdp.connection_request())
        header = await link.read_exactly(4)
        try:
            confirm = header + await link.read_exactly(rdp.tpkt_length(header) - 4)
            protocol = rdp.selected_protocol(confirm)
        except rdp.StreamNotUnderstood as exc:
            raise DesktopError(f"RDP host: {exc}") from None
        if protocol not in (rdp.PROTOCOL_SSL, rdp.PROTOCOL_HYBRID):
            raise DesktopError(f"RDP host chose protocol {protocol} (the gateway speaks TLS, "
                               "with or without Network Level Authentication)")
        if protocol == rdp.PROTOCOL_HYBRID and secret is None:
            raise DesktopError("RDP host requires Network Level Authentication, and the ticket "
                               "carries no logon (the user's login has no password)")
        certificate = await self._tls(link, claims.certificate)
        if protocol == rdp.PROTOCOL_HYBRID:
            await self._nla(link, secret, certificate)
        viewer_sees = rdp.confirm_selecting(confirm, rdp.PROTOCOL_SSL)
        link.opening = (rdcleanpath.encode_response(viewer_sees, [certificate],
                                                    claims.target.host), protocol)

    @staticmethod
    async def _tls(link: DesktopLink, pin: str) -> bytes:
        """TLS with the host on the link; its certificate, which must be the pinned one."""
        transport = await asyncio.get_running_loop().start_tls(
            link.transport, link, _HOST_TLS, server_side=False)
        certificate = transport.get_extra_info("ssl_object").getpeercert(binary_form=True) or b""
        shown = hashlib.sha256(certificate).hexdigest()
        if not hmac.compare_digest(shown, pin.lower()):
            transport.close()
            raise DesktopError(f"RDP host showed certificate {shown[:16]}…, not the pinned one")
        link.transport = transport
        transport.set_write_buffer_limits(high=link.max_buffered)
        return certificate

    @staticmethod
    async def _nla(link: DesktopLink, logon: rdp.Logon, certificate: bytes) -> None:
        """CredSSP with the host, as the user (:mod:`gateway.credssp`)."""
        exchange = credssp.CredSspClient(logon.domain, logon.user, logon.password, certificate)
        link.write(exchange.first())
        try:
            while not exchange.done:
                link.write(exchange.answer(await _read_der(link)))
        except (credssp.CredSspFailed, der.Malformed) as exc:
            raise DesktopError(f"RDP host's Network Level Authentication: {exc}") from None

    async def greet_viewer(self, viewer: ViewerLink, link: DesktopLink, timeout: float) -> None:
        viewer.send_binary(link.opening[0])

    def guard(self, claims: ticket.Claims, secret: object, totals: dict[str, int],
              link: DesktopLink) -> object:
        allowed = {name: True for name in claims.channels}
        allowed["clipboard"] = claims.clipboard != "none"
        policies: dict[bytes, object] = {}
        if claims.clipboard in ("in", "out"):
            policies[b"cliprdr"] = OneWayClipboard(claims.clipboard, totals)
        if devices := frozenset(kind for name, kind in DEVICE_SWITCHES.items()
                                if name in claims.channels):
            policies[b"rdpdr"] = AllowedDevices(devices)
        channels = ClientChannels(policies) if policies else None
        return RdpGuard(rdp.ClientStream(secret, claims.keyboard, rdp.blocked_channels(allowed),
                                         host_protocol=link.opening[1], then=channels),
                        link, channels)


MAX_TS_REQUEST = 64 * 1024     # bytes of one CredSSP message from a host


async def _read_der(link: DesktopLink) -> bytes:
    """One DER message (a TSRequest) from the link.

    Raises:
        der.Malformed: not DER, or longer than :data:`MAX_TS_REQUEST`.
    """
    start = await link.read_exactly(2)
    size = der.header_length(start)
    head = start + await link.read_exactly(size - 2)
    length = head[1] if size == 2 else int.from_bytes(head[2:], "big")
    if length > MAX_TS_REQUEST:
        raise der.Malformed("too long")
    return head + await link.read_exactly(length)


SIDES: dict[str, DesktopSide] = {"vnc": VncSide(), "rdp": RdpSide()}
RELAYED_AS_IS = DesktopSide()


def side_for(protocol: str) -> DesktopSide:
    return SIDES.get(protocol, RELAYED_AS_IS)


async def reach_desktop(claims: ticket.Claims, config: GatewayConfig,
                        clipboard_totals: dict[str, int]) -> DesktopLink:
    """Connect to the ticket's desktop and prove the gateway to it (see the module's docstring);
    the link comes with the guard of the pool's policies (``clipboard_totals``: the gateway's
    clipboard counters).

    Raises:
        OSError, asyncio.TimeoutError, ConnectionError: the desktop was not reached.
        DesktopError, TicketError: the desktop refused, or the ticket's secret is unusable.
    """
    side = side_for(claims.target.protocol)
    secret = side.secret(config.credential_key, claims)
    attempt = 1
    while True:
        try:
            link = await _connect(claims, side, secret, config)
            link.guard = side.guard(claims, secret, clipboard_totals, link)
            return link
        except (OSError, asyncio.TimeoutError) as exc:  # ConnectionError is an OSError
            if attempt == config.connect_attempts:
                raise
            attempt += 1
            logger.info("session %s: desktop %s:%s did not answer (%s), attempt %d of %d",
                        claims.session, claims.target.host, claims.target.port,
                        type(exc).__name__, attempt, config.connect_attempts)


async def _connect(claims: ticket.Claims, side: DesktopSide, secret: object,
                   config: GatewayConfig) -> DesktopLink:
    """One attempt of :func:`reach_desktop`; the connection is closed if it fails."""
    link: DesktopLink | None = None
    try:
        async with asyncio.timeout(config.connect_timeout):
            _, link = await asyncio.get_running_loop().create_connection(
                lambda: DesktopLink(config.max_buffered, config.replay_limit),
                claims.target.host, claims.target.port)
            await side.authenticate(link, secret, claims)
        return link
    except BaseException:
        if link is not None:
            link.close()
        raise
