"""The real gateway process against forged, replayed, retargeted and malformed tickets and fuzzed
first messages: every refusal is a close code from the README's table, never a dropped connection
(1006) and never an internal error."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import struct
import time

import aiohttp
import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from wire import ticket
from wire.closes import Close

from ..conftest import USERS, rfb_viewer_handshake, AiohttpStream
from .conftest import DOMAIN, HANDSHAKE, bearer, close_of

pytestmark = pytest.mark.integration

REFUSALS = {c.code for c in Close} - {Close.INTERNAL.code}  # 1011 would be a bug


@pytest.fixture(scope="module")
def minted(live):
    """A function that mints tickets with the broker's own key, from real claims to vary."""
    async def connect() -> str:
        async with live.client("10.50.0.1") as http:
            await live.enrol(http, "user6")
            token = await live.login(http, "user6")
            r = await http.post(f"{live.portal}/api/v1/pools/buero/connect",
                                headers=bearer(token))
            return (await r.json())["ticket"]
    real = asyncio.run(connect())
    key = load_pem_private_key((live.state / "keys" / "ticket-signing.pem").read_bytes(), None)
    public = key.public_key()
    claims = ticket.verify(public, real, now=time.time(), audience="demo-gateway")

    credential_key = bytes.fromhex((live.state / "keys" / "credential.key").read_text().strip())
    desktop_secret = ticket.open_secret(credential_key, claims)

    def mint(**changes) -> str:
        now, ticket_id = int(time.time()), ticket.new_ticket_id()
        fresh = dataclasses.replace(  # the desktop's secret is sealed to the ticket's id
            claims, ticket_id=ticket_id, issued_at=now, expires_at=now + 30,
            sealed_secret=ticket.seal_secret(credential_key, ticket_id, desktop_secret))
        return ticket.mint(key, dataclasses.replace(fresh, **changes))
    return mint


async def first_message(live, send) -> tuple[int | None, str]:
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(live.gateway_ws)
        await send(ws)
        return await close_of(ws, timeout=HANDSHAKE + 5)


@pytest.mark.parametrize("message", [
    "", "{", "{}", '{"ticket": 123}', '{"ticket": null}', '{"ticket": ["a"]}', '{"ticket": {}}',
    '{"resume": 5}', '{"resume": "x", "offset": "y"}', '{"resume": null, "offset": 0}',
    "[" * 200_000, '{"a":' * 50_000, "\x00" * 100, "ü" * 1000, "a.b", "a" * 100_000,
    "eyJ2IjoxfQ.AAAA", '{"ticket": "' + "A" * 5000 + '.B"}'])
async def test_fuzzed_text_first_messages_are_refused_with_a_close_code(live, message):
    code, _ = await first_message(live, lambda ws: ws.send_str(message))
    assert code in REFUSALS and code != 1006, code


@pytest.mark.parametrize("data", [b"", b"\xff" * 1000, os.urandom(4096), b"{\"ticket\": 1}"])
async def test_fuzzed_binary_first_messages_are_refused_with_a_close_code(live, data):
    code, _ = await first_message(live, lambda ws: ws.send_bytes(data))
    assert code in REFUSALS, code


async def test_a_ping_or_nothing_as_first_message_times_out_with_4408(live):
    async def ping_only(ws):
        await ws.ping(b"ticket?")
    assert (await first_message(live, ping_only))[0] == 4408


async def test_a_ticket_in_the_url_is_ignored(live, minted):
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{live.gateway_ws}?ticket={minted()}")
        assert (await close_of(ws, timeout=HANDSHAKE + 5))[0] == 4408


@pytest.mark.parametrize("changes, code", [
    ({"audience": "another-gateway"}, 4401),
    ({"target": ticket.Target("10.99.0.1", 5900, "vnc")}, 4403),     # outside allowed_targets
    ({"target": ticket.Target("localhost", 5900, "vnc")}, 4403),     # names are not resolved
    ({"issued_at": 1_000_000, "expires_at": 1_000_030}, 4401),       # long expired
    ({"session": "no-such-session"}, 4409),
    ({"user": "user5"}, 4409),                                       # another user's session
    ({"tenant": "elsewhere"}, 4409)])
