"""The hot path: a viewer's websocket (:class:`gateway.viewer.ViewerLink`) ↔ a desktop's TCP
connection (:class:`DesktopLink`), two asyncio Protocols calling each other — no task, queue or
stream reader in between.

Theory of operation
-------------------
The desktop side has two modes.

*Handshake mode* (right after connecting): bytes collect in a buffer that the RFB handshake reads
with :meth:`DesktopLink.read_exactly`.

*Relay mode* (after :meth:`DesktopLink.attach`): ``data_received`` sends every chunk it gets
straight to the viewer as one binary websocket frame (a header and the chunk, never copied or
parsed), and the link is the viewer's sink: each binary message the viewer sends is written to the
desktop (``viewer_binary``), text messages are the resume protocol's acknowledgements and pings
(``viewer_text``). Under load the kernel coalesces the desktop's small writes, so reads — and
frames — grow large by themselves.

Backpressure both ways, with explicit limits:

* desktop → viewer: when the viewer's transport buffers more than ``max_buffered`` bytes, the
  link stops reading from the desktop and resumes once the viewer has drained;
* viewer → desktop: when the desktop's write buffer passes ``max_buffered`` (``pause_writing``),
  the viewer's socket is not read until it drains.

A resumable session (:mod:`wire.resume`) also keeps every chunk it sends in a replay buffer until
the client acknowledges it; a full buffer pauses the desktop as well. When the websocket drops,
:meth:`DesktopLink.detach` stops reading from the desktop, and a later :meth:`DesktopLink.attach`
of the client's new websocket carries on.

A pool with a clipboard policy other than ``both`` gives the link a
:class:`~gateway.clipboard.ClipboardGuard`: every chunk passes through it both ways, and a stream
it cannot read ends the session (``link.violation``).

The relay ends once, by calling ``on_end(viewer, reason)``: the viewer closed, broke off or broke
the protocol, the desktop closed, the guard found a stream it cannot read. Byte counters are plain
integers.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Callable

from wire.closes import EndReason
from wire.resume import Ack, AckClock, Ping, Pong, ReplayBuffer, decode, encode

from .clipboard import ClipboardGuard, StreamNotUnderstood
from .viewer import Ended, Ending

if TYPE_CHECKING:
    from .viewer import ViewerLink

_CLIENT, _REPLAY, _DETACHED = 1, 2, 4     # why reading from the desktop is paused (bits)

_ENDS = {Ending.CLOSE: EndReason.CLIENT_CLOSED, Ending.SHUT: EndReason.CLIENT_CLOSED,
         Ending.LOST: EndReason.CLIENT_LOST, Ending.FAILED: EndReason.CLIENT_FAILED}


class Counters:
    """Bytes relayed, per connection. Plain integers, never locked: read by the idle sweep every
    second, and at the end for the broker's report."""

    __slots__ = ("up", "down")

    def __init__(self) -> None:
        self.up = 0
        self.down = 0


