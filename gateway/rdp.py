"""What the gateway reads and rewrites of an RDP connection, as pure functions and one stream
walker (no I/O): the page's client never holds the user's password or chooses the host, and a
pool's policies hold whatever the client asks for.

Theory of operation
-------------------
The gateway opens the connection to the host with its own X.224 Connection Request
(:func:`connection_request`), asking for TLS or TLS with Network Level Authentication (the
client's request is read, never forwarded), and reads the host's Connection Confirm
(:func:`selected_protocol`). When the host chose NLA the gateway does it (:mod:`gateway.credssp`)
and tells the viewer the host chose TLS (:func:`confirm_selecting`); the viewer's core data
then says what the host really chose.

After TLS the client's stream ([MS-RDPBCGR] §1.3.1.1) is walked packet by packet (TPKT) by
:class:`ClientStream` until the Client Info PDU, and then relayed untouched:

* the **MCS Connect Initial** carries the client's core data, whose keyboard layout is set to
  the pool's (RDP sends scancodes and the host applies this layout: a German desktop types
  ``ß`` where the key is, whatever the page's client says), and its network data: the static
  virtual channels it wants. A channel the pool does not allow (``cliprdr`` the clipboard
  under ``none``, ``rdpdr`` unless drives or printers are allowed, ``rdpsnd`` audio) is
  renamed in place to a name no host serves: the host assigns it an id nobody listens on, the client's channel list keeps its
  length (nothing else in the PDU moves), and what the client sends there goes nowhere;
* the **Client Info PDU** gets the user's logon from the ticket: user name, domain and password
  replaced, the auto-logon flag set, the lengths made right. The password the page's client
  sent (none, or anything) never reaches the host. A ticket without a logon (the broker has no
  password for this login) leaves the logon as it is: the host asks the user. Unless the pool
  allows audio, its flags tell the host to leave the sound on the host and record none from
  the client (``INFO_REMOTECONSOLEAUDIO`` set, ``INFO_AUDIOCAPTURE`` cleared): that holds for
  audio over dynamic channels too, which the gateway does not read.

The host's side is read along until its **MCS Connect Response** (:class:`HostStream`): the
ids it gave the client's channels, for the channels a pool allows in part (a one-way clipboard,
some kinds of device: :mod:`gateway.rdp_channels`), which then walk the client's stream after
the logon; every other session's stream is relayed as it comes once the logon went by.

Anything else before the Client Info PDU (a fast-path packet, a TPKT that is not X.224 data, an
MCS PDU that is not one of the connection sequence's) is :class:`StreamNotUnderstood`: the
session ends.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .clipboard import StreamNotUnderstood

PROTOCOL_RDP, PROTOCOL_SSL, PROTOCOL_HYBRID = 0, 1, 2

# Static virtual channels a pool switches: channel name → the pool's switches that open it
# (what passes on an open one may be less: gateway/rdp_channels.py).
SWITCHED_CHANNELS = {b"cliprdr": ("clipboard",), b"rdpdr": ("drives", "printers"),
                     b"rdpsnd": ("audio",)}
BLOCKED_NAME = b"pfoff%d"    # what a blocked channel is renamed to (padded with NULs to 8)

_TPKT = struct.Struct("!BBH")
_X224_DATA = b"\x02\xf0\x80"
_CONNECT_INITIAL, _CONNECT_RESPONSE = b"\x7f\x65", b"\x7f\x66"
_MCS_SEND_DATA_REQUEST = 0x64
_MCS_ERECT_DOMAIN, _MCS_ATTACH_USER, _MCS_CHANNEL_JOIN = 0x04, 0x28, 0x38
_GCC_CREATE_REQUEST = bytes.fromhex("0008001000 01c000".replace(" ", "")) + b"Duca"
_CS_CORE, _CS_NET, _SC_NET = 0xC001, 0xC003, 0x0C03
_SELECTED_PROTOCOL = 212     # offset of serverSelectedProtocol in a CS_CORE block
_SEC_INFO_PKT = 0x0040
_INFO_UNICODE, _INFO_AUTOLOGON = 0x0010, 0x0008
_INFO_REMOTECONSOLEAUDIO, _INFO_AUDIOCAPTURE = 0x2000, 0x00200000
_MAX_PACKET = 16 * 1024      # bytes of a connection-sequence packet


@dataclass(frozen=True)
class Logon:
    """The Windows logon the gateway fills in (from the ticket's sealed secret)."""
    user: str
    domain: str
    password: str


def connection_request() -> bytes:
    """The gateway's X.224 Connection Request: TLS, or TLS with Network Level Authentication
    (which the gateway then does, :mod:`gateway.credssp`); no cookie."""
    negotiation = struct.pack("<BBHI", 0x01, 0, 8, PROTOCOL_SSL | PROTOCOL_HYBRID)
    x224 = bytes((6 + len(negotiation), 0xE0, 0, 0, 0, 0, 0)) + negotiation
    return _TPKT.pack(3, 0, 4 + len(x224)) + x224


def is_connection_request(data: bytes) -> bool:
    """Whether the client's [6] is an X.224 Connection Request in one TPKT."""
    return (len(data) >= 11 and data[0] == 3 and _TPKT.unpack_from(data)[2] == len(data)
            and data[5] & 0xF0 == 0xE0)


def tpkt_length(header: bytes) -> int:
    """The length of a TPKT packet from its 4-byte header.

    Raises:
        StreamNotUnderstood: not a TPKT header.
    """
    version, _, length = _TPKT.unpack(header)
    if version != 3 or length < 7:
        raise StreamNotUnderstood("not a TPKT packet")
    return length


def selected_protocol(confirm: bytes) -> int:
    """The protocol the host chose in its X.224 Connection Confirm.

    Raises:
        StreamNotUnderstood: not a confirm, or a negotiation failure.
    """
    if len(confirm) < 11 or confirm[5] & 0xF0 != 0xD0:
        raise StreamNotUnderstood("no X.224 Connection Confirm")
    if len(confirm) < 19:
        return PROTOCOL_RDP           # no negotiation response: standard RDP security
    kind, _, _, value = struct.unpack_from("<BBHI", confirm, 11)
    if kind != 0x02:
        raise StreamNotUnderstood(f"negotiation failure {value:#x}")
    return value


def confirm_selecting(confirm: bytes, protocol: int) -> bytes:
    """The host's Connection Confirm as the viewer is to see it: selecting ``protocol`` (the
    page's client is told TLS when the gateway did the host's NLA)."""
    return confirm[:15] + struct.pack("<I", protocol) + confirm[19:]


def blocked_channels(switches: dict[str, bool]) -> frozenset[bytes]:
    """The switched channels none of whose switches the pool turned on."""
    return frozenset(name for name, names in SWITCHED_CHANNELS.items()
                     if not any(switches.get(switch, False) for switch in names))


class ClientStream:
    """The client's side of the connection sequence, walked until its Client Info PDU (see the
    module's docstring); ``feed`` returns the bytes to send on."""

    __slots__ = ("logon", "keyboard_layout", "blocked", "host_protocol", "then", "done",
                 "channel_names", "_buffer", "_seen_connect")

    def __init__(self, logon: Logon | None, keyboard_layout: int, blocked: frozenset[bytes],
                 host_protocol: int = PROTOCOL_SSL, then=None) -> None:
        self.logon = logon
        self.keyboard_layout = keyboard_layout
        self.blocked = blocked
        self.host_protocol = host_protocol   # what the host selected (the viewer saw TLS)
        self.then = then              # what the stream goes through after the logon, if anything
        self.done = False             # the Client Info PDU went by: the rest goes to ``then``
        self.channel_names: list[bytes] = []   # the client's static channels, as the host saw them
        self._buffer = bytearray()
        self._seen_connect = False

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return self.then.feed(data) if self.then is not None else data
        self._buffer += data
        out = []
        while not self.done and len(self._buffer) >= 4:
            if self._buffer[0] != 3:
                raise StreamNotUnderstood("a fast-path packet before the logon")
            length = tpkt_length(bytes(self._buffer[:4]))
            if length > _MAX_PACKET:
                raise StreamNotUnderstood("connection packet too long")
            if len(self._buffer) < length:
                break
            packet = bytes(self._buffer[:length])
            del self._buffer[:length]
            out.append(self._packet(packet))
        if self.done and self._buffer:
            rest = bytes(self._buffer)
            self._buffer.clear()
            out.append(self.then.feed(rest) if self.then is not None else rest)
        return b"".join(out)

    def _packet(self, packet: bytes) -> bytes:
        if packet[4:7] != _X224_DATA:
            raise StreamNotUnderstood("not X.224 data")
        mcs = packet[7:]
        if not self._seen_connect:
            if mcs[:2] != _CONNECT_INITIAL:
                raise StreamNotUnderstood("no MCS Connect Initial")
            self._seen_connect = True
            return packet[:7] + self._connect_initial(mcs)
        if mcs[0] & 0xFC in (_MCS_ERECT_DOMAIN, _MCS_ATTACH_USER, _MCS_CHANNEL_JOIN):
            return packet
        if mcs[0] & 0xFC == _MCS_SEND_DATA_REQUEST:
            return self._client_info(packet, mcs)
        raise StreamNotUnderstood(f"MCS PDU {mcs[0]:#x} in the connection sequence")

    # -- the MCS Connect Initial -----------------------------------------------------------
    def _connect_initial(self, mcs: bytes) -> bytes:
        """The PDU with the keyboard layout set and the blocked channels renamed (in place)."""
        start = mcs.find(_GCC_CREATE_REQUEST)
        if start < 0:
            raise StreamNotUnderstood("no GCC Conference Create Request")
        pos = start + len(_GCC_CREATE_REQUEST)
        length, pos = per_length(mcs, pos)
        if pos + length != len(mcs):
            raise StreamNotUnderstood("GCC user data length")
        out = bytearray(mcs)
        end = pos + length
        while pos + 4 <= end:
            kind, size = struct.unpack_from("<HH", mcs, pos)
            if size < 4 or pos + size > end:
                raise StreamNotUnderstood("user data block length")
            if kind == _CS_CORE and size >= 20:
                struct.pack_into("<I", out, pos + 16, self.keyboard_layout)
                if size >= _SELECTED_PROTOCOL + 4:   # the host checks it against its choice
                    struct.pack_into("<I", out, pos + _SELECTED_PROTOCOL, self.host_protocol)
            elif kind == _CS_NET:
                self._rename_channels(out, pos, size)
            pos += size
        return bytes(out)

    def _rename_channels(self, out: bytearray, pos: int, size: int) -> None:
        count = struct.unpack_from("<I", out, pos + 4)[0]
        if 8 + 12 * count > size:
            raise StreamNotUnderstood("channel list length")
        blocked = 0
        for i in range(count):
            at = pos + 8 + 12 * i
            name = bytes(out[at:at + 8]).split(b"\0", 1)[0].lower()
            if name in self.blocked:
                out[at:at + 8] = (BLOCKED_NAME % blocked).ljust(8, b"\0")
                blocked += 1
            self.channel_names.append(bytes(out[at:at + 8]).split(b"\0", 1)[0].lower())

    # -- the Client Info PDU ---------------------------------------------------------------
    def _client_info(self, packet: bytes, mcs: bytes) -> bytes:
        """The Client Info PDU with the user's logon in it (the lengths made right), or as it
        is when the ticket carries no logon (the host asks the user); without audio unless the
        pool allows it."""
        if len(mcs) < 8:
            raise StreamNotUnderstood("short MCS Send Data Request")
        length, pos = per_length(mcs, 6)
        if pos + length != len(mcs) or length < 4 + 18:
            raise StreamNotUnderstood("Send Data Request length")
        flags = struct.unpack_from("<H", mcs, pos)[0]
        if not flags & _SEC_INFO_PKT:
            raise StreamNotUnderstood("data before the Client Info PDU")
        self.done = True
        info = mcs[pos + 4:]
        if self.logon is not None:
            info = _fill_logon(info, self.logon)
        if b"rdpsnd" in self.blocked:
            info = _without_audio(info)
        if info == mcs[pos + 4:]:
            return packet
        body = mcs[pos:pos + 4] + info
        x224 = _X224_DATA + mcs[:6] + encode_per_length(len(body)) + body
        return _TPKT.pack(3, 0, 4 + len(x224)) + x224


class HostStream:
    """The host's side of the connection sequence, read until its MCS Connect Response: the ids
    it gave the client's static channels, in the order of the client's list."""

    __slots__ = ("channel_ids", "done", "_buffer")

    def __init__(self) -> None:
        self.channel_ids: list[int] = []
        self.done = False
        self._buffer = bytearray()

    def feed(self, data: bytes) -> bytes:
        """Reads along (the bytes go on as they are).

        Raises:
            StreamNotUnderstood: the host's first packet is no MCS Connect Response.
        """
        if self.done:
            return data
        self._buffer += data
        if len(self._buffer) >= 4:
            length = tpkt_length(bytes(self._buffer[:4]))
            if length > _MAX_PACKET:
                raise StreamNotUnderstood("connection packet too long")
            if len(self._buffer) >= length:
                self.channel_ids = channel_ids(bytes(self._buffer[:length]))
                self.done = True
                self._buffer.clear()
        return data


def channel_ids(packet: bytes) -> list[int]:
    """The static channels' ids in a host's MCS Connect Response (its SC_NET block).

    Raises:
        StreamNotUnderstood: no Connect Response, or one without its network data.
    """
    mcs = packet[7:]
    start = mcs.find(b"McDn")
    if packet[4:7] != _X224_DATA or mcs[:2] != _CONNECT_RESPONSE or start < 0:
        raise StreamNotUnderstood("no MCS Connect Response")
    length, pos = per_length(mcs, start + 4)
    end = min(pos + length, len(mcs))
    while pos + 4 <= end:
        kind, size = struct.unpack_from("<HH", mcs, pos)
        if size < 4 or pos + size > end:
            raise StreamNotUnderstood("server data block length")
        if kind == _SC_NET and size >= 8:
            count = struct.unpack_from("<H", mcs, pos + 6)[0]
            if 8 + 2 * count > size:
                raise StreamNotUnderstood("server channel list length")
            return list(struct.unpack_from(f"<{count}H", mcs, pos + 8))
        pos += size
    raise StreamNotUnderstood("no server network data")


def _fill_logon(info: bytes, logon: Logon) -> bytes:
    """A TS_INFO_PACKET with ``logon``'s user, domain and password and the auto-logon flag."""
    code_page, flags, *sizes = struct.unpack_from("<IIHHHHH", info)
    if not flags & _INFO_UNICODE:
        raise StreamNotUnderstood("Client Info without Unicode")
    pos, fields = 18, []
    for size in sizes:                        # domain, user, password, shell, directory
        if size % 2 or pos + size + 2 > len(info):
            raise StreamNotUnderstood("Client Info field length")
        fields.append(info[pos:pos + size])
        pos += size + 2
    fields[:3] = [logon.domain.encode("utf-16-le"), logon.user.encode("utf-16-le"),
                  logon.password.encode("utf-16-le")]
    head = struct.pack("<IIHHHHH", code_page, flags | _INFO_AUTOLOGON, *(len(f) for f in fields))
    return head + b"".join(f + b"\0\0" for f in fields) + info[pos:]


def _without_audio(info: bytes) -> bytes:
    """A TS_INFO_PACKET that tells the host to play no sound on the client and to record none
    from it: the rule for audio over any channel, static or dynamic, which the host keeps."""
    if len(info) < 8:
        raise StreamNotUnderstood("short Client Info")
    flags = struct.unpack_from("<I", info, 4)[0]
    flags = (flags | _INFO_REMOTECONSOLEAUDIO) & ~_INFO_AUDIOCAPTURE
    return info[:4] + struct.pack("<I", flags) + info[8:]


def per_length(data: bytes, pos: int) -> tuple[int, int]:
    """A PER length determinant at ``pos``: the length and where its content starts."""
    if pos >= len(data):
        raise StreamNotUnderstood("truncated")
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    if pos + 1 >= len(data) or first & 0xC0 != 0x80:
        raise StreamNotUnderstood("PER length")
    return ((first & 0x3F) << 8) | data[pos + 1], pos + 2


def encode_per_length(n: int) -> bytes:
    return bytes((n,)) if n < 0x80 else struct.pack("!H", 0x8000 | n)
