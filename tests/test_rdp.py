"""RDP through the gateway, against a real ``xrdp`` (TLS, an Xvnc desktop behind it): the page's
client's first message (RDCleanPath with the ticket as its token), the gateway's TLS with the
host (its certificate pinned by the ticket), the answer with the host's confirm and certificate,
and what a wrong, forged or misdirected ticket gets. The full client (IronRDP in Chromium) is
``test_rdp_browser.py``; the pure parts are ``test_rdp_stream.py``."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time

import pytest

from gateway import rdp
from testbed import ShadowRdpHost, XrdpDesktop, XvncDesktop
from testbed.demo import DesktopEntry
from wire import rdcleanpath
from wire.resume import (Offer, ResumableRdp, Resume, Resumed, ResumeToken, decode, encode,
                         resume_url)

from .conftest import USERS, need

# A page's client's X.224 Connection Request (what IronRDP sends; the gateway reads its form only).
_CR = b"\xe0\x00\x00\x00\x00\x00Cookie: mstshash=-\r\n" + bytes.fromhex("0100080003000000")
CLIENT_X224 = bytes((3, 0, 0, 5 + len(_CR), len(_CR))) + _CR


@pytest.fixture(scope="module")
def xrdp_host(processes, tmp_path_factory) -> XrdpDesktop:
    """An RDP host whose desktop opens with Anna's directory password (the only one she has)."""
    need("xrdp", "Xvnc")
    state = tmp_path_factory.mktemp("xrdp")
    host = XrdpDesktop(state, XvncDesktop(state / "desktop", "Rathaus Windows", "#1565c0",
                                          password=USERS["anna"][1]))
    host.start(processes)
    return host


def rdp_entry(host: XrdpDesktop, certificate: str | None = None) -> DesktopEntry:
    return DesktopEntry("win1", host.port, 10, None, "rdp",
                        options={"certificate_sha256": certificate or host.certificate_sha256})


async def offer(inst, token: str, request: bytes):
    """Send ``request`` as the first message; the answer's message and the close code."""
    conn = await inst.connect(token)
    ws = await inst.http.ws_connect(conn["gateway_url"], max_msg_size=0)
    await ws.send_bytes(request if isinstance(request, bytes) else request(conn["ticket"]))
    answer = await ws.receive()
    closed = await ws.receive()
    return answer, closed, ws


def request_for(ticket: str) -> bytes:
    return rdcleanpath.encode_request(rdcleanpath.Request(ticket, CLIENT_X224, "ignored:3389"))


def test_the_client_x224_shape_is_a_connection_request():
    assert rdp.is_connection_request(CLIENT_X224)


async def test_the_gateway_answers_with_the_hosts_confirm_and_pinned_certificate(
        make_installation, xrdp_host):
    inst = await make_installation(desktops=[rdp_entry(xrdp_host)])
    token = await inst.login("anna")
    conn = await inst.connect(token)
    ws = await inst.http.ws_connect(conn["gateway_url"], max_msg_size=0)
    await ws.send_bytes(request_for(conn["ticket"]))
    answer = rdcleanpath.decode_response((await ws.receive()).data)
    assert isinstance(answer, rdcleanpath.Response)
    assert rdp.selected_protocol(answer.x224) == rdp.PROTOCOL_SSL
    assert hashlib.sha256(answer.certificates[0]).hexdigest() == xrdp_host.certificate_sha256
    assert answer.server_address == "127.0.0.1"
    await ws.close()


async def test_a_host_showing_another_certificate_is_refused(make_installation, xrdp_host):
    inst = await make_installation(desktops=[rdp_entry(xrdp_host, "ab" * 32)])
    answer, closed, _ = await offer(inst, await inst.login("anna"), request_for)
    refusal = rdcleanpath.decode_response(answer.data)
    assert refusal == rdcleanpath.Refusal(rdcleanpath.GENERAL_ERROR, 502)
    assert closed.data == 4502


async def test_a_forged_ticket_in_the_request_gets_401_and_no_desktop(make_installation,
                                                                      xrdp_host):
    inst = await make_installation(desktops=[rdp_entry(xrdp_host)])
    token = await inst.login("anna")

    def forged(ticket: str) -> bytes:
        payload, signature = ticket.split(".")
        return request_for(f"{payload}.{signature[:-4]}AAAA")
    answer, closed, _ = await offer(inst, token, forged)
    assert rdcleanpath.decode_response(answer.data) == rdcleanpath.Refusal(
        rdcleanpath.GENERAL_ERROR, 401)
    assert closed.data == 4401


async def test_an_rdp_ticket_offered_bare_is_refused_and_stays_unused(make_installation,
                                                                     xrdp_host):
    """A client that is not the page's RDP client (or a tunnel speaking opaque bytes) gets
    nothing from an RDP ticket; the ticket is not spent by it."""
    inst = await make_installation(desktops=[rdp_entry(xrdp_host)])
    token = await inst.login("anna")
    conn = await inst.connect(token)
    ws = await inst.http.ws_connect(conn["gateway_url"], max_msg_size=0)
    await ws.send_str(conn["ticket"])
    closed = await ws.receive()
    assert closed.data == 4415
    ws = await inst.http.ws_connect(conn["gateway_url"], max_msg_size=0)
    await ws.send_bytes(request_for(conn["ticket"]))
    assert isinstance(rdcleanpath.decode_response((await ws.receive()).data),
                      rdcleanpath.Response)
    await ws.close()