class DesktopLink(asyncio.Protocol):
    """The gateway's TCP connection to a desktop, and in relay mode the viewer's sink."""

    __slots__ = ("max_buffered", "replay_limit", "transport", "buffer", "counters", "replay",
                 "guard", "opening", "violation", "viewer", "on_end", "done", "_paused", "_full",
                 "_waiter", "_acks")

    def __init__(self, max_buffered: int, replay_limit: int = 0) -> None:
        self.max_buffered = max_buffered
        self.replay_limit = replay_limit
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.counters = Counters()
        self.replay: ReplayBuffer | None = None  # set for resumable sessions
        self.guard: ClipboardGuard | None = None  # a pool's policies, enforced on the stream
        self.opening: object = None              # what the desktop side learnt for the viewer
        self.violation: str | None = None        # what the guard could not read, either way
        self.viewer: ViewerLink | None = None    # the websocket relaying right now
        self.on_end: Callable[[ViewerLink, EndReason], None] | None = None
        self.done = False                         # the desktop's connection has ended
        self._paused = 0                          # _CLIENT | _REPLAY | _DETACHED
        self._full = False                        # the desktop's write buffer is over its limit
        self._waiter: asyncio.Future[None] | None = None   # handshake mode: a read waits
        self._acks: AckClock | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=self.max_buffered)

    def data_received(self, data: bytes) -> None:
        viewer = self.viewer
        if viewer is None:
            self.buffer += data
            self._wake()
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
                self._pause(_REPLAY)
        viewer.send_binary(data)
        if viewer.writing_paused:
            self._pause(_CLIENT)

    def eof_received(self) -> bool:
        self._finish()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()

    def pause_writing(self) -> None:
        self._full = True
        if self.viewer is not None:
            self.viewer.pause_reading()

    def resume_writing(self) -> None:
        self._full = False
        if self.viewer is not None:
            self.viewer.resume_reading()

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        self._wake()
        self._end_relay(EndReason.POLICY if self.violation else EndReason.DESKTOP_CLOSED)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _pause(self, reason: int) -> None:
        if not self._paused and not self.done:
            self.transport.pause_reading()
        self._paused |= reason

    def _resume(self, reason: int) -> None:
        if not self._paused & reason:
            return
        self._paused &= ~reason
        if not self._paused and not self.done:
            self.transport.resume_reading()

    def acked(self, offset: int) -> None:
        """The client has received the stream up to ``offset``."""
        if self.replay is not None:
            self.replay.ack(offset)
            if self.replay.held <= self.replay_limit:
                self._resume(_REPLAY)

    # -- handshake mode --------------------------------------------------------------------
    async def read_exactly(self, n: int) -> bytes:
        """Read exactly n bytes (handshakes only); raises ConnectionError if the desktop closes."""
        while len(self.buffer) < n:
            if self.done:
                raise ConnectionError("desktop closed the connection")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
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
    def attach(self, viewer: ViewerLink, on_end: Callable[[ViewerLink, EndReason], None]) -> None:
        """From now on, relay between the desktop and ``viewer``; ``on_end(viewer, reason)``
        once that ends."""
        self.viewer, self.on_end = viewer, on_end
        self._acks = AckClock(self.counters.up) if self.replay is not None else None
        if self._full:
            viewer.pause_reading()
        if self.buffer:
            pending, self.buffer = bytes(self.buffer), bytearray()
            self.data_received(pending)
        self._resume(_CLIENT)
        self._resume(_DETACHED)
        viewer.attach(self)        # what the viewer sent meanwhile flows now
        if self.done and self.viewer is viewer:
            self._end_relay(EndReason.POLICY if self.violation else EndReason.DESKTOP_CLOSED)

    def detach(self) -> None:
        """The viewer's websocket is gone: hold the desktop (stop reading) until reattached."""
        if self.viewer is not None:
            self.viewer.detach()
            self.viewer = None
        self._pause(_DETACHED)

    def _end_relay(self, reason: EndReason) -> None:
        viewer = self.viewer
        if viewer is None:
            return
        self.viewer = None
        viewer.detach()
        self.on_end(viewer, reason)

    # -- the viewer's sink -----------------------------------------------------------------
    def viewer_binary(self, data: bytes) -> None:
        if self.done:
            return
        try:
            self.to_desktop(data)
        except StreamNotUnderstood as exc:
            self.violation = f"viewer: {exc}"
            self._end_relay(EndReason.POLICY)
            return
        self.counters.up += len(data)
        if self._acks is not None and (ack := self._acks.count(len(data))) is not None:
            self.viewer.send_text(encode(ack))

    def viewer_text(self, text: str) -> None:
        if self.replay is None:
            self._end_relay(EndReason.TEXT_FRAME)   # a plain stream takes no text
            return
        control = decode(text)
        if isinstance(control, Ack):
            self.acked(control.offset)
        elif isinstance(control, Ping):             # the page measures the round trip
            self.viewer.send_text(encode(Pong(control.mark)))

    def viewer_ended(self, ended: Ended) -> None:
        viewer, self.viewer = self.viewer, None
        if viewer is not None:
            self.on_end(viewer, _ENDS[ended.how])

    def viewer_drained(self) -> None:
        self._resume(_CLIENT)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
