"""The channels a pool allows in part on an RDP stream (gateway/rdp_channels.py), as pure logic:
what the client sends after its logon on the clipboard's channel (one way) and the devices'
(some kinds) — split into chunks and packets anywhere — and what reaches the host. The real
clients and host for the clipboard are in test_rdp_browser.py; no test host here serves
devices (xrdp's VNC backend has no ``rdpdr``)."""

from __future__ import annotations

import struct

import pytest

from gateway import rdp
from gateway.clipboard import StreamNotUnderstood
from gateway.rdp_channels import (CB_CLIP_CAPS, CB_FILECONTENTS_RESPONSE, CB_FORMAT_DATA_REQUEST,
                                  CB_FORMAT_DATA_RESPONSE, CB_RESPONSE_FAIL, CB_RESPONSE_OK,
                                  CHANNEL_FLAG_FIRST, CHANNEL_FLAG_LAST,
                                  CHANNEL_PACKET_COMPRESSED, NO_FORMAT, RDPDR_DTYP_FILESYSTEM,
                                  RDPDR_DTYP_PRINT, AllowedDevices, ClientChannels,
                                  OneWayClipboard)

from .test_rdp_stream import per_length, tpkt

CLIPBOARD, OTHER, DEVICES = 1005, 1006, 1007
TEXT = "Geheim: Grüße aus dem Rathaus\0".encode("utf-16-le")
CF_UNICODETEXT = 13


def channel_packet(channel: int, total: int, flags: int, chunk: bytes) -> bytes:
    body = struct.pack("<II", total, flags) + chunk
    return tpkt(b"\x64\x00\x07" + struct.pack("!H", channel) + b"\x70" + per_length(len(body))
                + body)


def message(kind: int, flags: int, data: bytes, chunk: int = 1600,
            channel: int = CLIPBOARD) -> list[bytes]:
    """A clipboard PDU in the channel's chunks, as a client sends it."""
    pdu = struct.pack("<HHI", kind, flags, len(data)) + data
    pieces = [pdu[i:i + chunk] for i in range(0, len(pdu), chunk)]
    return [channel_packet(channel, len(pdu), (CHANNEL_FLAG_FIRST if i == 0 else 0)
                           | (CHANNEL_FLAG_LAST if i == len(pieces) - 1 else 0), piece)
            for i, piece in enumerate(pieces)]


def walker(**policies) -> ClientChannels:
    """The client's channels after the logon: cliprdr, another one, rdpdr, with ``policies``."""
    channels = ClientChannels({name.encode(): p for name, p in policies.items()})
    channels.name([b"cliprdr", b"other", b"rdpdr"], [CLIPBOARD, OTHER, DEVICES])
    return channels


def one_way(policy: str) -> ClientChannels:
    return walker(cliprdr=OneWayClipboard(policy))


def through(guard: ClientChannels, packets: list[bytes], split: int = 0) -> bytes:
    stream = b"".join(packets)
    if not split:
        return guard.feed(stream)
    return b"".join(guard.feed(stream[i:i + split]) for i in range(0, len(stream), split))


def payload(packets: bytes) -> bytes:
    """The clipboard PDU the host puts together from the channel's chunks."""
    out, pos = b"", 0
    while pos < len(packets):
        size = struct.unpack_from("!H", packets, pos + 2)[0]
        packet = packets[pos:pos + size]
        mcs = packet[7:]
        n, at = (mcs[6], 7) if mcs[6] < 0x80 else (((mcs[6] & 0x3F) << 8) | mcs[7], 8)
        out += mcs[at + 8:at + n]
        pos += size
    return out


@pytest.mark.parametrize("split", [0, 1, 7, 1000])
def test_under_out_the_clients_text_reaches_the_host_as_a_failure_of_zeros(split):
    guard = one_way("out")
    sent = message(CB_FORMAT_DATA_RESPONSE, CB_RESPONSE_OK, TEXT * 100)   # several chunks
    out = through(guard, sent, split)
    assert len(out) == len(b"".join(sent))                    # in place: nothing moved
    kind, flags, size = struct.unpack_from("<HHI", payload(out))
    assert (kind, flags, size) == (CB_FORMAT_DATA_RESPONSE, CB_RESPONSE_FAIL, len(TEXT) * 100)
    assert payload(out)[8:] == bytes(len(TEXT) * 100)
    assert guard.counts["in_blocked"] == 1


def test_under_out_a_response_that_claims_no_success_is_zeroed_all_the_same():
    guard = one_way("out")
    out = through(guard, message(CB_FORMAT_DATA_RESPONSE, 0, TEXT))
    assert TEXT not in out and struct.unpack_from("<H", payload(out), 2)[0] == CB_RESPONSE_FAIL


