"""Sessions that survive a network drop: byte-exact continuity both ways through the real gateway."""

from __future__ import annotations

import asyncio
import os
import time

import aiohttp
import pytest

from testbed.demo import TENANT
from broker.session_states import State
from client.stream import GatewayStream, StreamClosed
from wire.resume import Offer, Ping, Pong, Resume, ResumeToken, decode, encode

from .conftest import drop_stream


pytestmark = [pytest.mark.integration, pytest.mark.both_loops]


async def stream(inst, token, http, **kw) -> GatewayStream:
    conn = await inst.connect(token)
    s = GatewayStream(http, conn["gateway_url"], conn["ticket"], **kw)
    await s.open()
    assert await s.recv() == b"G"
    return s


async def recv_exactly(s: GatewayStream, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        out += await s.recv()
    return bytes(out)


async def test_an_echo_stream_survives_drops_with_no_byte_lost_or_repeated(raw_install):
    inst, token, _ = await raw_install()
    data = os.urandom(2 * 1024 * 1024)
    async with aiohttp.ClientSession() as http:
        s = await stream(inst, token, http)
        await s.send(b"E")
        echoed = bytearray()
        step = 100_000
        for i in range(0, len(data), step):
            await s.send(data[i:i + step])
            if i in (300_000, 1_200_000):
                drop_stream(s)  # the network fails with bytes in flight both ways
            echoed += await recv_exactly(s, min(step, len(data) - i))
        assert bytes(echoed) == data
        assert s.resumes == 2
        metrics = await (await http.get(
            inst.gateway_url.replace("ws://", "http://").replace("/ws", "/metrics"))).text()
        assert "pforte_gateway_resumes_total 2" in metrics
        await s.close()


async def test_a_downstream_flood_continues_exactly_after_a_drop(raw_install):
    inst, token, _ = await raw_install()
    total = 32 * 1024 * 1024
    async with aiohttp.ClientSession() as http:
        s = await stream(inst, token, http)
        await s.send(b"D" + total.to_bytes(8, "big"))
        got = 0
        dropped = False
        while got < total:
            got += len(await s.recv())
            if got > total // 3 and not dropped:
                drop_stream(s)
                dropped = True
        assert got == total and s.resumes == 1
        await s.close()


async def test_a_session_not_resumed_within_the_grace_period_ends(raw_install):
    inst, token, _ = await raw_install(resume_grace=1.0)
    async with aiohttp.ClientSession() as http:
        s = await stream(inst, token, http)
        drop_stream(s)
        await asyncio.sleep(2.0)
        s.resume_within = 2.0
        with pytest.raises(StreamClosed) as closed:
            await s.recv()
        assert closed.value.code == 4410
        for _ in range(50):  # the broker hears of the disconnect
            sessions = await inst.broker.store.sessions.live(TENANT)
            if sessions and sessions[0].state is State.DISCONNECTED:
                break
            await asyncio.sleep(0.05)
        assert sessions[0].state is State.DISCONNECTED


async def test_a_normal_close_ends_the_session_and_its_token(raw_install):
    inst, token, _ = await raw_install()
    async with aiohttp.ClientSession() as http:
        s = await stream(inst, token, http)
        await s.close()
        await asyncio.sleep(0.1)
        ws = await http.ws_connect(inst.gateway_url)
        await ws.send_str(encode(Resume(s.token, 1)))
        msg = await ws.receive()
        assert ws.close_code == 4410 and msg.extra == "session cannot be resumed"


async def test_a_forged_resume_token_is_refused(raw_install):
    inst, _, _ = await raw_install()
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(inst.gateway_url)
        await ws.send_str(encode(Resume("made-up", 0)))
        await ws.receive()
        assert ws.close_code == 4410


async def test_a_non_resumable_client_is_not_held(raw_install):
    inst, token, _ = await raw_install()
    async with aiohttp.ClientSession() as http:
        s = await stream(inst, token, http, resumable=False)
        drop_stream(s)
        t0 = time.monotonic()
        for _ in range(100):
            health = await (await http.get(
                inst.gateway_url.replace("ws://", "http://").replace("/ws", "/healthz"))).json()
            if health["sessions"] == 0:
                break
            await asyncio.sleep(0.02)
        assert health["sessions"] == 0 and time.monotonic() - t0 < 5


async def test_a_vnc_session_survives_a_drop(installation, desktops):
    token = await installation.login("anna")
    conn = await installation.connect(token)
    async with aiohttp.ClientSession() as http:
        s = GatewayStream(http, conn["gateway_url"], conn["ticket"])
        await s.open()
        pending = bytearray()

        async def read(n: int) -> bytes:
            while len(pending) < n:
                pending.extend(await s.recv())
            data = bytes(pending[:n])
            del pending[:n]
            return data
        assert await read(12) == b"RFB 003.008\n"
        await s.send(b"RFB 003.008\n")
        assert await read(2) == b"\x01\x01"
        await s.send(b"\x01")
        assert await read(4) == b"\x00\x00\x00\x00"
        await s.send(b"\x01")
        header = await read(24)
        name = await read(int.from_bytes(header[20:24], "big"))
        assert name.decode() in {d.name for d in desktops}
        drop_stream(s)
        # FramebufferUpdateRequest for a 16x16 corner: the desktop answers through the new socket
        await s.send(bytes([3, 0]) + (0).to_bytes(2, "big") * 2 + (16).to_bytes(2, "big") * 2)
        update = await read(4)
        assert update[0] == 0 and s.resumes == 1  # FramebufferUpdate
        await s.close()


async def test_a_resume_before_the_gateway_noticed_the_drop_takes_over(raw_install):
    """A laptop moving from Wi-Fi to cable reconnects before the old connection times out."""
    inst, token, _ = await raw_install()
    async with aiohttp.ClientSession() as http:
        s = await stream(inst, token, http)
        await s.send(b"E")
        await s.send(b"before")
        assert await recv_exactly(s, 6) == b"before"
        old = s.ws
        await s._reattach()            # the old websocket is still open on the gateway's side
        assert s.ws is not old and s.resumes == 1
        await s.send(b"after")
        assert await recv_exactly(s, 5) == b"after"
        closed = await old.receive()
        assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await s.close()


async def test_the_gateway_answers_a_ping_with_its_mark_and_the_stream_goes_on(raw_install):
    """The page measures the round trip through the gateway (its quality indicator)."""
    inst, token, _ = await raw_install()
    conn = await inst.connect(token)
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(conn["gateway_url"])
        await ws.send_str(encode(Offer(conn["ticket"], resumable=True)))
        assert isinstance(decode((await ws.receive()).data), ResumeToken)
        assert (await ws.receive()).data == b"G"          # the fake desktop's greeting
        for mark in (0, 1234, 2**40):
            await ws.send_str(encode(Ping(mark)))
            assert decode((await ws.receive()).data) == Pong(mark)
        await ws.send_bytes(b"E" + b"still here")          # echo: the stream goes on
        assert (await ws.receive()).data == b"still here"
        await ws.close()
