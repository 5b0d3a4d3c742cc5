"""A fake desktop for the relay benchmarks: a TCP server that speaks a tiny command protocol.

On accept it sends one greeting byte ``G``. The client then sends a command:

* ``D`` + 8-byte big-endian N: the server sends N bytes downstream (64 KiB writes, backpressure
  respected);
* ``U`` + 8-byte N: the server reads N bytes and answers ``A``;
* ``E``: the server echoes everything;
* ``I``: the connection stays idle.

Usage: ``python -m benchmarks.fake_desktop PORT`` (uvloop).
"""

from __future__ import annotations

import asyncio
import socket
import sys

CHUNK = bytes(64 * 1024)


class FakeDesktop(asyncio.Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.mode = b""
        self.pending = bytearray()
        self.remaining = 0
        self.sent = 0                     # bytes handed to the transport in D mode
        self.can_write = asyncio.Event()
        self.can_write.set()
        transport.write(b"G")

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def data_received(self, data: bytes) -> None:
        if self.mode == b"E":
            self.transport.write(data)
            return
        if self.mode == b"U":
            self.remaining -= len(data)
            if self.remaining <= 0:
                self.transport.write(b"A")
                self.mode = b"I"
            return
        if self.mode:
            return
        self.pending += data
        if self.pending[:1] == b"E":
            self.mode = b"E"
            rest, self.pending = bytes(self.pending[1:]), bytearray()
            if rest:
                self.transport.write(rest)
        elif self.pending[:1] == b"I":
            self.mode = b"I"
        elif len(self.pending) >= 9:
            mode, n = bytes(self.pending[:1]), int.from_bytes(self.pending[1:9], "big")
            rest = len(self.pending) - 9
            self.pending = bytearray()
            if mode == b"D":
                self.mode = b"D"
                asyncio.ensure_future(self._send(n))
            elif mode == b"U":
                self.mode, self.remaining = b"U", n
                if rest:
                    self.data_received(b"\0" * rest)

    async def _send(self, n: int) -> None:
        while n > 0 and not self.transport.is_closing():
            await self.can_write.wait()
            chunk = CHUNK if n >= len(CHUNK) else CHUNK[:n]
            self.transport.write(chunk)
            self.sent += len(chunk)
            n -= len(chunk)


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FakeDesktop, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    from wire.serving import raise_file_limit
    raise_file_limit()
    import uvloop
    uvloop.run(main(int(sys.argv[1])))
