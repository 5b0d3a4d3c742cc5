"""A fake desktop for the relay benchmarks: a TCP server that speaks a tiny command protocol.

On accept it sends one greeting byte ``G`` — or, given a VNC password, first completes a real RFB
3.8 server handshake with VNC authentication (version, security types, DES challenge and
response checked, security result, ClientInit, a 24-byte ServerInit named "bench") as TigerVNC
would, and skips the ``G``. The client then sends a command:

* ``D`` + 8-byte big-endian N: the server sends N bytes downstream (64 KiB writes, backpressure
  respected);
* ``U`` + 8-byte N: the server reads N bytes and answers ``A``;
* ``E``: the server echoes everything;
* ``I``: the connection stays idle.

Usage: ``python -m benchmarks.fake_desktop PORT [VNC_PASSWORD]`` (uvloop).
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import sys

from wire.rfb import SEC_VNC_AUTH, VERSION_3_8, vnc_auth_response

CHUNK = bytes(64 * 1024)
SERVER_INIT = struct.pack("!HHBBBBHHHBBB3xI", 1024, 768, 32, 24, 0, 1, 255, 255, 255, 16, 8, 0,
                          5) + b"bench"


class FakeDesktop(asyncio.Protocol):
    def __init__(self, password: bytes | None = None) -> None:
        self.password = password

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.mode = b""
        self.pending = bytearray()
        self.remaining = 0
        self.sent = 0                     # bytes handed to the transport in D mode
        self.can_write = asyncio.Event()
        self.can_write.set()
        if self.password is None:
            transport.write(b"G")
            self.rfb_step = 0
        else:
            transport.write(VERSION_3_8)
            self.rfb_step, self.challenge = 1, os.urandom(16)

    def _rfb(self) -> None:
        """The server's half of the RFB handshake, a step per complete client message."""
        needs = {1: 12, 2: 1, 3: 16, 4: 1}
        while self.rfb_step and len(self.pending) >= needs[self.rfb_step]:
            n = needs[self.rfb_step]
            got, self.pending = bytes(self.pending[:n]), self.pending[n:]
            if self.rfb_step == 1:
                self.transport.write(bytes([1, SEC_VNC_AUTH]))
            elif self.rfb_step == 2:
                self.transport.write(self.challenge)
            elif self.rfb_step == 3:
                if got != vnc_auth_response(self.password, self.challenge):
                    self.transport.write(struct.pack("!II", 1, 6) + b"failed")
                    self.transport.close()
                    return
                self.transport.write(struct.pack("!I", 0))
            else:
                self.transport.write(SERVER_INIT)
                self.rfb_step = -1
                break
            self.rfb_step += 1
        if self.rfb_step == -1:
            self.rfb_step = 0
            rest, self.pending = bytes(self.pending), bytearray()
            if rest:
                self.data_received(rest)

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def data_received(self, data: bytes) -> None:
        if self.rfb_step:
            self.pending += data
            self._rfb()
            return
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


async def main(port: int, password: bytes | None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FakeDesktop(password), "127.0.0.1", port,
                                      backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    from wire.serving import raise_file_limit
    raise_file_limit()
    import uvloop
    uvloop.run(main(int(sys.argv[1]), sys.argv[2].encode() if len(sys.argv) > 2 else None))
