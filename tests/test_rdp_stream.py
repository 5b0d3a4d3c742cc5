"""The pure parts of RDP at the gateway: RDCleanPath's encoding (wire/rdcleanpath.py) and the
client's connection sequence as the gateway rewrites it (gateway/rdp.py) — the logon filled in,
the keyboard layout set, the channels the pool does not allow renamed — and what a hostile
client's stream gets: the session ends, nothing of it reaches the host."""

from __future__ import annotations

import struct

import pytest

from gateway import rdp
from gateway.clipboard import StreamNotUnderstood
from wire import rdcleanpath, ticket
from wire.sealing import seal

# -- RDCleanPath ------------------------------------------------------------------------------


def test_a_request_round_trips():
    request = rdcleanpath.Request("tick.et", b"\x03\x00\x00\x0b\x06\xe0\x00\x00\x00\x00\x00",
                                  "host:3389", "blob")
    assert rdcleanpath.decode_request(rdcleanpath.encode_request(request)) == request


def test_the_request_is_the_der_ironrdp_sends():
    """Field by field as [MS-RDCleanPath] (IronRDP's ``RDCleanPathPdu``) lays it out: version
    3390 as [0] INTEGER 0x0D3E, [3] the token as UTF8String, [6] the X.224 bytes."""
    der = rdcleanpath.encode_request(rdcleanpath.Request("t", b"\xde\xad"))
    assert der == bytes.fromhex("3011" "a004" "02020d3e" "a303" "0c0174" "a604" "0402dead")


def test_a_response_and_a_refusal_decode():
    response = rdcleanpath.encode_response(b"confirm", [b"leaf", b"ca"], "10.0.0.5")
    assert rdcleanpath.decode_response(response) == rdcleanpath.Response(
        b"confirm", [b"leaf", b"ca"], "10.0.0.5")
    assert rdcleanpath.decode_response(rdcleanpath.encode_error(403)) == rdcleanpath.Refusal(
        rdcleanpath.GENERAL_ERROR, 403)


@pytest.mark.parametrize("data", [
    b"", b"\x30", b"\x30\x80\x00\x00",                         # indefinite length
    b"\x30\x84\x7f\xff\xff\xff",                               # four length bytes
    b"\x31\x00",                                               # a SET
    bytes.fromhex("3006a004020200ff"),                         # another version
    bytes.fromhex("3008a004020d3e"),                           # truncated
    rdcleanpath.encode_response(b"x", [], "h"),               # a response, not a request
    rdcleanpath.encode_request(rdcleanpath.Request("t", b"x")) + b"\x00",   # trailing bytes
    b"\x30\x82" + struct.pack("!H", 20000) + b"\x00" * 20000,  # too long
    bytes.fromhex("300ca004 02020d3e a304 0c02c328".replace(" ", "")),  # not UTF-8 (and no [6])
])
def test_what_is_not_a_request_is_malformed(data):
    with pytest.raises(rdcleanpath.Malformed):
        rdcleanpath.decode_request(data)


# -- the connection sequence ------------------------------------------------------------------

def tpkt(mcs: bytes) -> bytes:
    body = b"\x02\xf0\x80" + mcs
    return struct.pack("!BBH", 3, 0, 4 + len(body)) + body


def per_length(n: int) -> bytes:
    return bytes((n,)) if n < 0x80 else struct.pack("!H", 0x8000 | n)


def connect_initial(layout: int, channels: list[bytes], core_size: int = 64,
                    selected: int = rdp.PROTOCOL_SSL) -> bytes:
    """An MCS Connect Initial as clients send it: the BER envelope, GCC's Conference Create
    Request, and the client's core data (``core_size`` bytes: 216 and more carry the protocol
    the client saw selected) and network data."""
    core = struct.pack("<IHHHHI", 0x00080004, 1280, 800, 0xCA01, 0xAA03, layout)
    core = core.ljust(core_size - 4, b"\0")
    if core_size >= 216:
        core = core[:208] + struct.pack("<I", selected) + core[212:]
    core_block = struct.pack("<HH", 0xC001, 4 + len(core)) + core
    net = struct.pack("<I", len(channels)) + b"".join(
        name.ljust(8, b"\0") + struct.pack("<I", 0x80800000) for name in channels)
    net_block = struct.pack("<HH", 0xC003, 4 + len(net)) + net
    blocks = core_block + net_block
    gcc = (bytes.fromhex("000500147c0001") + per_length(14 + len(blocks) + 2)
           + bytes.fromhex("000800100001c000") + b"Duca" + per_length(len(blocks)) + blocks)
    ber_head = b"\x04\x01\x01\x04\x01\x01\x01\x01\xff"
    user_data = b"\x04\x82" + struct.pack("!H", len(gcc)) + gcc
    body = ber_head + user_data
    return tpkt(b"\x7f\x65\x82" + struct.pack("!H", len(body)) + body)


