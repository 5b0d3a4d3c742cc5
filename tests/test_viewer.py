"""The gateway's own websocket (gateway/viewer.py): the frame parser and writer as pure logic over
a recording transport, then the handshake and the framing against the real gateway over raw
sockets — what a hostile or broken client sends, and what it gets back."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import tracemalloc

import aiohttp
import pytest

from gateway.doorway import BadHead, accept_key, parse_head
from gateway.frames import MAX_FRAGMENTS
from gateway.viewer import (INBOX_MESSAGES, MAX_CONTROLS, Ended, Ending, Kind, Message,
                            ViewerLink, frame)

from .conftest import open_ws, read_exactly


class Recorder(asyncio.Transport):
    """A transport that keeps what is written (unit tests of pure logic only)."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closing = self.aborted = self.paused = False
        self.high: int | None = None

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        self.high = high

    def write(self, data) -> None:
        self.out += data

    def writelines(self, parts) -> None:
        for part in parts:
            self.out += part

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closing or self.aborted

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


def masked(payload: bytes, opcode: int = 0x2, final: bool = True, rsv: int = 0) -> bytes:
    n = len(payload)
    first = (0x80 if final else 0) | rsv | opcode
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 65536:
        head = bytes((first, 0xFE)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, 0xFF)) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of every unmasked server frame in ``data``."""
    out, pos = [], 0
    while pos < len(data):
        first, n = data[pos], data[pos + 1] & 0x7F
        pos += 2
        if n == 126:
            n, pos = int.from_bytes(data[pos:pos + 2], "big"), pos + 2
        elif n == 127:
            n, pos = int.from_bytes(data[pos:pos + 8], "big"), pos + 8
        out.append((first & 0x0F, bytes(data[pos:pos + n])))
        pos += n
    return out


async def link(max_message: int = 1 << 20) -> tuple[ViewerLink, Recorder]:
    transport = Recorder()
    return ViewerLink(transport, max_message), transport


def feed(viewer: ViewerLink, data: bytes, rnd: random.Random) -> None:
    pos = 0
    while pos < len(data):
        n = rnd.choice([1, 2, 3, 7, 100, 5000, 70000])
        viewer.data_received(data[pos:pos + n])
        pos += n


async def test_messages_arrive_whole_however_the_bytes_are_cut():
    rnd = random.Random(3)
    messages = [os.urandom(n) for n in (0, 1, 125, 126, 65535, 65536, 200_000)]
    stream = b"".join(masked(m) for m in messages)
    stream += masked("Grüße".encode(), 0x1)
    stream += masked(b"frag", final=False) + masked(b"ment", 0x0, final=False) \
        + masked(b"ed", 0x0)
    for _ in range(5):
        viewer, _ = await link()
        feed(viewer, stream, rnd)
        got = [await viewer.receive() for _ in range(len(messages) + 2)]
        assert [m.data for m in got[:len(messages)]] == messages
        assert got[-2] == Message(Kind.TEXT, "Grüße")
        assert got[-1] == Message(Kind.BINARY, b"fragmented")


class Sink:
    """A relaying session's side of the viewer, recording what reaches it."""

    def __init__(self) -> None:
        self.bytes = bytearray()
        self.texts: list[str] = []
        self.ended: list[Message] = []

    def viewer_binary(self, data: bytes) -> None:
        self.bytes += data

    def viewer_text(self, text: str) -> None:
        self.texts.append(text)

    def viewer_ended(self, message: Message) -> None:
        self.ended.append(message)

    def viewer_drained(self) -> None:
        pass


async def test_relayed_bytes_go_on_as_they_arrive_and_in_order():
    rnd = random.Random(5)
    payloads = [os.urandom(n) for n in (1, 126, 65536, 300_000, 7)]
    stream = masked(b"queued")                               # before the relay: queued
    stream_after = b"".join(masked(p) for p in payloads)
    stream_after += masked(b"ab", final=False) + masked(b"", 0x9) + masked(b"cd", 0x0,
                                                                           final=False) \
        + masked(b"ef", 0x0) + masked(b'{"ack":1}', 0x1)
    for _ in range(5):
        viewer, transport = await link()
        viewer.data_received(stream)
        sink = Sink()
        viewer.attach(sink)
        feed(viewer, stream_after, rnd)
        assert bytes(sink.bytes) == b"queued" + b"".join(payloads) + b"abcdef"
        assert sink.texts == ['{"ack":1}'] and not sink.ended
        assert server_frames(transport.out) == [(0xA, b"")]   # the ping in between, answered