async def test_a_vnc_ticket_in_an_rdcleanpath_request_is_refused(make_installation):
    inst = await make_installation()
    answer, closed, _ = await offer(inst, await inst.login("anna"), request_for)
    assert rdcleanpath.decode_response(answer.data) == rdcleanpath.Refusal(
        rdcleanpath.GENERAL_ERROR, 400)
    assert closed.data == 4415


@pytest.mark.parametrize("garbage", [
    b"\x30\x03\xa0\x01\x00",                                  # a SEQUENCE that says nothing
    b"\x30\x84\xff\xff\xff\xff",                              # a length beyond any message
    rdcleanpath.encode_request(rdcleanpath.Request("t", b"\x03\x00\x00\x04")),  # no X.224 CR
    b"\x30" + secrets.token_bytes(200),
])
async def test_a_malformed_request_gets_400_and_a_close_code(make_installation, xrdp_host,
                                                            garbage):
    inst = await make_installation(desktops=[rdp_entry(xrdp_host)])
    ws = await inst.http.ws_connect(inst.gateway_url, max_msg_size=0)
    await ws.send_bytes(garbage)
    closed = await ws.receive()
    assert closed.data == 4400


async def test_a_ticket_used_once_gets_nothing_the_second_time(make_installation, xrdp_host):
    """A ticket copied from the page (or its websocket) after use: 409 and no desktop."""
    inst = await make_installation(desktops=[rdp_entry(xrdp_host)])
    conn = await inst.connect(await inst.login("anna"))
    first = await inst.http.ws_connect(conn["gateway_url"], max_msg_size=0)
    await first.send_bytes(request_for(conn["ticket"]))
    assert isinstance(rdcleanpath.decode_response((await first.receive()).data),
                      rdcleanpath.Response)
    second = await inst.http.ws_connect(conn["gateway_url"], max_msg_size=0)
    await second.send_bytes(request_for(conn["ticket"]))
    assert rdcleanpath.decode_response((await second.receive()).data) == rdcleanpath.Refusal(
        rdcleanpath.GENERAL_ERROR, 409)
    assert (await second.receive()).data == 4409
    await first.close()


# -- a host that requires Network Level Authentication (FreeRDP's shadow server) ---------------

@pytest.fixture(scope="module")
def nla_host(processes, tmp_path_factory) -> ShadowRdpHost:
    """Requires NLA; knows Anna (with her directory password) and no one else."""
    need("freerdp-shadow-cli", "winpr-hash", "Xvnc")
    state = tmp_path_factory.mktemp("shadow")
    host = ShadowRdpHost(state, XvncDesktop(state / "desktop", "NLA Desktop", "#2e7d32",
                                            password=secrets.token_hex(4)),
                         user="anna", password=USERS["anna"][1])
    host.start(processes)
    return host


def nla_entry(host: ShadowRdpHost) -> DesktopEntry:
    return DesktopEntry("win1", host.port, 10, None, "rdp",
                        options={"certificate_sha256": host.certificate_sha256})


async def test_the_gateway_does_the_hosts_nla_as_the_user_and_the_page_sees_tls(
        make_installation, nla_host):
    inst = await make_installation(desktops=[nla_entry(nla_host)])
    conn = await inst.connect(await inst.login("anna"))
    ws = await inst.http.ws_connect(conn["gateway_url"], max_msg_size=0)
    await ws.send_bytes(request_for(conn["ticket"]))
    response = rdcleanpath.decode_response((await ws.receive()).data)
    assert isinstance(response, rdcleanpath.Response), response
    assert rdp.selected_protocol(response.x224) == rdp.PROTOCOL_SSL
    assert hashlib.sha256(response.certificates[0]).hexdigest() == nla_host.certificate_sha256
    await ws.close()


async def test_a_user_the_nla_host_refuses_gets_no_desktop(make_installation, nla_host):
    """Bernd's password is not the one the host knows for him (it knows only Anna)."""
    inst = await make_installation(desktops=[nla_entry(nla_host)])
    answer, closed, _ = await offer(inst, await inst.login("bernd"), request_for)
    assert rdcleanpath.decode_response(answer.data) == rdcleanpath.Refusal(
        rdcleanpath.GENERAL_ERROR, 502)
    assert closed.data == 4502


