"""The hot path: a websocket (aiohttp) ↔ TCP (asyncio Protocol) relay.

Theory of operation
-------------------
The desktop side is an :class:`asyncio.Protocol` (:class:`DesktopLink`) with two modes.

*Handshake mode* (right after connecting): bytes collect in a buffer that the RFB handshake reads
with :meth:`DesktopLink.read_exactly`.

*Relay mode* (after :meth:`DesktopLink.start_relay`): ``data_received`` writes every chunk it gets
straight onto the client's transport as one binary websocket frame (a server's frames are not
masked: a 2–10 byte header and the chunk itself, never copied or parsed). No task, queue or
stream reader sits in between. Under load the kernel coalesces the desktop's small writes, so reads
— and frames — grow large by themselves.

Backpressure both ways, with explicit limits:

* desktop → client: when the client's transport buffers more than ``max_buffered`` bytes, aiohttp's
  protocol reports ``writing_paused``; the link stops reading from the desktop and resumes once the
  client has drained.
* client → desktop: when the desktop's write buffer passes ``max_buffered`` (``pause_writing``),
  the upstream loop stops taking websocket messages; aiohttp then stops reading the client socket.

A resumable session (``gateway.resume``) also keeps every chunk it sends in a replay buffer until
the client acknowledges it; a full buffer pauses the desktop as well. When the websocket drops,
:meth:`DesktopLink.detach` stops reading from the desktop, and a later :meth:`DesktopLink.start_relay`
on the client's new websocket carries on.

A pool with a clipboard policy other than ``both`` gives the link a
:class:`~gateway.clipboard.ClipboardGuard`: every chunk passes through it both ways, and a stream
it cannot read ends the session (``link.violation``).

EOF from the desktop ends the relay. Byte counters are plain integers.
"""

from __future__ import annotations

import asyncio
import socket
import struct

from aiohttp import WSMsgType, web

from wire.closes import EndReason

from .clipboard import ClipboardGuard, StreamNotUnderstood

from wire.resume import Ack, AckClock, Ping, Pong, ReplayBuffer, decode, encode

_OP_BINARY = 0x82                       # FIN + binary opcode
_SMALL_FRAME = 4096                     # below this, header and payload go out in one write
_LEN16 = struct.Struct("!BBH").pack
_LEN64 = struct.Struct("!BBQ").pack


def frame_header(length: int) -> bytes:
    """The header of an unmasked binary websocket frame carrying ``length`` bytes."""
    if length < 126:
        return bytes((_OP_BINARY, length))
    if length < 65536:
        return _LEN16(_OP_BINARY, 126, length)
    return _LEN64(_OP_BINARY, 127, length)


class Counters:
    """Bytes relayed, per connection. Plain integers: read at the end, never locked."""

    __slots__ = ("up", "down")

    def __init__(self) -> None:
        self.up = 0
        self.down = 0


