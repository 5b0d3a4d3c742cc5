"""The clipboard guard's walk over both RFB streams (pure logic; the real boundary — Chromium,
gateway, Xvnc — is tests/test_clipboard.py)."""

import random
import struct

import pytest

from gateway.clipboard import READABLE_ENCODINGS, ClipboardGuard, StreamNotUnderstood

TIGHT, ZRLE, EXTENDED_CLIPBOARD, CURSOR, H264 = 7, 16, -1063131698, -239, 50


def pixel_format(bits: int) -> bytes:
    return struct.pack("!BBBBHHHBBBxxx", bits, 24, 0, 1, 255, 255, 255, 16, 8, 0)


def client_cut_text(text: bytes) -> bytes:
    return struct.pack("!BxxxI", 6, len(text)) + text


def set_encodings(*encodings: int) -> bytes:
    return struct.pack(f"!BxH{len(encodings)}i", 2, len(encodings), *encodings)


KEY = struct.pack("!BBxxI", 4, 1, 0x61)
POINTER = struct.pack("!BBHH", 5, 0, 10, 20)
REQUEST = struct.pack("!BBHHHH", 3, 0, 0, 0, 1024, 768)
FENCE = struct.pack("!BxxxIB", 248, 0, 3) + b"abc"
DESKTOP_SIZE = struct.pack("!BxHHBx", 251, 800, 600, 1) + struct.pack("!IHHHHI", 0, 0, 0, 800,
                                                                      600, 0)
QEMU_KEY = struct.pack("!BBHII", 255, 0, 1, 0x61, 30)
CONTINUOUS = struct.pack("!BBHHHH", 150, 1, 0, 0, 1024, 768)


def viewer_stream(cut: bytes) -> bytes:
    return b"".join([
        b"\x01",                                            # ClientInit (shared)
        b"\x00\x00\x00\x00" + pixel_format(32),             # SetPixelFormat
        set_encodings(TIGHT, ZRLE, EXTENDED_CLIPBOARD, CURSOR, 1, 0),
        REQUEST, KEY, cut, POINTER, FENCE, DESKTOP_SIZE, QEMU_KEY, CONTINUOUS])


def rect(width: int, height: int, encoding: int) -> bytes:
    return struct.pack("!HHHHi", 0, 0, width, height, encoding)


def server_init(bits: int = 32, name: bytes = b"Rathaus") -> bytes:
    return struct.pack("!HH", 1024, 768) + pixel_format(bits) + struct.pack("!I", len(name)) + name


def update(bpp: int) -> bytes:
    zrle = b"\x11\x22\x33\x44\x55"
    return b"".join([
        struct.pack("!BxH", 0, 7),
        rect(2, 2, 0), bytes(range(4 * bpp)),                           # Raw
        rect(4, 4, 1), struct.pack("!HH", 5, 5),                        # CopyRect
        rect(64, 64, ZRLE), struct.pack("!I", len(zrle)) + zrle,         # ZRLE
        rect(3, 2, CURSOR), bytes(3 * 2 * bpp) + bytes(1 * 2),          # Cursor: pixels, mask
        rect(0, 0, -308), struct.pack("!BxxxIHHHHI", 1, 7, 0, 0, 800, 600, 0),
        rect(0, 0, -307), struct.pack("!I", 4) + b"Amt1",               # DesktopName
        rect(0, 0, -224),                                               # LastRect
    ])


def server_cut_text(text: bytes) -> bytes:
    return struct.pack("!BxxxI", 3, len(text)) + text


