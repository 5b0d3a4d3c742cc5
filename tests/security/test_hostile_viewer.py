"""Viewers that send and never read, against the real gateway process: ping floods before and
after the ticket, a message in endless empty fragments, a flood behind a broken frame split over
two reads. Each may cost the gateway only what its named limits allow, and a bystander's session
goes on."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path

import pytest
import websockets

from ..conftest import rfb_viewer_handshake
from ..test_viewer import masked
from .conftest import bearer

pytestmark = pytest.mark.integration

FLOOD = 48 * 1024 * 1024      # bytes each hostile viewer tries to send
FLOODERS = 2                  # each a user of its own in a session (guard1, guard3)
STALLED = 3.0                 # seconds without the gateway taking a byte: it stopped reading
BOUND = 32 * 1024 * 1024      # what the gateway may grow by for all of them together


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def upgraded(live) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw websocket to the gateway, past its 101 answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", live.gateway_port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{live.gateway_port}\r\nUpgrade: websocket"
                 f"\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                 f"Sec-WebSocket-Key: {key}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def flood(writer: asyncio.StreamWriter, chunk: bytes) -> int:
    """Send ``chunk`` again and again, never reading, until FLOOD bytes went or the gateway stopped
    taking them (or hung up); how many bytes it took."""
    sent = 0
    try:
        while sent < FLOOD:
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), STALLED)
            sent += len(chunk)
    except (asyncio.TimeoutError, ConnectionError):
        pass
    return sent


@pytest.fixture(scope="module")
def tokens(live) -> dict[str, str]:
    """Signed-in users of this module: two hostile viewers and a bystander."""
    async def sign_in() -> dict[str, str]:
        async with live.client("10.60.0.1") as http:
            out = {}
            for user in ("guard1", "guard3", "guard2"):
                await live.enrol(http, user)
                out[user] = await live.login(http, user)
            return out
    return asyncio.run(sign_in())


async def read_all(reader: asyncio.StreamReader) -> bytes:
    """Everything the gateway sends until it hangs up (a reset after a close frame included)."""
    out = bytearray()
    try:
        while chunk := await reader.read(1 << 16):
            out += chunk
    except ConnectionError:
        pass
    return bytes(out)


async def ticket(live, token: str) -> str:
    async with live.client("10.60.0.1") as http:
        r = await http.post(f"{live.portal}/api/v1/pools/buero/connect", headers=bearer(token))
        assert r.status == 200, await r.text()
        return (await r.json())["ticket"]


PINGS = masked(b"p" * 125, 0x9) * 512
HOSTILE = {   # case: (past the ticket, what it sends again and again, the close code it gets)
    "pings before the ticket": (False, PINGS, None),
    "pings in a session": (True, PINGS, None),
    "empty fragments": (False, masked(b"a", final=False) + masked(b"", 0x0, final=False) * 8192,
                        1009),
    "a flood behind a split broken frame": (False, os.urandom(64 * 1024), 1002),
}


@pytest.mark.parametrize("case", list(HOSTILE))
async def test_a_viewer_that_sends_and_never_reads_costs_the_gateway_bounded_memory(live, tokens,
                                                                                   case):
    in_session, chunk, code = HOSTILE[case]
    before = rss(live.gateway.pid)
    links = [await upgraded(live) for _ in range(FLOODERS)]
    for (reader, writer), user in zip(links, ("guard1", "guard3")):
        if in_session:                                  # past the ticket, into the relay
            writer.write(masked((await ticket(live, tokens[user])).encode(), 0x1))
            await writer.drain()
            await asyncio.wait_for(reader.readexactly(2 + 12), 10)   # the RFB version
        elif case == "a flood behind a split broken frame":
            writer.write(b"\x82")                      # an unmasked frame, in two reads
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.write(b"\x03abc")
    answers = [asyncio.ensure_future(read_all(reader)) for reader, _ in links] \
        if code is not None else []                     # what it says before it hangs up
    sent = await asyncio.gather(*(flood(writer, chunk) for _, writer in links))
    grown = rss(live.gateway.pid) - before
    for answer in answers:                              # failed with its code, then hung up
        answer = await asyncio.wait_for(answer, 10)
        assert answer[:1] == b"\x88" and int.from_bytes(answer[2:4], "big") == code, answer[:20]
    for _, writer in links:
        writer.close()
    assert grown < BOUND, f"{case}: grew {grown >> 20} MiB after {sum(sent) >> 20} MiB sent"

    # a bystander's desktop opens and answers as before
    bystander = await ticket(live, tokens["guard2"])
    async with websockets.connect(live.gateway_ws) as ws:
        await ws.send(bystander)
        assert len(await rfb_viewer_handshake(ws)) > 24

