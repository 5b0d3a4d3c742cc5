"""A lean load generator for ``benchmarks.relay``: one process per core, each driving its share of
the connections, so that the generator is never what limits a figure (its CPU is reported).

Each connection is a plain asyncio Protocol on uvloop. Websocket peers get a pre-built upgrade
request and masked frames (unmasked and masked in C by ``websockets.speedups``); server frames are
parsed in place, and payloads that are only counted are never copied. Every connection completes
the desktop's RFB handshake before it counts as set up: through Pforte the viewer's half (security
type None: the gateway authenticated to the desktop with the ticket's secret), through the other
peers the client's own VNC authentication (DES over the desktop's challenge).

Usage (by ``benchmarks.relay``): ``python -m benchmarks.loadgen JOB_FILE`` (JSON); prints one JSON
line with the results and the generator's own CPU seconds during the measurement.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import resource
import struct
import sys
import time

from websockets.speedups import apply_mask

from wire.rfb import VERSION_3_8, vnc_auth_response

_LEN16 = struct.Struct("!BBH").pack
_LEN64 = struct.Struct("!BBQ").pack
CLOSE_1000 = bytes((0x88, 0x82)) + b"\0\0\0\0" + (1000).to_bytes(2, "big")


def masked_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = _LEN16(0x80 | opcode, 0xFE, n)
    else:
        header = _LEN64(0x80 | opcode, 0xFF, n)
    mask = os.urandom(4)
    return header + mask + apply_mask(payload, mask)


class Client(asyncio.Protocol):
    """One connection: a websocket (``ws``) or raw TCP. Reads collect into ``buffer`` only when
    asked (``collect``); otherwise payload bytes are just counted."""

    def __init__(self, ws: bool) -> None:
        self.ws = ws
        self.transport: asyncio.Transport | None = None
        self.upgraded = not ws
        self.head = bytearray()
        self.frame_left = 0            # payload bytes of the current frame still to come
        self.frame_opcode = 0
        self.partial = b""             # a frame header split across reads
        self.control = bytearray()
        self.buffer = bytearray()
        self.collect = True
        self.received = 0
        self.want = 0                  # wake the waiter once received (or buffered) reaches this
        self.waiter: asyncio.Future | None = None
        self.writable: asyncio.Future | None = None
        self.closed = False
        self.open: asyncio.Future = asyncio.get_running_loop().create_future()
        if not ws:
            self.open.set_result(None)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.open.done():
            self.open.set_exception(ConnectionError("closed before the upgrade"))
        self._wake(force=True)
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)

    def pause_writing(self) -> None:
        self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)
        self.writable = None

    def _wake(self, force: bool = False) -> None:
        if self.waiter is not None and not self.waiter.done():
            have = len(self.buffer) if self.collect else self.received
            if force or have >= self.want:
                self.waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.head.startswith(b"HTTP/1.1 101"):
                self.closed = True
                self.open.set_exception(ConnectionError(bytes(self.head[:12]).decode()))
                self.transport.close()
                return
            self.upgraded = True
            self.open.set_result(None)
            data = bytes(self.head[end + 4:])
            if not data:
                return
        if not self.ws:
            self._payload(data if self.collect else len(data))
            self._wake()
            return
        if self.partial:
            data = self.partial + data
            self.partial = b""
        pos, size = 0, len(data)
        while pos < size:
            if self.frame_left:
                take = min(self.frame_left, size - pos)
                if self.frame_opcode == 0x2:
                    self._payload(data[pos:pos + take] if self.collect else take)
                else:
                    self.control += data[pos:pos + take]
                self.frame_left -= take
                pos += take
                if not self.frame_left:
                    self._frame_done()
                continue
            if size - pos < 2:
                self.partial = data[pos:]
                break
            first, length = data[pos], data[pos + 1] & 0x7F
            head = 2
            if length == 126:
                head = 4
            elif length == 127:
                head = 10
            if size - pos < head:
                self.partial = data[pos:]
                break
            if head == 4:
                length = int.from_bytes(data[pos + 2:pos + 4], "big")
            elif head == 10:
                length = int.from_bytes(data[pos + 2:pos + 10], "big")
            pos += head
            self.frame_opcode, self.frame_left = first & 0x0F, length
            if not length:
                self._frame_done()
        self._wake()

    def _payload(self, chunk: bytes | int) -> None:
        if isinstance(chunk, int):
            self.received += chunk
        else:
            self.received += len(chunk)
            self.buffer += chunk

    def _frame_done(self) -> None:
        if self.frame_opcode == 0x9:          # a ping: answer it
            self.transport.write(masked_frame(bytes(self.control), 0xA))
        elif self.frame_opcode == 0x8:
            self.closed = True
            self._wake(force=True)
        self.control.clear()

    # -- for the jobs --------------------------------------------------------------------------
    def send(self, payload: bytes) -> None:
        self.transport.write(masked_frame(payload) if self.ws else payload)

    async def drain(self) -> None:
        if self.writable is not None:
            await self.writable

    async def read_exactly(self, n: int) -> bytes:
        self.collect = True
        while len(self.buffer) < n:
            if self.closed:
                raise ConnectionError("closed")
            self.want = n
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out

    async def count_to(self, target: int) -> None:
        """Wait until ``target`` payload bytes have arrived in all, without keeping them."""
        self.collect = False
        while self.received < target:
            if self.closed:
                raise ConnectionError("closed")
            self.want = target
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter

    def close(self) -> None:
        if self.ws and not self.closed:
            self.transport.write(CLOSE_1000)
        self.transport.close()


class Peer:
    """How to reach one peer: its address, websocket or TCP, and its RFB security."""

    def __init__(self, job: dict) -> None:
        self.host, self.port = "127.0.0.1", job["port"]
        self.ws = job["ws"]
        self.path = job.get("path", "/")
        self.password = job["vnc_password"].encode() if job.get("vnc_password") else None
        self.tickets: list[str] = list(job.get("tickets", ()))
        self.request = (f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n")

    async def open(self) -> Client:
        loop = asyncio.get_running_loop()
        _, client = await loop.create_connection(lambda: Client(self.ws), self.host, self.port)
        if self.ws:
            key = base64.b64encode(os.urandom(16)).decode()
            client.transport.write(self.request.replace("{key}", key).encode())
            await client.open
            if self.tickets:
                client.transport.write(masked_frame(self.tickets.pop().encode(), 0x1))
        await self.handshake(client)
        return client

    async def handshake(self, c: Client) -> None:
        """The viewer's half of RFB, up to the desktop's ServerInit."""
        await c.read_exactly(12)
        c.send(VERSION_3_8)
        count = (await c.read_exactly(1))[0]
        types = await c.read_exactly(count)
        if self.password is not None and 2 in types:
            c.send(b"\x02")
            c.send(vnc_auth_response(self.password, await c.read_exactly(16)))
        else:
            c.send(b"\x01")
        if (await c.read_exactly(4)) != b"\0\0\0\0":
            raise ConnectionError("security handshake failed")
        c.send(b"\x01")                               # ClientInit: shared
        head = await c.read_exactly(24)
        await c.read_exactly(int.from_bytes(head[20:24], "big"))


# -- the jobs ------------------------------------------------------------------------------------

async def opened(peer: Peer, n: int, concurrency: int = 100) -> list[Client]:
    sem = asyncio.Semaphore(concurrency)

    async def one() -> Client:
        async with sem:
            return await peer.open()
    return list(await asyncio.gather(*(one() for _ in range(n))))


async def setups(peer: Peer, job: dict) -> dict:
    """Open (ticket, RFB handshake), close, as fast as ``concurrency`` connections at a time
    allow: the churn a morning's logons make."""
    samples: list[float] = []
    failures: list[str] = []
    remaining = job["total"]

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t = time.perf_counter()
            try:
                c = await peer.open()
            except (OSError, ConnectionError) as exc:
                failures.append(type(exc).__name__)
                continue
            samples.append(time.perf_counter() - t)
            c.close()
    await asyncio.gather(*(worker() for _ in range(job["concurrency"])))
    return {"samples": samples, "failures": len(failures)}