def test_under_out_the_clients_requests_for_the_desktops_text_pass():
    guard = one_way("out")
    sent = message(CB_FORMAT_DATA_REQUEST, 0, struct.pack("<I", CF_UNICODETEXT))
    assert through(guard, sent) == b"".join(sent)
    assert guard.counts["out"] == 1


def test_under_in_the_clients_requests_ask_for_nothing_and_its_text_passes():
    guard = one_way("in")
    request = message(CB_FORMAT_DATA_REQUEST, 0, struct.pack("<I", CF_UNICODETEXT))
    out = through(guard, request)
    assert struct.unpack_from("<I", payload(out), 8)[0] == NO_FORMAT
    response = message(CB_FORMAT_DATA_RESPONSE, CB_RESPONSE_OK, TEXT)
    assert through(guard, response) == b"".join(response)
    assert guard.counts == {"in": 1, "in_blocked": 0, "out": 0, "out_blocked": 1}


def test_other_channels_and_fast_path_input_pass_untouched():
    guard = one_way("out")
    fast_path = b"\x04\x06\x01\x00\x1e\x00"              # one scancode
    long_fast_path = b"\x04\x80\x0a" + bytes(7)
    other = message(CB_FORMAT_DATA_RESPONSE, CB_RESPONSE_OK, TEXT, channel=OTHER)
    sent = [fast_path, *other, long_fast_path, tpkt(b"\x20\x80")]  # and a Disconnect Ultimatum
    assert through(guard, sent, 1) == b"".join(sent)


def test_files_are_switched_off_in_the_clients_capabilities():
    general = struct.pack("<HHII", 1, 12, 2, 0x02 | 0x04 | 0x08)   # long names, files, locking
    caps = struct.pack("<HH", 1, 0) + general
    out = through(one_way("in"), message(CB_CLIP_CAPS, 0, caps))
    assert struct.unpack_from("<I", payload(out), 8 + 4 + 8)[0] == 0x02 | 0x08


@pytest.mark.parametrize("sent", [
    message(CB_FILECONTENTS_RESPONSE, CB_RESPONSE_OK, b"file bytes"),
    [channel_packet(CLIPBOARD, 20, 0, bytes(20))],                      # no first chunk
    [channel_packet(CLIPBOARD, 20, CHANNEL_FLAG_FIRST | CHANNEL_FLAG_LAST, bytes(12))],  # short
    [channel_packet(CLIPBOARD, 12, CHANNEL_FLAG_FIRST | CHANNEL_PACKET_COMPRESSED, bytes(12))],
    message(CB_FORMAT_DATA_RESPONSE, CB_RESPONSE_OK, TEXT * 100)[:1] * 2,   # first inside first
    [channel_packet(CLIPBOARD, 8, CHANNEL_FLAG_FIRST | CHANNEL_FLAG_LAST, b"\x05\x00")],
    [b"\x05\x00\x00\x00"],                                             # neither TPKT nor fast path
])
def test_what_the_filter_cannot_read_ends_the_session(sent):
    with pytest.raises(StreamNotUnderstood):
        through(one_way("out"), sent)


def test_the_channel_ids_come_from_the_hosts_connect_response():
    net = struct.pack("<HH", 1003, 3) + struct.pack("<3H", 1004, 1005, 1006) + b"\0\0"
    blocks = struct.pack("<HH", 0x0C01, 12) + bytes(8) + struct.pack("<HH", 0x0C03, 4 + len(net))
    blocks += net
    gcc = bytes.fromhex("000500147c0001") + b"\x2a\x14\x76\x0a\x01\x01\x00\x01\xc0\x00McDn" \
        + per_length(len(blocks)) + blocks
    body = b"\x0a\x01\x00\x02\x01\x00\x30\x1a" + bytes(28) + b"\x04\x82" \
        + struct.pack("!H", len(gcc)) + gcc
    response = tpkt(b"\x7f\x66\x82" + struct.pack("!H", len(body)) + body)
    host = rdp.HostStream()
    for i in range(len(response)):
        assert host.feed(response[i:i + 1]) == response[i:i + 1]
    assert host.done and host.channel_ids == [1004, 1005, 1006]
    with pytest.raises(StreamNotUnderstood):
        rdp.HostStream().feed(tpkt(b"\x7f\x65\x00"))


# -- devices ----------------------------------------------------------------------------------

SERIAL, SMART_CARD = 0x01, 0x20