async def test_tampered_claims_are_refused(live, minted, changes, code):
    forged = minted(**changes)
    assert (await first_message(live, lambda ws: ws.send_str(forged)))[0] == code


async def test_a_forged_signature_and_a_replay_are_refused(live, minted):
    good = minted()
    payload, signature = good.split(".")
    flipped = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    assert (await first_message(live, lambda ws: ws.send_str(f"{flipped}.{signature}")))[0] \
        == 4401
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(live.gateway_ws)
        await ws.send_str(good)
        assert (await rfb_viewer_handshake(AiohttpStream(ws)))[:4]   # the desktop's ServerInit
        replay = await first_message(live, lambda ws: ws.send_str(good))
        assert replay[0] == 4409
        await ws.close()


async def test_a_desktop_secret_sealed_for_another_ticket_does_not_open(live, minted):
    good = minted()
    other = ticket.verify(load_pem_private_key(
        (live.state / "keys" / "ticket-signing.pem").read_bytes(), None).public_key(), good,
        now=time.time(), audience="demo-gateway")
    moved = minted(sealed_secret=other.sealed_secret)   # a new ticket id, the old sealed secret
    assert (await first_message(live, lambda ws: ws.send_str(moved)))[0] == 4502


async def test_a_ticket_of_another_tenant_user_spelling_is_refused(live, minted):
    """The ticket names the canonical identity; a spelling of it is another user to the store."""
    upper = minted(user="USER6")
    assert (await first_message(live, lambda ws: ws.send_str(upper)))[0] == 4409
    async with live.client("10.50.0.2") as http:
        token = await live.password(http, f"USER6@{DOMAIN}", USERS["user6"][1])
        r = await http.post(f"{live.portal}/api/v1/pools/buero/connect", headers=bearer(token))
        assert r.status == 401                   # a half-login opens no desktop


async def test_a_clipboard_guarded_session_speaks_only_what_it_can_read(live, minted):
    """A ticket whose pool forbids the clipboard: the viewer's SetEncodings asks for Tight first,
    the desktop answers in ZRLE (the guard rewrote the request); cut
    text is dropped and the session goes on; a message the guard cannot read ends the session
    with 4406."""
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(live.gateway_ws)
        await ws.send_str(minted(clipboard="none"))
        await rfb_viewer_handshake(AiohttpStream(ws))
        encodings = (7, -1063131698, 16, 0)                 # Tight, ext. clipboard, ZRLE, Raw
        await ws.send_bytes(struct.pack("!BxH4i", 2, 4, *encodings)
                            + struct.pack("!BxxxI", 6, 6) + b"secret"   # cut text: dropped
                            + struct.pack("!BBHHHH", 3, 0, 0, 0, 64, 64))
        update = b""
        while True:
            while len(update) < 16:
                update += (await ws.receive_bytes(timeout=10))
            if update[0] != 3:
                break
            # the desktop's clipboard capabilities (no text in them) pass: skip them
            length = abs(struct.unpack("!i", update[4:8])[0])
            while len(update) < 8 + length:
                update += (await ws.receive_bytes(timeout=10))
            update = update[8 + length:]
        assert update[0] == 0                                # a FramebufferUpdate ...
        assert struct.unpack("!i", update[12:16])[0] == 16   # ... in ZRLE, not Tight
        await ws.send_bytes(b"\x07")                        # no such client message
        assert await close_of(ws) == (Close.POLICY.code, Close.POLICY.reason)