class DesktopLink(asyncio.Protocol):
    """The gateway's TCP connection to a desktop."""

    def __init__(self, max_buffered: int, replay_limit: int = 0) -> None:
        self.max_buffered = max_buffered
        self.replay_limit = replay_limit
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.counters = Counters()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._client: asyncio.Transport | None = None
        self._client_protocol = None
        self.owner: web.WebSocketResponse | None = None  # the websocket relaying right now
        self.replay: ReplayBuffer | None = None  # set for resumable sessions
        self._paused_for: set[str] = set()    # why reading from the desktop is paused
        self._readable = asyncio.Event()      # handshake mode: data arrived, or the desktop left
        self._writable = asyncio.Event()      # cleared while the desktop's write buffer is full
        self._writable.set()
        self._drain_task: asyncio.Task | None = None
        self.guard: ClipboardGuard | None = None  # a pool's clipboard policy, enforced
        self.violation: str | None = None        # what the guard could not read, either way

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=self.max_buffered)

    def data_received(self, data: bytes) -> None:
        client = self._client
        if client is None:
            self.buffer += data
            self._readable.set()
            return
        if self.guard is not None:
            try:
                data = self.guard.desktop.feed(data)
            except StreamNotUnderstood as exc:
                self.violation = f"desktop: {exc}"
                self.transport.close()
                return
            if not data:
                return
        self.counters.down += len(data)
        replay = self.replay
        if replay is not None:
            replay.append(data)
            if replay.held > self.replay_limit:
                self._pause("replay")
        if client.is_closing():
            return
        if len(data) < _SMALL_FRAME:
            client.write(frame_header(len(data)) + data)
        else:
            client.write(frame_header(len(data)))
            client.write(data)
        if self._client_protocol.writing_paused and "client" not in self._paused_for:
            self._pause("client")
            self._drain_task = asyncio.ensure_future(self._resume_when_drained())

    def eof_received(self) -> bool:
        self._finish()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def _finish(self) -> None:
        self._readable.set()
        if not self.closed.done():
            self.closed.set_result(None)

    def _pause(self, reason: str) -> None:
        if not self._paused_for and not self.closed.done():
            self.transport.pause_reading()
        self._paused_for.add(reason)

    def _resume(self, reason: str) -> None:
        self._paused_for.discard(reason)
        if not self._paused_for and not self.closed.done():
            self.transport.resume_reading()

    async def _resume_when_drained(self) -> None:
        # aiohttp's protocol resolves this once the client's transport buffer has drained.
        try:
            await self._client_protocol._drain_helper()
        except ConnectionError:
            return  # the client is gone; detach() or the end of the session takes over
        self._resume("client")

    def acked(self, offset: int) -> None:
        """The client has received the stream up to ``offset``."""
        if self.replay is not None:
            self.replay.ack(offset)
            if self.replay.held <= self.replay_limit:
                self._resume("replay")

    # -- handshake mode --------------------------------------------------------------------
    async def read_exactly(self, n: int) -> bytes:
        """Read exactly n bytes (handshakes only); raises ConnectionError if the desktop closes."""
        while len(self.buffer) < n:
            if self.closed.done():
                raise ConnectionError("desktop closed the connection")
            self._readable.clear()
            await self._readable.wait()
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def to_desktop(self, data: bytes) -> None:
        """Send the viewer's bytes on, through the clipboard guard if the session has one.

        Raises:
            StreamNotUnderstood: the guard cannot read the viewer's stream.
        """
        if self.guard is not None:
            data = self.guard.viewer.feed(data)
        if data:
            self.transport.write(data)

    # -- relay mode ------------------------------------------------------------------------
    def start_relay(self, request: web.Request) -> None:
        """From now on, write everything the desktop sends onto the request's websocket."""
        client = request.transport
        client.set_write_buffer_limits(high=self.max_buffered)
        self._client, self._client_protocol = client, request.protocol
        if self.buffer:
            pending, self.buffer = bytes(self.buffer), bytearray()
            self.data_received(pending)
        self._resume("client")
        self._resume("detached")

    def detach(self) -> None:
        """The client's websocket is gone: hold the desktop (stop reading) until reattached."""
        self._client = self._client_protocol = self.owner = None
        if self._drain_task is not None:
            self._drain_task.cancel()
        self._pause("detached")

    async def writable(self) -> None:
        if not self._writable.is_set():
            await self._writable.wait()

    def close(self) -> None:
        if self._drain_task is not None:
            self._drain_task.cancel()
        if self.transport is not None:
            self.transport.close()


async def _upstream(ws: web.WebSocketResponse, link: DesktopLink) -> EndReason:
    """Client → desktop until either ends; returns why (EndReason.CLIENT_CLOSED: the client said goodbye;
    EndReason.CLIENT_LOST: the connection broke without a close frame)."""
    counters = link.counters
    resumable = link.replay is not None
    clock = AckClock(counters.up)
    while True:
        msg = await ws.receive()
        kind = msg.type
        if kind is WSMsgType.BINARY:
            if not link._writable.is_set():
                await link.writable()
            if link.closed.done():
                return EndReason.POLICY if link.violation else EndReason.DESKTOP_CLOSED
            if link.owner is not ws:
                return EndReason.SUPERSEDED  # a resumed connection owns the stream now
            try:
                link.to_desktop(msg.data)
            except StreamNotUnderstood as exc:
                link.violation = f"viewer: {exc}"
                return EndReason.POLICY
            counters.up += len(msg.data)
            if resumable and (ack := clock.count(len(msg.data))) is not None:
                await ws.send_str(encode(ack))
        elif kind is WSMsgType.TEXT and resumable:
            control = decode(msg.data)
            if isinstance(control, Ack):
                link.acked(control.offset)
            elif isinstance(control, Ping):       # the page measures the round trip
                await ws.send_str(encode(Pong(control.mark)))
        elif kind is WSMsgType.TEXT:
            return EndReason.TEXT_FRAME
        elif kind is WSMsgType.CLOSE:
            return EndReason.CLIENT_CLOSED
        else:
            return EndReason.CLIENT_LOST


async def relay(ws: web.WebSocketResponse, request: web.Request,
                link: DesktopLink) -> EndReason:
    """Relay both ways until either side ends; returns why.

    The caller owns both ends and closes them afterwards.
    """
    link.start_relay(request)
    link.owner = ws
    up = asyncio.ensure_future(_upstream(ws, link))
    done, _ = await asyncio.wait({up, link.closed}, return_when=asyncio.FIRST_COMPLETED)
    if up in done:
        return up.result() if up.exception() is None else EndReason.CLIENT_FAILED
    up.cancel()
    await asyncio.gather(up, return_exceptions=True)
    return EndReason.POLICY if link.violation else EndReason.DESKTOP_CLOSED