def client_info(user: str, domain: str, password: str, flags: int = 0x0010 | 0x0001) -> bytes:
    fields = [domain, user, password, "", ""]
    encoded = [f.encode("utf-16-le") for f in fields]
    info = struct.pack("<IIHHHHH", 0, flags, *(len(e) for e in encoded))
    info += b"".join(e + b"\0\0" for e in encoded) + b"extra-info"
    body = struct.pack("<HH", 0x0040, 0) + info
    return tpkt(b"\x64\x00\x07\x03\xeb\x70" + per_length(len(body)) + body)


SEQUENCE_MIDDLE = [tpkt(b"\x04\x01\x00\x01\x00"), tpkt(b"\x28"),
                   tpkt(b"\x38\x00\x07\x03\xeb"), tpkt(b"\x38\x00\x07\x03\xec")]
LOGON = rdp.Logon("anna", "MUSTERSTADT", "Grüße-2026 €")


def walk(stream: rdp.ClientStream, chunks: list[bytes]) -> bytes:
    return b"".join(stream.feed(c) for c in chunks)


def parse_info(packet: bytes) -> tuple[int, list[str], bytes]:
    mcs = packet[7:]
    n, pos = (mcs[6], 7) if mcs[6] < 0x80 else (((mcs[6] & 0x3F) << 8) | mcs[7], 8)
    assert struct.unpack("!H", packet[2:4])[0] == len(packet) and pos + n == len(mcs)
    info = mcs[pos + 4:]
    flags, *sizes = struct.unpack_from("<IHHHHH", info, 4)
    fields, at = [], 18
    for size in sizes:
        fields.append(info[at:at + size].decode("utf-16-le"))
        assert info[at + size:at + size + 2] == b"\0\0"
        at += size + 2
    return flags, fields, info[at:]


def test_the_logon_is_filled_in_and_the_clients_password_never_passes():
    stream = rdp.ClientStream(LOGON, 0x0407, rdp.blocked_channels({}))
    sent = [connect_initial(0x0409, [b"cliprdr", b"drdynvc"]), *SEQUENCE_MIDDLE,
            client_info("mallory", "", "what-the-page-said")]
    out = walk(stream, sent)
    info = out[sum(len(p) for p in sent[:-1]):]
    flags, fields, rest = parse_info(info)
    assert fields[:3] == ["MUSTERSTADT", "anna", "Grüße-2026 €"]
    assert flags & 0x0008 and rest == b"extra-info"       # auto-logon; the rest as sent
    assert b"w\x00h\x00a\x00t" not in out
    assert stream.done and stream.feed(b"\x04fast-path") == b"\x04fast-path"


def test_layout_and_channels_are_set_in_place_whatever_the_client_says():
    original = connect_initial(0x0409, [b"cliprdr", b"rdpdr", b"rdpsnd", b"drdynvc"])
    stream = rdp.ClientStream(LOGON, 0x0407, rdp.blocked_channels({"audio": True}))
    out = stream.feed(original)
    assert len(out) == len(original)
    assert struct.pack("<I", 0x0407) in out and struct.pack("<I", 0x0409) not in out
    assert b"cliprdr" not in out and b"rdpdr\0" not in out
    assert b"rdpsnd" in out and b"drdynvc" in out and b"pfoff0\0" in out and b"pfoff1\0" in out


def test_the_clipboard_channel_passes_when_the_pool_allows_both_ways():
    out = rdp.ClientStream(LOGON, 0x0407, rdp.blocked_channels({"clipboard": True})).feed(
        connect_initial(0x0407, [b"CLIPRDR"]))
    assert b"CLIPRDR" in out


def test_a_stream_split_anywhere_comes_out_the_same():
    sent = b"".join([connect_initial(0x0409, [b"cliprdr"]), *SEQUENCE_MIDDLE,
                     client_info("x", "", "y"), b"\x04\x80\x10after"])
    whole = rdp.ClientStream(LOGON, 0x0407, frozenset({b"cliprdr"})).feed(sent)
    stream = rdp.ClientStream(LOGON, 0x0407, frozenset({b"cliprdr"}))
    assert walk(stream, [sent[i:i + 3] for i in range(0, len(sent), 3)]) == whole
    assert whole.endswith(b"\x04\x80\x10after")


def test_without_a_logon_the_client_info_passes_as_sent():
    info = client_info("anna", "", "typed-at-the-host")
    stream = rdp.ClientStream(None, 0x0407, frozenset())
    assert walk(stream, [connect_initial(0x0407, []), info]).endswith(info)


