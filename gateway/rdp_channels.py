"""What a client sends on the static virtual channels a pool allows only in part — the clipboard
one way, some kinds of device — enforced on the client's stream after its logon. Pure logic, no
I/O.

Theory of operation
-------------------
:class:`ClientChannels` walks the client's packets by their framing (TPKT, or a fast-path input
packet's length); an MCS Send Data Request to a channel with a policy is handed to it. The
channel's id is the host's, from its MCS Connect Response (:class:`gateway.rdp.HostStream`).
A channel's messages come in chunks ([MS-RDPBCGR] 2.2.6.1), which each policy follows as the
host puts them together: a chunk the host would read differently — a continuation without a
first chunk, lengths that do not add up, compression — ends the session
(:class:`~gateway.clipboard.StreamNotUnderstood`), as with VNC: what cannot be read could carry
what is blocked. The host's side, the bulk of the stream, is relayed untouched.

**The clipboard, one way** (:class:`OneWayClipboard`, channel ``cliprdr``, [MS-RDPECLIP]). Each
side announces what it holds (Format List), the other asks for it (Format Data Request) and gets
it (Format Data Response). Text crosses *into* the desktop in the client's responses and *out of*
it in the host's answers to the client's requests, so both are decided on what the client sends:

* blocked into the desktop (policy ``out``): the client's Format Data Response goes on as a
  failure (``CB_RESPONSE_FAIL``) with every byte of its data zeroed, chunk by chunk;
* blocked out of the desktop (policy ``in``): the client's Format Data Request goes on asking
  for a format no host offers (:data:`NO_FORMAT`), which the host answers with a failure;
* files cross under neither: the client's capabilities go on without
  ``CB_STREAM_FILECLIP_ENABLED``, and a client that sends or asks for file contents anyway ends
  the session.

These rewrites are in place: no length changes, nothing else moves.

**Devices** (:class:`AllowedDevices`, channel ``rdpdr``, [MS-RDPEFS]). The client announces the
devices it redirects in a Device List Announce; the host opens only what was announced. The
gateway removes the kinds the pool does not allow (drives, printers; serial and parallel ports
and smart cards always) from each announce, and sends the shorter message on in chunks of the
client's own size.
"""

from __future__ import annotations

import struct

from .clipboard import StreamNotUnderstood
from .rdp import encode_per_length, per_length

CB_FORMAT_DATA_REQUEST, CB_FORMAT_DATA_RESPONSE, CB_CLIP_CAPS = 0x0004, 0x0005, 0x0007
CB_FILECONTENTS_REQUEST, CB_FILECONTENTS_RESPONSE = 0x0008, 0x0009
CB_RESPONSE_OK, CB_RESPONSE_FAIL = 0x0001, 0x0002
CB_CAPSTYPE_GENERAL, CB_STREAM_FILECLIP_ENABLED = 0x0001, 0x0004
CHANNEL_FLAG_FIRST, CHANNEL_FLAG_LAST = 0x01, 0x02
CHANNEL_PACKET_COMPRESSED = 0x00200000
NO_FORMAT = 0xFFFFFFFF       # a clipboard format id no host offers

RDPDR_CTYP_CORE, PAKID_CORE_DEVICELIST_ANNOUNCE = 0x4472, 0x4441
RDPDR_DTYP_PRINT, RDPDR_DTYP_FILESYSTEM = 0x04, 0x08
DEVICE_SWITCHES = {"drives": RDPDR_DTYP_FILESYSTEM, "printers": RDPDR_DTYP_PRINT}

_X224_DATA = b"\x02\xf0\x80"
_MCS_SEND_DATA_REQUEST = 0x64
_MAX_PACKET = 64 * 1024
_MAX_ANNOUNCE = 256 * 1024   # bytes of one Device List Announce

# What becomes of a clipboard message (decided on its first chunk, applied to all of them).
_PASS, _FAIL = "pass", "fail"


class ClientChannels:
    """The client's stream after its logon: ``feed`` returns the bytes to send on. ``policies``:
    channel name → its policy (an object with ``packet(packet, at)``, ``at`` the offset of the
    channel PDU header in the packet; it returns the packets to send instead)."""

    __slots__ = ("policies", "by_id", "_buffer")

    def __init__(self, policies: dict[bytes, object]) -> None:
        self.policies = policies
        self.by_id: dict[int, object] = {}    # set once the host named the channels
        self._buffer = bytearray()

    def name(self, names: list[bytes], ids: list[int]) -> None:
        """The host's ids for the client's channels (in the client's order).

        Raises:
            StreamNotUnderstood: the host answered a list of another length.
        """
        if len(names) != len(ids):
            raise StreamNotUnderstood("the host's channels are not the client's")
        self.by_id = {i: self.policies[n] for i, n in zip(ids, names) if n in self.policies}

    @property
    def counts(self) -> dict[str, int] | None:
        """The clipboard's counts, for the session's audit (None without a clipboard policy)."""
        clipboard = self.policies.get(b"cliprdr")
        return clipboard.counts if clipboard is not None else None

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
        if packet[4:7] != _X224_DATA or len(mcs) < 8 or mcs[0] & 0xFC != _MCS_SEND_DATA_REQUEST:
            return packet
        policy = self.by_id.get(struct.unpack_from("!H", mcs, 3)[0])
        if policy is None:
            return packet
        length, pos = per_length(mcs, 6)
        if pos + length != len(mcs) or length < 8:
            raise StreamNotUnderstood("channel PDU length")
        return policy.packet(packet, 7 + pos)