async def downstream(peer: Peer, job: dict) -> dict:
    cs = await opened(peer, job["conns"])
    each = job["bytes"]
    targets = [c.received + each for c in cs]
    for c in cs:
        c.collect = False
    t = time.perf_counter()
    for c in cs:
        c.send(b"D" + each.to_bytes(8, "big"))
    await asyncio.gather(*(c.count_to(target) for c, target in zip(cs, targets)))
    wall = time.perf_counter() - t
    for c in cs:
        c.close()
    return {"bytes": each * len(cs), "wall": wall}


async def upstream(peer: Peer, job: dict) -> dict:
    cs = await opened(peer, job["conns"])
    size, count = job["frame"], job["frames"]
    payload = bytes(size)
    frame = masked_frame(payload) if peer.ws else payload

    async def pump(c: Client) -> None:
        c.send(b"U" + (size * count).to_bytes(8, "big"))
        for i in range(count):
            c.transport.write(frame)
            if c.writable is not None:
                await c.drain()
        await c.read_exactly(1)
    t = time.perf_counter()
    await asyncio.gather(*(pump(c) for c in cs))
    wall = time.perf_counter() - t
    for c in cs:
        c.close()
    return {"bytes": size * count * len(cs), "messages": count * len(cs), "wall": wall}


async def round_trip(peer: Peer, job: dict) -> dict:
    cs = await opened(peer, job["conns"])
    samples: list[float] = []
    message = bytes(64)

    async def ping(c: Client) -> None:
        c.send(b"E")
        for _ in range(job["iterations"]):
            t = time.perf_counter()
            c.send(message)
            await c.read_exactly(64)
            samples.append(time.perf_counter() - t)
    await asyncio.gather(*(ping(c) for c in cs))
    for c in cs:
        c.close()
    return {"samples": samples}