def desktop_stream(cut: bytes, bits: int = 32) -> bytes:
    return b"".join([
        server_init(bits), update(bits // 8), cut, b"\x02",             # Bell
        struct.pack("!BxHH", 1, 0, 1) + bytes(6),                       # SetColourMapEntries
        struct.pack("!BxxxIB", 248, 0, 2) + b"ok",                      # ServerFence
        b"\x96",                                                        # EndOfContinuousUpdates
        update(bits // 8)])


def feed(walk, data: bytes, sizes) -> bytes:
    """The walk's output when the stream arrives in chunks of these sizes."""
    out, pos = [], 0
    for size in sizes:
        out.append(bytes(walk.feed(data[pos:pos + size])))
        pos += size
    out.append(bytes(walk.feed(data[pos:])) if pos < len(data) else b"")
    return b"".join(out)


CHUNKINGS = {
    "one chunk": lambda n: [n],
    "byte by byte": lambda n: [1] * n,
    "random": lambda n: [random.Random(n).randint(1, 9) for _ in range(n)],
}


@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_blocked_text_into_the_desktop_is_cut_out_and_encodings_kept_readable(chunks):
    guard = ClipboardGuard("out")
    sent = viewer_stream(client_cut_text("Grüße".encode("latin-1")))
    got = feed(guard.viewer, sent, CHUNKINGS[chunks](len(sent)))
    assert got == viewer_stream(b"").replace(
        set_encodings(TIGHT, ZRLE, EXTENDED_CLIPBOARD, CURSOR, 1, 0),
        set_encodings(ZRLE, EXTENDED_CLIPBOARD, CURSOR, 1, 0))
    assert guard.counts == {"in": 0, "in_blocked": 1, "out": 0, "out_blocked": 0}


@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_allowed_text_into_the_desktop_passes(chunks):
    guard = ClipboardGuard("in")
    cut = client_cut_text(b"hello")
    sent = viewer_stream(cut)
    got = feed(guard.viewer, sent, CHUNKINGS[chunks](len(sent)))
    assert cut in got and b"\x00\x00\x00\x07" not in got   # Tight is gone
    assert guard.counts["in"] == 1 and guard.counts["in_blocked"] == 0


@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize("bits", [32, 16, 8])
def test_blocked_text_out_of_the_desktop_is_cut_out_of_every_kind_of_message(chunks, bits):
    guard = ClipboardGuard("in")
    # the viewer's pixel format (before its first update request) decides the raw sizes
    feed(guard.viewer, b"\x01\x00\x00\x00\x00" + pixel_format(bits), [1, 20])
    # the server init names 32 bits; the viewer asked for `bits`: the update follows the viewer
    sent = server_init(32) + desktop_stream(server_cut_text(b"Kontonummer 1234"),
                                            bits)[len(server_init(bits)):]
    got = feed(guard.desktop, sent, CHUNKINGS[chunks](len(sent)))
    assert got == server_init(32) + desktop_stream(b"", bits)[len(server_init(bits)):]
    assert guard.counts["out_blocked"] == 1


def test_text_in_the_extended_clipboard_form_is_blocked_too():
    guard = ClipboardGuard("none")
    extended = struct.pack("!Bxxxi", 6, -8) + struct.pack("!I", 0x10000001) + b"\x00\x00\x00\x00"
    got = feed(guard.viewer, b"\x01" + extended + KEY, [3])
    assert got == b"\x01" + KEY
    assert guard.counts["in_blocked"] == 1


CAPS, ASK, PEEK, NOTIFY, PROVIDE = (1 << 24, 1 << 25, 1 << 26, 1 << 27, 1 << 28)
TEXT = 1


def extended(kind: int, action: int, data: bytes = b"") -> bytes:
    """An extended clipboard message (ClientCutText 6 or ServerCutText 3) with one action."""
    return struct.pack("!Bxxxi", kind, -(4 + len(data))) + struct.pack("!I", action | TEXT) + data


@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_the_extended_clipboard_is_read_by_its_actions(chunks):
    """Only out of the desktop: the viewer's capabilities and requests pass (the desktop's text
    comes out by them), its announcements and text do not; the desktop's all pass."""
    guard = ClipboardGuard("out")
    caps = extended(6, CAPS | ASK | PEEK | NOTIFY | PROVIDE, struct.pack("!I", 1 << 20))
    request, peek = extended(6, ASK), extended(6, PEEK)
    blocked = extended(6, NOTIFY) + extended(6, PROVIDE, b"\x78\x9c-compressed-text")
    sent = b"\x01" + caps + blocked + request + KEY + peek
    assert feed(guard.viewer, sent, CHUNKINGS[chunks](len(sent))) == \
        b"\x01" + caps + request + KEY + peek
    from_desktop = (server_init() + extended(3, CAPS | NOTIFY | PROVIDE, bytes(4)) + extended(3, NOTIFY)
                    + extended(3, PROVIDE, b"zlib-text"))
    assert feed(guard.desktop, from_desktop, CHUNKINGS[chunks](len(from_desktop))) == from_desktop
    assert guard.counts == {"in": 0, "in_blocked": 2, "out": 1, "out_blocked": 0}


def test_an_extended_clipboard_message_naming_no_single_action_ends_the_stream():
    guard = ClipboardGuard("in")
    for bad in (extended(3, NOTIFY | PROVIDE), struct.pack("!Bxxxi", 3, -2) + b"ab"):
        with pytest.raises(StreamNotUnderstood):
            ClipboardGuard("in").desktop.feed(server_init() + bad)
    assert guard.counts["out_blocked"] == 0


def test_both_ways_needs_no_guard():
    assert ClipboardGuard.for_policy("both") is None
    assert ClipboardGuard.for_policy("none") is not None
    with pytest.raises(ValueError):
        ClipboardGuard("sideways")


def test_counts_reach_the_gateways_totals():
    totals = {"in": 0, "in_blocked": 0, "out": 0, "out_blocked": 0}
    guard = ClipboardGuard.for_policy("in", totals)
    guard.viewer.feed(b"\x01" + client_cut_text(b"a"))
    guard.desktop.feed(server_init() + server_cut_text(b"b"))
    assert totals == {"in": 1, "in_blocked": 0, "out": 0, "out_blocked": 1}


@pytest.mark.parametrize("stream, data", [
    ("viewer", b"\x01\x07"),                                      # no such client message
    ("viewer", b"\x01\xff\x01"),                                  # QEMU audio: not read
    ("viewer", b"\x01" + REQUEST + b"\x00\x00\x00\x00" + pixel_format(32)),   # late format
    ("viewer", b"\x01\x00\x00\x00\x00" + pixel_format(24)),       # no such pixel size
    ("desktop", server_init() + b"\x09"),                         # no such server message
    ("desktop", server_init() + struct.pack("!BxH", 0, 1) + rect(8, 8, TIGHT)),
    ("desktop", server_init() + struct.pack("!BxH", 0, 1) + rect(8, 8, H264)),
])
def test_what_the_guard_cannot_read_ends_the_stream(stream, data):
    guard = ClipboardGuard("out")
    with pytest.raises(StreamNotUnderstood):
        getattr(guard, stream).feed(data)


def test_readable_encodings_are_the_ones_the_walk_steps_over():
    assert TIGHT not in READABLE_ENCODINGS and H264 not in READABLE_ENCODINGS
    assert {0, 1, 16, CURSOR, EXTENDED_CLIPBOARD} <= READABLE_ENCODINGS


def test_without_a_viewer_format_the_desktops_own_decides_the_sizes():
    guard = ClipboardGuard("in")
    sent = desktop_stream(server_cut_text(b"x"), bits=16)
    assert feed(guard.desktop, sent, [5] * (len(sent) // 5)) == desktop_stream(b"", bits=16)