async def test_a_text_inside_a_relayed_fragmented_message_is_refused():
    viewer, transport = await link()
    sink = Sink()
    viewer.attach(sink)
    first = masked(b"a" * 1000, final=False)
    viewer.data_received(first[:500])                    # half a frame: on its way already
    assert bytes(sink.bytes) == b"a" * (500 - 8)        # (2 bytes of header, 2 of length, 4 of mask)
    viewer.data_received(first[500:] + masked(b"x", 0x1))
    assert bytes(sink.bytes) == b"a" * 1000
    assert sink.ended[0] == Ended(Ending.FAILED, 1002, sink.ended[0].reason)


@pytest.mark.parametrize("data, code", [
    (bytes((0x82, 0x03)) + b"abc", 1002),                       # not masked
    (masked(b"x", rsv=0x40), 1002),                              # compressed, never agreed
    (masked(b"x", 0x3), 1002),                                   # unknown opcode
    (masked(b"x" * 126, 0x9), 1002),                             # a ping too long
    (masked(b"x", 0x9, final=False), 1002),                      # a fragmented ping
    (masked(b"x", 0x0), 1002),                                   # continuation of nothing
    (masked(b"\xff\xfe", 0x1), 1007),                            # text that is not UTF-8
    (masked((999).to_bytes(2, "big"), 0x8), 1002),               # a close code never allowed
    (masked(b"\x03", 0x8), 1002),                                # a close frame of one byte
    (bytes((0x82, 0xFF)) + (1 << 40).to_bytes(8, "big"), 1009),  # a terabyte announced
    (masked(b"x" * 600, final=False) + masked(b"x" * 600, 0x0, final=False), 1009),
])
async def test_a_broken_stream_is_closed_with_its_code(data, code):
    viewer, transport = await link(max_message=1000)
    viewer.data_received(data)
    message = await viewer.receive()
    assert isinstance(message, Ended) and message.how is Ending.FAILED and message.code == code
    opcode, payload = server_frames(transport.out)[-1]
    assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == code


async def test_pings_are_answered_and_a_close_is_echoed():
    viewer, transport = await link()
    viewer.data_received(masked(b"mark", 0x9) + masked((4000).to_bytes(2, "big") + b"bye", 0x8))
    assert server_frames(transport.out) == [(0xA, b"mark"), (0x8, (4000).to_bytes(2, "big"))]
    assert transport.closing
    assert await viewer.receive() == Ended(Ending.CLOSE, 4000, "bye")


async def test_a_viewer_that_does_not_read_is_not_read_and_its_pings_are_answered_once():
    viewer, transport = await link()
    assert transport.high is not None                   # the write buffer's limit is ours
    viewer.pause_writing()                              # its write buffer is full
    assert transport.paused                             # so nothing more is read from it
    viewer.data_received(b"".join(masked(b"%d" % i, 0x9) for i in range(MAX_CONTROLS)))
    assert not transport.out                            # the pings queue no pong
    viewer.resume_writing()                             # it read: the latest ping answered
    assert server_frames(transport.out) == [(0xA, b"%d" % (MAX_CONTROLS - 1))]
    assert not transport.paused


async def test_a_ping_flood_is_refused_while_a_client_that_pings_now_and_then_is_answered():
    viewer, transport = await link()
    for _ in range(3):                                  # three heartbeats of normal pinging
        viewer.data_received(masked(b"", 0x9) * MAX_CONTROLS)
        viewer.beat()
    assert not transport.closing
    viewer.data_received(masked(b"", 0x9) * (MAX_CONTROLS + 1))
    opcode, payload = server_frames(transport.out)[-1]
    assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == 1008
    assert transport.closing


async def test_reading_stops_while_the_desktop_or_the_viewer_is_full_until_both_drained():
    viewer, transport = await link()
    viewer.pause_reading()                              # the desktop's buffer is full
    viewer.pause_writing()                              # and the viewer's
    viewer.resume_reading()
    assert transport.paused
    viewer.resume_writing()
    assert not transport.paused


async def test_messages_nobody_takes_stop_the_reading_until_taken():
    viewer, transport = await link()
    viewer.data_received(b"".join(masked(b"m") for _ in range(INBOX_MESSAGES)))
    assert transport.paused
    for _ in range(INBOX_MESSAGES):
        assert (await viewer.receive()).data == b"m"
    assert not transport.paused