async def idle(peer: Peer, job: dict) -> dict:
    """Open sessions in steps (``steps``: how many each), leave them idle; after each step say
    how many are held on stdout and wait for a line on stdin; then close them all."""
    cs: list[Client] = []
    errors: list[str] = []
    sem = asyncio.Semaphore(100)

    async def one() -> None:
        async with sem:
            try:
                c = await peer.open()
            except (OSError, ConnectionError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:100])
                return
            c.send(b"I")
            cs.append(c)
    for step in job["steps"]:
        await asyncio.gather(*(one() for _ in range(step)))
        print(json.dumps({"held": len(cs)}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for c in cs:
        c.close()
    return {"opened": len(cs), "first_error": errors[0] if errors else None}


# -- hostile viewers (benchmarks.hostile) -----------------------------------------------------

async def _attacker(peer: Peer, with_ticket: bool
                    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw websocket to the peer; with a ticket (where the peer takes one) past the desktop's
    RFB handshake, as a viewer gets there."""
    reader, writer = await asyncio.open_connection(peer.host, peer.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(peer.request.replace("{key}", key).encode())
    await reader.readuntil(b"\r\n\r\n")
    if not with_ticket:
        return reader, writer
    if peer.tickets:
        writer.write(masked_frame(peer.tickets.pop().encode(), 0x1))
    pending = bytearray()

    async def read(n: int) -> bytes:
        while len(pending) < n:
            first, second = await reader.readexactly(2)
            size = second & 0x7F
            if size == 126:
                size = int.from_bytes(await reader.readexactly(2), "big")
            elif size == 127:
                size = int.from_bytes(await reader.readexactly(8), "big")
            payload = await reader.readexactly(size)
            if first & 0x0F == 0x2:
                pending.extend(payload)
            elif first & 0x0F == 0x8:
                raise ConnectionError("closed")
        out = bytes(pending[:n])
        del pending[:n]
        return out
    await read(12)
    writer.write(masked_frame(VERSION_3_8))
    types = await read((await read(1))[0])
    if peer.password is not None and 2 in types:
        writer.write(masked_frame(b"\x02"))
        writer.write(masked_frame(vnc_auth_response(peer.password, await read(16))))
    else:
        writer.write(masked_frame(b"\x01"))
    await read(4)
    writer.write(masked_frame(b"\x01"))
    head = await read(24)
    await read(int.from_bytes(head[20:24], "big"))
    return reader, writer


def _fragments() -> bytes:
    """A binary message that never ends: one non-final frame, then empty continuations."""
    first = bytes((0x02, 0x81)) + os.urandom(4) + b"x"
    return first + (bytes((0x00, 0x80)) + b"\0\0\0\0") * 4096


async def hostile(peer: Peer, job: dict) -> dict:
    """``conns`` viewers of one ``attack`` for ``seconds``: each connects again when the peer
    closes it. They never read what the peer sends them. Attacks: ``pings`` (a flood of pings,
    in a session), ``fragments`` (a message of endless empty fragments, before any ticket),
    ``slow_reader`` (a session whose desktop sends without end), ``slowloris`` (a request
    head, one byte a second)."""
    attack, until = job["attack"], time.monotonic() + job["seconds"]
    sent, opened = [0], [0]
    pings = masked_frame(b"p" * 125, 0x9) * 512

    async def one() -> None:
        while time.monotonic() < until:
            writer = None
            try:
                if attack == "slowloris":
                    reader, writer = await asyncio.open_connection(peer.host, peer.port)
                    writer.write(f"GET {peer.path} HTTP/1.1\r\nHost: x\r\n".encode())
                    opened[0] += 1
                    while time.monotonic() < until and not reader.at_eof():
                        writer.write(b"X")
                        await writer.drain()
                        await asyncio.sleep(1.0)
                    continue
                reader, writer = await _attacker(peer, with_ticket=attack != "fragments")
                opened[0] += 1
                if attack == "slow_reader":
                    writer.write(masked_frame(b"D" + (1 << 40).to_bytes(8, "big")))
                    await asyncio.sleep(max(0.0, until - time.monotonic()))
                    continue
                chunk = pings if attack == "pings" else _fragments()
                while time.monotonic() < until:
                    writer.write(chunk)
                    await asyncio.wait_for(writer.drain(), 2.0)
                    sent[0] += len(chunk)
            except (OSError, RuntimeError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                    ConnectionError):              # uvloop: RuntimeError on a closed transport
                await asyncio.sleep(0.05)          # closed by the peer: again
            finally:
                if writer is not None:
                    writer.transport.abort()
    await asyncio.gather(*(one() for _ in range(job["conns"])))
    return {"attack": attack, "bytes_sent": sent[0], "connections": opened[0]}


JOBS = {"setups": setups, "down": downstream, "up": upstream, "rtt": round_trip, "idle": idle,
        "hostile": hostile}


async def main(job: dict) -> dict:
    peer = Peer(job)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    result = await JOBS[job["kind"]](peer, job)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    result["generator_cpu_s"] = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    result["generator_wall_s"] = time.perf_counter() - t0
    return result


if __name__ == "__main__":
    from wire.serving import raise_file_limit
    raise_file_limit()
    import uvloop
    with open(sys.argv[1]) as fh:
        job = json.load(fh)
    print(json.dumps(uvloop.run(main(job))), flush=True)