def device(kind: int, device_id: int, name: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<II8sI", kind, device_id, name.ljust(8, b"\0"), len(data)) + data


def announce(*devices: bytes, chunk: int = 1600) -> list[bytes]:
    """A Device List Announce on the rdpdr channel, in the channel's chunks."""
    pdu = struct.pack("<HHI", 0x4472, 0x4441, len(devices)) + b"".join(devices)
    pieces = [pdu[i:i + chunk] for i in range(0, len(pdu), chunk)]
    return [channel_packet(DEVICES, len(pdu), (CHANNEL_FLAG_FIRST if i == 0 else 0)
                           | (CHANNEL_FLAG_LAST if i == len(pieces) - 1 else 0), piece)
            for i, piece in enumerate(pieces)]


def announced(out: bytes) -> list[tuple[int, bytes]]:
    """The devices the host reads in what reached it: (kind, name)."""
    pdu = payload(out)
    count, pos, found = struct.unpack_from("<I", pdu, 4)[0], 8, []
    for _ in range(count):
        kind, _, name, size = struct.unpack_from("<II8sI", pdu, pos)
        found.append((kind, name.rstrip(b"\0")))
        pos += 20 + size
    assert pos == len(pdu)
    return found


PRINTER_DATA = bytes(24) + "HP LaserJet Rathaus 2. OG\0".encode("utf-16-le") * 40   # ~2 KB
DEVICES_SENT = [device(RDPDR_DTYP_FILESYSTEM, 1, b"C", b"C:\0"),
                device(RDPDR_DTYP_PRINT, 2, b"PRN1", PRINTER_DATA),
                device(SMART_CARD, 3, b"SCARD"), device(SERIAL, 4, b"COM1"),
                device(RDPDR_DTYP_FILESYSTEM, 5, b"USB", b"USB\0")]


@pytest.mark.parametrize("split", [0, 1, 333])
@pytest.mark.parametrize("allowed, kept", [
    ({RDPDR_DTYP_FILESYSTEM}, [(RDPDR_DTYP_FILESYSTEM, b"C"), (RDPDR_DTYP_FILESYSTEM, b"USB")]),
    ({RDPDR_DTYP_PRINT}, [(RDPDR_DTYP_PRINT, b"PRN1")]),
    ({RDPDR_DTYP_FILESYSTEM, RDPDR_DTYP_PRINT},
     [(RDPDR_DTYP_FILESYSTEM, b"C"), (RDPDR_DTYP_PRINT, b"PRN1"), (RDPDR_DTYP_FILESYSTEM, b"USB")]),
])
def test_the_host_hears_only_of_the_devices_the_pool_allows(allowed, kept, split):
    """Printers only, drives only, or both: the others (and always smart cards and serial
    ports) are taken out of the announce, which reaches the host re-chunked (it spans chunks)."""
    guard = walker(rdpdr=AllowedDevices(frozenset(allowed)))
    out = through(guard, announce(*DEVICES_SENT), split)
    assert announced(out) == kept
    sizes = []
    pos = 0
    while pos < len(out):
        size = struct.unpack_from("!H", out, pos + 2)[0]
        sizes.append(size)
        pos += size
    assert all(s - 7 - 2 - 6 - 8 <= 1600 for s in sizes)     # no chunk beyond the client's


def test_other_device_messages_and_channels_pass_as_sent():
    guard = walker(rdpdr=AllowedDevices(frozenset({RDPDR_DTYP_PRINT})))
    name_request = struct.pack("<HHIII", 0x4472, 0x434E, 0, 0, 10) + "Rathaus\0".encode()
    sent = [channel_packet(DEVICES, len(name_request), CHANNEL_FLAG_FIRST | CHANNEL_FLAG_LAST,
                           name_request), *message(CB_FORMAT_DATA_RESPONSE, 1, TEXT)]
    assert through(guard, sent, 5) == b"".join(sent)


@pytest.mark.parametrize("sent", [
    announce(device(RDPDR_DTYP_PRINT, 2, b"PRN1", b"x")[:-1]),       # a device cut short
    announce(device(RDPDR_DTYP_PRINT, 2, b"PRN1") + b"?"),            # a byte after the list
    [channel_packet(DEVICES, 12, CHANNEL_FLAG_FIRST | CHANNEL_FLAG_LAST,
                    struct.pack("<HHI", 0x4472, 0x4441, 1) + bytes(4))],   # count says more
    [channel_packet(DEVICES, 2, CHANNEL_FLAG_FIRST | CHANNEL_FLAG_LAST, b"\x72\x44")],
    announce(device(RDPDR_DTYP_PRINT, 2, b"PRN1", bytes(300_000)), chunk=60_000),  # too long
])
def test_a_device_list_the_gateway_cannot_read_ends_the_session(sent):
    """Device data longer than the message, more devices than it holds, bytes after the list,
    a header split, an announce beyond any real one's size."""
    with pytest.raises(StreamNotUnderstood):
        through(walker(rdpdr=AllowedDevices(frozenset({RDPDR_DTYP_PRINT}))), sent)
