"""The clipboard policies ``in`` and ``out`` on an RDP session, enforced on the client's stream
alone. Pure logic, no I/O.

Theory of operation
-------------------
RDP's clipboard ([MS-RDPECLIP]) is the static virtual channel ``cliprdr``: each side announces
what it holds (Format List), the other asks for it (Format Data Request) and gets it (Format
Data Response). Text crosses *into* the desktop in the client's responses and *out of* it in
the host's answers to the client's requests. So both directions are decided on what the client
sends — the small side of the stream, keys and pointer — and the host's side is relayed
untouched, at full speed:

* blocked **into the desktop** (policy ``out``): the client's Format Data Response goes on as
  a failure (``CB_RESPONSE_FAIL``) with every byte of its data zeroed, chunk by chunk;
* blocked **out of the desktop** (policy ``in``): the client's Format Data Request goes on
  asking for a format no host offers (:data:`NO_FORMAT`), which the host answers with a failure;
* **files** do not cross under ``in`` or ``out``: the client's capabilities go on without
  ``CB_STREAM_FILECLIP_ENABLED``, and a client that sends or asks for file contents anyway ends
  the session.

Every rewrite is in place: no length changes, so no other layer's framing moves. Policy
``none`` needs none of this (the channel is renamed, :mod:`gateway.rdp`), ``both`` neither.

The client's packets after its logon are walked by their framing (TPKT, or a fast-path input
packet's length); an MCS Send Data Request to the clipboard's channel (its id is the host's,
from the MCS Connect Response) is read chunk by chunk ([MS-RDPBCGR] 2.2.6.1) as the host puts
the chunks together. A chunk the host would read differently — a continuation without a first
chunk, lengths that do not add up, compression — ends the session
(:class:`~gateway.clipboard.StreamNotUnderstood`), as with VNC: what cannot be read could carry
what is blocked.
"""

from __future__ import annotations

import struct

from .clipboard import StreamNotUnderstood
from .rdp import per_length

CB_FORMAT_DATA_REQUEST, CB_FORMAT_DATA_RESPONSE, CB_CLIP_CAPS = 0x0004, 0x0005, 0x0007
CB_FILECONTENTS_REQUEST, CB_FILECONTENTS_RESPONSE = 0x0008, 0x0009
CB_RESPONSE_OK, CB_RESPONSE_FAIL = 0x0001, 0x0002
CB_CAPSTYPE_GENERAL, CB_STREAM_FILECLIP_ENABLED = 0x0001, 0x0004
CHANNEL_FLAG_FIRST, CHANNEL_FLAG_LAST = 0x01, 0x02
CHANNEL_PACKET_COMPRESSED = 0x00200000
NO_FORMAT = 0xFFFFFFFF       # a clipboard format id no host offers

_X224_DATA = b"\x02\xf0\x80"
_MCS_SEND_DATA_REQUEST = 0x64
_MAX_PACKET = 64 * 1024

# What becomes of a clipboard message (decided on its first chunk, applied to all of them).
_PASS, _FAIL = "pass", "fail"


