"""The hot path: a websocket (aiohttp) ↔ TCP (asyncio Protocol) pump.

Theory of operation
-------------------
The desktop side is an :class:`asyncio.Protocol` (:class:`DesktopLink`): ``data_received`` appends to
one ``bytearray`` and wakes the downstream pump; nothing is copied per chunk and no stream reader
sits in between. The downstream pump takes the whole buffer at once (swapping in a fresh one), so
many small TCP reads coalesce into one large websocket frame while the browser is busy.

Backpressure both ways:

* desktop → client: when more than ``max_buffered`` bytes wait for the websocket, the desktop
  transport stops reading until the pump has taken them; the websocket writer itself drains when
  its own buffer passes ``writer_limit`` (aiohttp), which blocks the pump.
* client → desktop: when the desktop transport's write buffer passes ``max_buffered``
  (``pause_writing``), the upstream pump stops taking websocket messages; aiohttp's reader then
  stops reading the client's socket.

EOF from the desktop ends the downstream after the buffered bytes are sent; the end of the
websocket closes the desktop connection. Byte counters are plain integers.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from aiohttp import WSMsgType, web

logger = logging.getLogger(__name__)


class DesktopLink(asyncio.Protocol):
    """The gateway's TCP connection to a desktop."""

    def __init__(self, max_buffered: int) -> None:
        self.max_buffered = max_buffered
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.lost = False
        self._reading_paused = False
        self._readable = asyncio.Event()      # set when buffer has data, or eof/lost
        self._writable = asyncio.Event()      # cleared while the desktop's write buffer is full
        self._writable.set()

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=self.max_buffered)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._readable.set()
        if len(self.buffer) >= self.max_buffered and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        self._readable.set()
        return True  # keep our side open: the client may still be sending

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._readable.set()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- used by the pumps and the RFB handshake -------------------------------------------
    def take(self) -> bytearray:
        """Everything buffered so far (possibly empty); reading resumes if it was paused."""
        data, self.buffer = self.buffer, bytearray()
        self._readable.clear()
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    async def wait_readable(self) -> bool:
        """Wait until data is buffered; False when the desktop has closed and nothing is left."""
        while not self.buffer:
            if self.eof or self.lost:
                return False
            self._readable.clear()
            await self._readable.wait()
        return True

    async def read_exactly(self, n: int) -> bytes:
        """Read exactly n bytes (for handshakes); raises ConnectionError if the desktop closes."""
        while len(self.buffer) < n:
            if self.eof or self.lost:
                raise ConnectionError("desktop closed the connection")
            self._readable.clear()
            await self._readable.wait()
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        if self._reading_paused and len(self.buffer) < self.max_buffered:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    async def writable(self) -> None:
        if not self._writable.is_set():
            await self._writable.wait()

    def close(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.close()


class Counters:
    """Bytes relayed, per connection. Plain integers: read at the end, never locked."""

    __slots__ = ("up", "down")

    def __init__(self) -> None:
        self.up = 0
        self.down = 0


async def _downstream(ws: web.WebSocketResponse, link: DesktopLink, counters: Counters) -> None:
    while await link.wait_readable():
        chunk = link.take()
        counters.down += len(chunk)
        await ws.send_bytes(chunk)


async def _upstream(ws: web.WebSocketResponse, link: DesktopLink, counters: Counters) -> str:
    """Returns why the client side ended."""
    async for msg in ws:
        if msg.type is WSMsgType.BINARY:
            await link.writable()
            if link.lost:
                return "desktop closed"
            link.write(msg.data)
            counters.up += len(msg.data)
        elif msg.type is WSMsgType.TEXT:
            return "text frame"
        else:
            break
    return "client closed"


async def relay(ws: web.WebSocketResponse, link: DesktopLink, counters: Counters) -> str:
    """Pump bytes both ways until either side ends; returns a short word for the log.

    The caller owns both ends and closes them afterwards.
    """
    down = asyncio.ensure_future(_downstream(ws, link, counters))
    up = asyncio.ensure_future(_upstream(ws, link, counters))
    try:
        done, _ = await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (down, up):
            task.cancel()
        await asyncio.gather(down, up, return_exceptions=True)
    if up in done and not up.cancelled() and up.exception() is None:
        return up.result()
    if down in done and not down.cancelled() and down.exception() is not None:
        return "client write failed"
    return "desktop closed"