@pytest.mark.parametrize("logon", [LOGON, None])
def test_without_audio_the_host_is_told_to_play_and_record_none(logon):
    """Audio off (the pool's default): the Client Info PDU asks the host to leave the sound on
    the host and to record nothing from the client, over any channel; audio on: as sent."""
    asked = 0x0010 | 0x0001 | 0x00200000                        # the client offers its microphone
    opening = connect_initial(0x0407, [])
    sent = [opening, client_info("anna", "", "x", flags=asked)]
    off = walk(rdp.ClientStream(logon, 0x0407, rdp.blocked_channels({})), sent)
    flags, _, _ = parse_info(off[len(opening):])
    assert flags & 0x2000 and not flags & 0x00200000
    on = walk(rdp.ClientStream(logon, 0x0407, rdp.blocked_channels({"audio": True})), sent)
    flags, _, _ = parse_info(on[len(opening):])
    assert not flags & 0x2000 and flags & 0x00200000


@pytest.mark.parametrize("chunks", [
    [b"\x04\x80\x05hello"],                                         # fast-path before the logon
    [tpkt(b"\x64\x00\x07\x03\xeb\x70\x05hello")],                   # data, not a Connect Initial
    [connect_initial(0x0407, []), tpkt(b"\x64\x00\x07\x03\xeb\x70\x08\x00\x00\x00\x00abcd")],
    [connect_initial(0x0407, []), tpkt(b"\x20\x00")],               # another MCS PDU
    [connect_initial(0x0407, []), client_info("a", "", "b", flags=0)],   # not Unicode
    [b"\x03\x00\xff\xff"],                                          # a packet too long
    [b"\x03\x00\x00\x02"],                                          # a packet too short
    [tpkt(b"\x7f\x65\x00")],                                        # no GCC user data
])
def test_a_stream_the_gateway_cannot_read_ends_the_session(chunks):
    stream = rdp.ClientStream(LOGON, 0x0407, frozenset())
    with pytest.raises(StreamNotUnderstood):
        walk(stream, chunks)


def test_a_lying_field_length_in_the_client_info_is_refused():
    packet = bytearray(client_info("a", "", "b"))
    struct.pack_into("<H", packet, 7 + 7 + 4 + 8 + 4, 5000)     # cbPassword far too long
    stream = rdp.ClientStream(LOGON, 0x0407, frozenset())
    with pytest.raises(StreamNotUnderstood):
        walk(stream, [connect_initial(0x0407, []), bytes(packet)])


def test_the_gateways_request_asks_for_tls_or_nla_and_confirms_are_read():
    request = rdp.connection_request()
    assert rdp.is_connection_request(request)
    assert struct.unpack_from("<I", request, len(request) - 4)[0] == \
        rdp.PROTOCOL_SSL | rdp.PROTOCOL_HYBRID
    confirm = bytes.fromhex("0300001300d00000123400") + struct.pack("<BBHI", 2, 0, 8, 2)
    assert rdp.selected_protocol(confirm) == rdp.PROTOCOL_HYBRID
    with pytest.raises(StreamNotUnderstood):
        rdp.selected_protocol(bytes.fromhex("0300001300d00000123400")
                              + struct.pack("<BBHI", 3, 0, 8, 5))      # negotiation failure
    told = rdp.confirm_selecting(confirm, rdp.PROTOCOL_SSL)      # the viewer's view of it
    assert len(told) == len(confirm) and rdp.selected_protocol(told) == rdp.PROTOCOL_SSL


def test_the_core_data_says_what_the_host_chose_when_the_gateway_did_its_nla():
    """The page's client saw TLS and says so in its core data; the host chose NLA and checks."""
    packet = connect_initial(0x0407, [], core_size=216, selected=rdp.PROTOCOL_SSL)
    core_at = packet.index(struct.pack("<HH", 0xC001, 216))
    assert struct.unpack_from("<I", packet, core_at + 212)[0] == rdp.PROTOCOL_SSL
    out = rdp.ClientStream(LOGON, 0x0407, frozenset(),
                           host_protocol=rdp.PROTOCOL_HYBRID).feed(packet)
    assert len(out) == len(packet)
    assert struct.unpack_from("<I", out, core_at + 212)[0] == rdp.PROTOCOL_HYBRID


def test_a_ticket_carries_the_logon_sealed_for_its_own_id_only():
    key = b"k" * 32
    claims = ticket.Claims("id-1", 0, 60, "gw", "t", "anna", "s", ticket.Target("10.0.0.5", 3389,
                                                                               "rdp"),
                           sealed_secret=ticket.seal_secret(
                               key, "id-1", ticket.logon_secret("anna", "D", "pw")))
    assert ticket.open_logon(key, claims) == ("anna", "D", "pw")
    moved = ticket.Claims(**{**claims.__dict__, "ticket_id": "id-2"})
    with pytest.raises(Exception):
        ticket.open_logon(key, moved)
    not_a_logon = ticket.Claims(**{**claims.__dict__,
                                   "sealed_secret": seal(key, b"12345678", b"id-1")})
    with pytest.raises(Exception):
        ticket.open_logon(key, not_a_logon)