class ClipboardFilter:
    """The client's stream after its logon, for a pool whose clipboard goes one way only:
    ``feed`` returns the bytes to send on. ``channels``: the clipboard's MCS channel ids."""

    __slots__ = ("allow_in", "allow_out", "channels", "counts", "totals", "_buffer",
                 "_message")

    def __init__(self, policy: str, totals: dict[str, int] | None = None) -> None:
        if policy not in ("in", "out"):
            raise ValueError(f"a filter is for one way only, not {policy!r}")
        self.allow_in, self.allow_out = policy == "in", policy == "out"
        self.channels: frozenset[int] = frozenset()    # set once the host named them
        self.counts = {"in": 0, "in_blocked": 0, "out": 0, "out_blocked": 0}
        self.totals = totals          # the gateway's counters, kept up to date as well
        self._buffer = bytearray()
        self._message: tuple[str, int] | None = None   # (what to do, bytes still to come)

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        out = []
        while (size := self._packet_size()) is not None and len(self._buffer) >= size:
            packet = bytes(self._buffer[:size])
            del self._buffer[:size]
            out.append(self._packet(packet) if packet[0] == 3 else packet)
        return b"".join(out)

    def _packet_size(self) -> int | None:
        """The length of the packet at the buffer's start, or None until it can be read."""
        buffer = self._buffer
        if len(buffer) < 2:
            return None
        if buffer[0] == 3:                                   # TPKT
            if len(buffer) < 4:
                return None
            size = struct.unpack_from("!H", buffer, 2)[0]
        elif buffer[0] & 0x03 == 0:                          # a fast-path input packet
            if buffer[1] & 0x80 and len(buffer) < 3:
                return None
            size = ((buffer[1] & 0x7F) << 8 | buffer[2]) if buffer[1] & 0x80 else buffer[1]
        else:
            raise StreamNotUnderstood(f"client packet {buffer[0]:#x}")
        if not 2 <= size <= _MAX_PACKET:
            raise StreamNotUnderstood(f"client packet of {size} bytes")
        return size

    def _packet(self, packet: bytes) -> bytes:
        mcs = packet[7:]
        if (packet[4:7] != _X224_DATA or len(mcs) < 8 or mcs[0] & 0xFC != _MCS_SEND_DATA_REQUEST
                or struct.unpack_from("!H", mcs, 3)[0] not in self.channels):
            return packet
        length, pos = per_length(mcs, 6)
        if pos + length != len(mcs) or length < 8:
            raise StreamNotUnderstood("clipboard channel PDU length")
        out = bytearray(packet)
        self._chunk(out, 7 + pos)
        return bytes(out)

    def _chunk(self, out: bytearray, at: int) -> None:
        """One chunk of the clipboard channel, at ``at`` in ``out`` (its channel PDU header)."""
        total, flags = struct.unpack_from("<II", out, at)
        start, size = at + 8, len(out) - at - 8
        if flags & CHANNEL_PACKET_COMPRESSED:
            raise StreamNotUnderstood("compressed clipboard channel data")
        if flags & CHANNEL_FLAG_FIRST:
            if self._message is not None:
                raise StreamNotUnderstood("a clipboard message began inside another")
            if size < 8:
                raise StreamNotUnderstood("clipboard header split across chunks")
            action, left = self._first(out, start, size), total - size
        elif self._message is None:
            raise StreamNotUnderstood("a clipboard chunk without its first")
        else:
            action, left = self._message
            left -= size
            if action == _FAIL:
                out[start:] = bytes(size)
        if left < 0 or (flags & CHANNEL_FLAG_LAST and left != 0):
            raise StreamNotUnderstood("clipboard chunk lengths")
        self._message = None if flags & CHANNEL_FLAG_LAST else (action, left)

    def _first(self, out: bytearray, start: int, size: int) -> str:
        """Decide a message on its first chunk (rewritten in place); what to do with the rest."""
        kind, flags = struct.unpack_from("<HH", out, start)
        if kind == CB_FORMAT_DATA_RESPONSE:
            carries = bool(flags & CB_RESPONSE_OK or struct.unpack_from("<I", out, start + 4)[0])
            if self.allow_in:
                self._count("in" if carries else None)
                return _PASS
            struct.pack_into("<H", out, start + 2, CB_RESPONSE_FAIL)   # whatever it said
            out[start + 8:] = bytes(size - 8)
            self._count("in_blocked" if carries else None)
            return _FAIL
        if kind == CB_FORMAT_DATA_REQUEST:
            if size < 12:
                raise StreamNotUnderstood("short Format Data Request")
            if self.allow_out:
                self._count("out")
            else:
                struct.pack_into("<I", out, start + 8, NO_FORMAT)
                self._count("out_blocked")
            return _PASS
        if kind == CB_CLIP_CAPS:
            _no_files(out, start, size)
            return _PASS
        if kind in (CB_FILECONTENTS_REQUEST, CB_FILECONTENTS_RESPONSE):
            raise StreamNotUnderstood("file contents on a one-way clipboard")
        return _PASS

    def _count(self, what: str | None) -> None:
        if what is None:
            return
        self.counts[what] += 1
        if self.totals is not None:
            self.totals[what] += 1


def _no_files(out: bytearray, start: int, size: int) -> None:
    """The client's Clipboard Capabilities PDU without file copying (in place)."""
    if size < 12:
        raise StreamNotUnderstood("short clipboard capabilities")
    count = struct.unpack_from("<H", out, start + 8)[0]
    pos, end = start + 12, start + size
    for _ in range(count):
        if pos + 4 > end:
            raise StreamNotUnderstood("clipboard capability set length")
        kind, length = struct.unpack_from("<HH", out, pos)
        if length < 4 or pos + length > end:
            raise StreamNotUnderstood("clipboard capability set length")
        if kind == CB_CAPSTYPE_GENERAL:
            if length < 12:
                raise StreamNotUnderstood("short general clipboard capability")
            flags = struct.unpack_from("<I", out, pos + 8)[0]
            struct.pack_into("<I", out, pos + 8, flags & ~CB_STREAM_FILECLIP_ENABLED)
        pos += length
