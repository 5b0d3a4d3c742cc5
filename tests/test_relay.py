"""The relay through a real gateway and broker: every byte, in order, both ways; bounded memory
with a slow reader; and no harm from churn, on uvloop and on asyncio."""

from __future__ import annotations

import asyncio
import os
import random

import aiohttp
import pytest

from benchmarks.fake_desktop import FakeDesktop

from .conftest import open_ws, read_exactly

pytestmark = [pytest.mark.integration, pytest.mark.both_loops]


@pytest.fixture
async def relay_install(raw_install):
    return await raw_install()


async def test_every_byte_arrives_in_order_both_ways(relay_install):
    inst, token, _ = relay_install
    rnd = random.Random(7)
    data = os.urandom(3 * 1024 * 1024)
    async with aiohttp.ClientSession() as http:
        ws = await open_ws(inst, token, http)
        await ws.send_bytes(b"E")
        sent = 0

        async def writer():
            nonlocal sent
            while sent < len(data):
                n = rnd.choice([1, 7, 100, 4096, 65536, 300_000])
                await ws.send_bytes(data[sent:sent + n])
                sent += n
        task = asyncio.ensure_future(writer())
        echoed = await read_exactly(ws, len(data))
        await task
        assert echoed == data
        await ws.close()


async def test_a_slow_reader_does_not_make_the_gateway_buffer_without_bound(relay_install):
    inst, token, links = relay_install
    flood = 400 * 1024 * 1024
    async with aiohttp.ClientSession() as http:
        ws = await open_ws(inst, token, http)
        await ws.send_bytes(b"D" + flood.to_bytes(8, "big"))
        await asyncio.sleep(1.5)  # the client reads nothing meanwhile
        desktop = links[-1]
        accepted = flood_accepted(desktop)
        # The desktop could hand over only what fits into kernel socket buffers and the gateway's
        # bounded buffers; without backpressure the gateway would have taken all 400 MiB.
        assert accepted < 64 * 1024 * 1024, accepted
        assert not desktop.can_write.is_set()  # the desktop is being held back
        # and the stream goes on, complete, once the client reads
        got = 0
        while got < 16 * 1024 * 1024:
            got += len((await ws.receive()).data)
        await ws.close()


def flood_accepted(desktop: FakeDesktop) -> int:
    return desktop.sent - desktop.transport.get_write_buffer_size()


async def test_churn_leaves_the_gateway_healthy(relay_install):
    inst, token, _ = relay_install
    rnd = random.Random(11)

    async def one(http):
        ws = await open_ws(inst, token, http)
        action = rnd.choice(["echo-close", "flood-abandon", "close-now", "desktop-gone"])
        if action == "echo-close":
            await ws.send_bytes(b"E" + os.urandom(rnd.randint(1, 50_000)))
            await ws.receive()
            await ws.close()
        elif action == "flood-abandon":
            await ws.send_bytes(b"D" + (10 * 1024 * 1024).to_bytes(8, "big"))
            await ws.receive()
            ws._response.connection.transport.abort()  # a client that vanishes mid-stream
        elif action == "close-now":
            await ws.close()
        else:
            await ws.send_bytes(b"U" + (1).to_bytes(8, "big") + b"x")  # desktop answers A
            await ws.receive()
            await ws.close()

    async with aiohttp.ClientSession() as http:
        for _ in range(4):
            await asyncio.gather(*(one(http) for _ in range(40)))
        gateway_health = inst.gateway_url.replace("ws://", "http://").replace("/ws", "/healthz")
        for _ in range(100):
            async with http.get(gateway_health) as r:
                body = await r.json()
            if body["sessions"] == 0:
                break
            await asyncio.sleep(0.05)
        assert body == {"status": "ok", "sessions": 0}
        # and it still relays
        ws = await open_ws(inst, token, http)
        await ws.send_bytes(b"Ehello")
        assert await read_exactly(ws, 5) == b"hello"
        await ws.close()