@pytest.mark.parametrize("relaying", [False, True])
async def test_a_message_in_endless_empty_fragments_is_refused(relaying):
    viewer, transport = await link()
    if relaying:
        viewer.attach(Sink())
    viewer.data_received(masked(b"a", final=False)
                         + masked(b"", 0x0, final=False) * (MAX_FRAGMENTS + 10))
    opcode, payload = server_frames(transport.out)[-1]
    assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == 1009
    assert transport.closing


async def test_a_fragment_cut_over_many_reads_counts_once():
    viewer, transport = await link()
    fragments = masked(b"t", 0x1, final=False) + b"".join(
        masked(b"x" * 100, 0x0, final=False) for _ in range(MAX_FRAGMENTS // 2)) + \
        masked(b"end", 0x0)
    for i in range(len(fragments)):                    # a byte per read: each header re-read
        viewer.data_received(fragments[i:i + 1])
    message = await viewer.receive()
    assert message.kind is Kind.TEXT and len(message.data) == 1 + 100 * (MAX_FRAGMENTS // 2) + 3
    assert not transport.closing


async def test_a_failed_viewer_is_hung_up_at_once_and_nothing_it_sends_is_kept():
    viewer, transport = await link()
    bad = bytes((0x82, 0x03)) + b"abc"                  # not masked
    viewer.data_received(bad[:1])                       # the bad frame split over two reads
    viewer.data_received(bad[1:])
    assert transport.closing                            # no waiting for a close reply
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(200):
            viewer.data_received(os.urandom(64 * 1024))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 256 * 1024, grown                    # 12.5 MiB sent, nothing kept
    assert (await viewer.receive()).code == 1002


async def test_a_silent_viewer_is_pinged_then_dropped():
    viewer, transport = await link()
    viewer.beat()                       # heard from since it opened
    assert not transport.out
    viewer.beat()                       # silent for a beat: pinged
    assert server_frames(transport.out) == [(0x9, b"")]
    viewer.data_received(masked(b"", 0xA))
    viewer.beat()                       # it answered
    viewer.beat()
    assert not transport.aborted
    viewer.beat()                       # pinged again and silent: dropped
    assert transport.aborted


@pytest.mark.parametrize("n", [0, 125, 126, 65535, 65536, 1 << 20])
def test_server_frames_have_the_shortest_length_form(n):
    out = frame(0x2, bytes(n))
    data = out if isinstance(out, bytes) else b"".join(out)
    assert server_frames(data) == [(0x2, bytes(n))]
    assert len(data) - n == (2 if n < 126 else 4 if n < 65536 else 10)


def test_the_head_is_read_strictly():
    key = base64.b64encode(os.urandom(16)).decode()
    target, headers = parse_head(
        f"GET /ws?gateway=g1 HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: keep-alive, "
        f"Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
        "X-Forwarded-For: 198.51.100.7\r\nX-Forwarded-For: 203.0.113.9".encode())
    assert target == "/ws?gateway=g1"
    assert headers["x-forwarded-for"] == "198.51.100.7, 203.0.113.9"   # a second line counts
    assert len(base64.b64decode(accept_key(headers))) == 20
    for bad, status in ((b"GET /ws HTTP/1.0\r\nHost: x", 505),
                        (b"GET /ws HTTP/1.1\r\nHost x", 400),
                        (b"GET /ws HTTP/1.1\r\n Host: x", 400),
                        (b"GET /ws HTTP/1.1\r\nHost: a\x01b", 400),
                        ("GET /ws HTTP/1.1\r\nHost: ü".encode(), 400),
                        (b"GET /ws HTTP/1.1" + b"\r\nX: y" * 101, 431)):
        with pytest.raises(BadHead) as caught:
            parse_head(bad)
        assert caught.value.status == status


# -- against the real gateway ------------------------------------------------------------------

def raw_request(inst, extra: str = "", key: str | None = None, version: str = "13") -> bytes:
    key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
    host = inst.gateway_url.split("/")[2]
    return (f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Version: {version}\r\nSec-WebSocket-Key: {key}\r\n{extra}\r\n"
            ).encode()


async def exchange(inst, data: bytes, *, wait: float = 5.0) -> bytes:
    """Send raw bytes to the gateway; everything it answers until it closes."""
    host, port = inst.gateway_url.split("/")[2].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(1 << 20), wait)
    finally:
        writer.close()


@pytest.mark.integration
async def test_bad_upgrades_get_a_clear_answer_and_disturb_no_session(raw_install):
    inst, token, _ = await raw_install()
    async with aiohttp.ClientSession() as http:
        bystander = await open_ws(inst, token, http)
        await bystander.send_bytes(b"E")
        cases = [(raw_request(inst, key="short"), b"400"),
                 (raw_request(inst, version="8"), b"426"),
                 (raw_request(inst, extra="X-Big: " + "a" * 20_000 + "\r\n"), b"431"),
                 (raw_request(inst, extra="X-Bad: a\x7fb\r\n"), b"400"),
                 (raw_request(inst, extra="Origin: https://evil.example\r\n"), b"403"),
                 (raw_request(inst, extra="Origin: https://evil.example\r\nOrigin: "
                              + inst.base_url + "\r\n"), b"403")]
        for data, status in cases:
            answer = await exchange(inst, data)
            assert answer.split(b"\r\n", 1)[0].split()[1] == status, answer[:200]
            assert b"Server: Pforte" in answer
        await bystander.send_bytes(b"still here")
        assert await read_exactly(bystander, 10) == b"still here"
        await bystander.close()


@pytest.mark.integration
async def test_a_ticket_in_fragments_sent_with_the_request_is_admitted(raw_install):
    inst, token, _ = await raw_install()
    conn = await inst.connect(token)
    ticket = conn["ticket"].encode()
    third = len(ticket) // 3
    data = raw_request(inst) + masked(ticket[:third], 0x1, final=False) \
        + masked(b"", 0x0, final=False) + masked(ticket[third:2 * third], 0x0, final=False) \
        + masked(ticket[2 * third:], 0x0)
    host, port = inst.gateway_url.split("/")[2].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    assert await reader.readexactly(3) == bytes((0x82, 1)) + b"G"   # the desktop's greeting
    writer.write(bytes((0x82, 0x01)) + b"E")                         # not masked: refused
    opcode_and_length = await reader.readexactly(2)
    assert opcode_and_length[0] == 0x88
    assert int.from_bytes(await reader.readexactly(2), "big") == 1002
    writer.close()


@pytest.mark.integration
async def test_other_paths_serve_one_request_per_connection(raw_install):
    inst, _, _ = await raw_install()
    host = inst.gateway_url.split("/")[2]
    host_name, port = host.split(":")
    reader, writer = await asyncio.open_connection(host_name, int(port))
    writer.write(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode() + raw_request(inst))
    answer = await asyncio.wait_for(reader.read(), 10)              # until the gateway closes
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.count(b"HTTP/1.1") == 1 and b"Connection: close" in answer
    answer = await exchange(inst, f"GET /nothing HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 404")


@pytest.mark.integration
async def test_a_head_that_never_ends_is_cut_off(raw_install):
    inst, _, _ = await raw_install(http_idle_timeout=1.0)
    host, port = inst.gateway_url.split("/")[2].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\n")       # and then nothing
    assert await asyncio.wait_for(reader.read(100), 10) == b""  # closed, without an answer
    writer.close()


@pytest.mark.integration
async def test_a_viewer_that_never_answers_pings_is_dropped_and_one_that_does_stays(
        raw_install, monkeypatch):
    monkeypatch.setattr("gateway.server.HEARTBEAT", 0.4)    # beats every 0.2 s in this test
    inst, token, _ = await raw_install()
    async with aiohttp.ClientSession() as http:
        answering = await open_ws(inst, token, http)  # reads all the time, as a viewer does:
        await answering.send_bytes(b"E")               # aiohttp answers pings as it reads
        echoed = bytearray()

        async def read_on() -> None:
            async for msg in answering:
                echoed.extend(msg.data)
        reading = asyncio.ensure_future(read_on())
        conn = await inst.connect(token)
        host, port = inst.gateway_url.split("/")[2].split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(raw_request(inst))
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        writer.write(masked(conn["ticket"].encode(), 0x1))
        assert await reader.readexactly(3) == bytes((0x82, 1)) + b"G"
        silent = await asyncio.wait_for(reader.read(), 10)     # says nothing, answers nothing
        writer.close()
        frames = server_frames(silent)
        assert (0x9, b"") in frames and all(op != 0x8 for op, _ in frames)  # pinged, then cut
        await asyncio.sleep(1.5)          # several beats more: pinged and answered each time
        await answering.send_bytes(b"still here")
        for _ in range(100):
            if echoed:
                break
            await asyncio.sleep(0.05)
        assert bytes(echoed) == b"still here"
        await answering.close()
        await reading