class _Messages:
    """A channel's messages as the host puts them together from chunks."""

    __slots__ = ("_left",)

    def __init__(self) -> None:
        self._left: int | None = None     # bytes of the current message still to come

    def _next_chunk(self, packet: bytes, at: int) -> tuple[bool, bool]:
        """Follow the chunk at ``at``: whether it is its message's first, and its last."""
        total, flags = struct.unpack_from("<II", packet, at)
        size = len(packet) - at - 8
        if flags & CHANNEL_PACKET_COMPRESSED:
            raise StreamNotUnderstood("compressed channel data")
        first, last = bool(flags & CHANNEL_FLAG_FIRST), bool(flags & CHANNEL_FLAG_LAST)
        if first and self._left is not None:
            raise StreamNotUnderstood("a channel message began inside another")
        if not first and self._left is None:
            raise StreamNotUnderstood("a channel chunk without its first")
        left = (total if first else self._left) - size
        if left < 0 or (last and left != 0):
            raise StreamNotUnderstood("channel chunk lengths")
        self._left = None if last else left
        return first, last


class OneWayClipboard(_Messages):
    """Policy ``in`` or ``out`` on the clipboard's channel (see the module's docstring)."""

    __slots__ = ("allow_in", "allow_out", "counts", "totals", "_action")

    def __init__(self, policy: str, totals: dict[str, int] | None = None) -> None:
        super().__init__()
        if policy not in ("in", "out"):
            raise ValueError(f"a clipboard policy for one way only, not {policy!r}")
        self.allow_in, self.allow_out = policy == "in", policy == "out"
        self.counts = {"in": 0, "in_blocked": 0, "out": 0, "out_blocked": 0}
        self.totals = totals          # the gateway's counters, kept up to date as well
        self._action = _PASS

    def packet(self, packet: bytes, at: int) -> bytes:
        first, _ = self._next_chunk(packet, at)
        out, start = bytearray(packet), at + 8
        if first:
            self._action = self._first(out, start, len(out) - start)
        elif self._action == _FAIL:
            out[start:] = bytes(len(out) - start)
        return bytes(out)

    def _first(self, out: bytearray, start: int, size: int) -> str:
        """Decide a message on its first chunk (rewritten in place); what to do with the rest."""
        if size < 8:
            raise StreamNotUnderstood("clipboard header split across chunks")
        kind, flags, length = struct.unpack_from("<HHI", out, start)
        if kind == CB_FORMAT_DATA_RESPONSE:
            carries = bool(flags & CB_RESPONSE_OK or length)
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


class AllowedDevices(_Messages):
    """The device kinds a pool allows on the ``rdpdr`` channel (see the module's docstring):
    a Device List Announce is held until its last chunk, then sent on without the others."""

    __slots__ = ("types", "_held")

    def __init__(self, types: frozenset[int]) -> None:
        super().__init__()
        self.types = types
        self._held: tuple[bytes, int, int, list[bytes]] | None = None  # head, flags, size, chunks

    def packet(self, packet: bytes, at: int) -> bytes:
        first, last = self._next_chunk(packet, at)
        chunk = packet[at + 8:]
        if first:
            if len(chunk) < 4:
                raise StreamNotUnderstood("device redirection header split across chunks")
            announce = struct.unpack_from("<HH", chunk) == (RDPDR_CTYP_CORE,
                                                            PAKID_CORE_DEVICELIST_ANNOUNCE)
            flags = struct.unpack_from("<I", packet, at + 4)[0]
            self._held = (packet[7:at], flags, len(chunk), []) if announce else None
        if self._held is None:
            return packet
        head, flags, size, chunks = self._held
        chunks.append(chunk)
        if sum(map(len, chunks)) > _MAX_ANNOUNCE:
            raise StreamNotUnderstood("device list too long")
        if not last:
            return b""
        self._held = None
        return _chunked(head, flags, size, self._allowed(b"".join(chunks)))

    def _allowed(self, message: bytes) -> bytes:
        """A Device List Announce with only the devices of the allowed kinds."""
        if len(message) < 8:
            raise StreamNotUnderstood("short device list")
        count, pos, kept = struct.unpack_from("<I", message, 4)[0], 8, []
        for _ in range(count):
            if pos + 20 > len(message):
                raise StreamNotUnderstood("device announce length")
            kind, _, _, size = struct.unpack_from("<II8sI", message, pos)
            end = pos + 20 + size
            if end > len(message):
                raise StreamNotUnderstood("device data length")
            if kind in self.types:
                kept.append(message[pos:end])
            pos = end
        if pos != len(message):
            raise StreamNotUnderstood("bytes after the device list")
        return message[:4] + struct.pack("<I", len(kept)) + b"".join(kept)


def _chunked(head: bytes, flags: int, size: int, message: bytes) -> bytes:
    """``message`` on the channel again: MCS Send Data Requests with ``head`` (the first
    packet's MCS header up to its length) of chunks of at most ``size`` bytes, ``flags`` of the
    first chunk's but FIRST and LAST."""
    mcs_head, size = head[:6], max(size, 1)
    pieces = [message[i:i + size] for i in range(0, len(message), size)] or [b""]
    other = flags & ~(CHANNEL_FLAG_FIRST | CHANNEL_FLAG_LAST)
    out = []
    for i, piece in enumerate(pieces):
        mark = (CHANNEL_FLAG_FIRST if i == 0 else 0) | (
            CHANNEL_FLAG_LAST if i == len(pieces) - 1 else 0)
        body = struct.pack("<II", len(message), other | mark) + piece
        x224 = _X224_DATA + mcs_head + encode_per_length(len(body)) + body
        out.append(struct.pack("!BBH", 3, 0, 4 + len(x224)) + x224)
    return b"".join(out)