@pytest.mark.parametrize("ticket_named", ["another ticket", "no ticket"])
async def test_a_taken_over_gateway_cannot_end_or_log_off_sessions_it_never_redeemed(
        live, ticket_named):
    """A gateway holds the report token; a taken-over one reports another gateway's session (or
    another tenant's) as ended for idleness. The broker applies a report only to a viewer that
    gateway redeemed — it must name the ticket — so the session stays connected, the desktop
    stays open, and the refusal is audited."""
    from testbed.demo import TENANT
    from wire import reports
    user = "user5" if ticket_named == "another ticket" else "user3"
    report_token = (live.state / "keys" / "report.token").read_text().strip()
    async with live.client("10.51.0.1") as http:
        if user not in live.secrets:
            await live.enrol(http, user)
        token = await live.login(http, user)
        r = await http.post(f"{live.portal}/api/v1/pools/buero/connect", headers=bearer(token))
        conn = await r.json()
        ws = await http.ws_connect(live.gateway_ws)
        await ws.send_str(conn["ticket"])
        assert (await ws.receive()).data == b"RFB 003.008\n"      # redeemed by the real one
        forged = {"tenant": TENANT, "session": conn["session"], "user": user, "bytes_up": 0,
                  "bytes_down": 0, "reason": "idle"}
        if ticket_named == "another ticket":
            forged["ticket"] = ticket.new_ticket_id()
        r = await http.post(f"{live.portal}{reports.DISCONNECT}",
                            json={"disconnects": [forged]}, headers=bearer(report_token))
        assert r.status == 204
        r = await http.get(f"{live.portal}/api/v1/admin/tenants/{TENANT}/sessions",
                           headers=bearer(live.admin_token))
        state = {s["id"]: s["state"] for s in (await r.json())["sessions"]}
        assert state.get(conn["session"]) == "connected"
        await ws.send_bytes(b"RFB 003.008\n")                     # the desktop goes on
        assert (await ws.receive()).type is aiohttp.WSMsgType.BINARY
        await ws.close()
    refused = [e for e in await live.audit() if e["action"] == "session.disconnect"
               and conn["session"] in e["detail"]]
    assert refused and refused[0]["result"] == "not_a_viewer"


@pytest.mark.parametrize("proof", ["made-up ticket id", "forged outage ticket",
                                   "an ordinary ticket shown as outage ticket"])
async def test_a_taken_over_gateway_cannot_hold_seats_of_sessions_it_never_redeemed(live, proof):
    """An alive report makes the sessions it names connected and keeps their seats: a
    taken-over gateway names a session whose ticket no gateway redeemed yet. It must prove
    each with the id of a ticket it redeemed for that session, or with an outage ticket the
    broker signed for it; without, nothing changes (the session stays pending, its timer
    runs) and the report is audited."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from testbed.demo import TENANT
    from wire import reports
    report_token = (live.state / "keys" / "report.token").read_text().strip()
    async with live.client("10.52.0.1") as http:
        if "user2" not in live.secrets:
            await live.enrol(http, "user2")
        token = await live.login(http, "user2")
        r = await http.post(f"{live.portal}/api/v1/pools/buero/connect", headers=bearer(token))
        conn = await r.json()
        key = load_pem_private_key((live.state / "keys" / "ticket-signing.pem").read_bytes(),
                                   None)
        real = ticket.verify(key.public_key(), conn["ticket"], now=time.time(),
                             audience="demo-gateway")
        held = {"tenant": TENANT, "session": conn["session"], "ticket": ticket.new_ticket_id()}
        if proof == "forged outage ticket":
            claims = dataclasses.replace(real, ticket_id=held["ticket"], outage=True)
            held["outage_ticket"] = ticket.mint(Ed25519PrivateKey.generate(), claims)
        elif proof == "an ordinary ticket shown as outage ticket":
            held = {**held, "ticket": real.ticket_id, "outage_ticket": conn["ticket"]}
        r = await http.post(f"{live.portal}{reports.ALIVE}", json={"sessions": [held]},
                            headers=bearer(report_token))
        assert r.status == 204
        r = await http.get(f"{live.portal}/api/v1/admin/tenants/{TENANT}/sessions",
                           headers=bearer(live.admin_token))
        state = {s["id"]: s["state"] for s in (await r.json())["sessions"]}
        assert state.get(conn["session"]) == "pending"           # no seat held by hearsay
        r = await http.post(f"{live.portal}/api/v1/admin/tenants/{TENANT}/sessions/"
                            f"{conn['session']}/logoff", headers=bearer(live.admin_token))
        assert r.status in (200, 204)                     # its seat back for the suite
    refused = [e for e in await live.audit() if e["action"] == "session.alive"
               and conn["session"] in e["detail"]]
    assert refused and refused[0]["result"] == "not_a_viewer"