async def test_after_a_drop_the_user_comes_back_to_her_session_on_the_same_host(
        make_installation, xrdp_host):
    """An RDP client that does not resume (its request came alone) connects again with a fresh
    ticket, and the broker gives it the session it had (kept ``disconnected_keep``), on the
    same host."""
    inst = await make_installation(desktops=[rdp_entry(xrdp_host)])
    token = await inst.login("anna")
    first = await inst.connect(token)
    ws = await inst.http.ws_connect(first["gateway_url"], max_msg_size=0)
    await ws.send_bytes(request_for(first["ticket"]))
    assert isinstance(rdcleanpath.decode_response((await ws.receive()).data),
                      rdcleanpath.Response)
    await ws.close()                                           # the network goes
    for _ in range(100):                                       # the gateway reports the end
        live = await inst.broker.store.sessions.live("musterstadt")
        if live and all(s.state.value == "disconnected" for s in live):
            break
        await asyncio.sleep(0.05)
    again = await inst.connect(token)
    assert again["session"] == first["session"]
    ws = await inst.http.ws_connect(again["gateway_url"], max_msg_size=0)
    await ws.send_bytes(request_for(again["ticket"]))
    assert isinstance(rdcleanpath.decode_response((await ws.receive()).data),
                      rdcleanpath.Response)
    await ws.close()


async def test_a_resumable_rdp_session_is_reattached_after_a_drop(make_installation,
                                                                   xrdp_host):
    """The page's and the tunnel's way: ``{"resumable": true}`` before the RDCleanPath request
    gets a resume token before the answer; after a drop (no goodbye) the token reattaches the
    held session, the stream counted from after the RDCleanPath exchange (nothing sent yet)."""
    inst = await make_installation(desktops=[rdp_entry(xrdp_host)])
    conn = await inst.connect(await inst.login("anna"))
    ws = await inst.http.ws_connect(conn["gateway_url"], max_msg_size=0)
    await ws.send_str(encode(ResumableRdp()))
    await ws.send_bytes(request_for(conn["ticket"]))
    token = decode((await ws.receive()).data)
    assert isinstance(token, ResumeToken)
    assert isinstance(rdcleanpath.decode_response((await ws.receive()).data),
                      rdcleanpath.Response)
    ws._response.connection.transport.abort()                 # the network fails
    again = await inst.http.ws_connect(resume_url(conn["gateway_url"], token.gateway),
                                       max_msg_size=0)
    await again.send_str(encode(Resume(token.token, 0)))
    assert decode((await again.receive()).data) == Resumed(0)
    await again.close()


@pytest.mark.parametrize("second", [
    lambda ticket: ticket,                                        # a bare ticket
    lambda ticket: encode(ResumableRdp()),                       # announced twice
    lambda ticket: encode(Offer(ticket, resumable=True)),         # the VNC client's offer
])
async def test_after_the_resumable_announcement_only_an_rdcleanpath_request_is_taken(
        make_installation, xrdp_host, second):
    inst = await make_installation(desktops=[rdp_entry(xrdp_host)])
    conn = await inst.connect(await inst.login("anna"))
    ws = await inst.http.ws_connect(conn["gateway_url"], max_msg_size=0)
    await ws.send_str(encode(ResumableRdp()))
    await ws.send_str(second(conn["ticket"]))
    assert (await ws.receive()).data == 4400
    ws = await inst.http.ws_connect(conn["gateway_url"], max_msg_size=0)
    await ws.send_bytes(request_for(conn["ticket"]))          # the ticket was not spent
    assert isinstance(rdcleanpath.decode_response((await ws.receive()).data),
                      rdcleanpath.Response)
    await ws.close()


@pytest.mark.parametrize("switches, channels", [
    ({}, ()), ({"printers": True}, ("printers",)), ({"drives": True}, ("drives",)),
    ({"drives": True, "printers": True, "audio": True}, ("drives", "printers", "audio")),
])
async def test_the_ticket_carries_the_pools_device_and_audio_switches(make_installation,
                                                                      xrdp_host, switches,
                                                                      channels):
    """What the gateway lets through on ``rdpdr`` and ``rdpsnd`` (gateway/rdp_channels.py)
    comes from the pool's switches, by the ticket."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from wire import ticket
    inst = await make_installation(desktops=[rdp_entry(xrdp_host)], pool_options=switches)
    conn = await inst.connect(await inst.login("anna"))
    key = load_pem_private_key(inst.broker.config.ticket_private_key, None).public_key()
    claims = ticket.verify(key, conn["ticket"], now=time.time(),
                           audience=inst.broker.config.gateway_audience)
    assert claims.channels == channels


def test_pforte_rdp_certificate_prints_the_pin_for_the_config(xrdp_host, nla_host):
    import subprocess
    import sys
    for host, security in ((xrdp_host, "TLS"), (nla_host, "NLA")):
        done = subprocess.run([sys.executable, "-m", "pforte", "rdp-certificate", "127.0.0.1",
                               "--port", str(host.port)], capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 0, done.stderr
        assert f'certificate_sha256 = "{host.certificate_sha256}"' in done.stdout
        assert f"security: {security}" in done.stdout
    closed = subprocess.run([sys.executable, "-m", "pforte", "rdp-certificate", "127.0.0.1",
                             "--port", "1"], capture_output=True, text=True, timeout=30)
    assert closed.returncode == 1 and "no RDP host" in closed.stderr
