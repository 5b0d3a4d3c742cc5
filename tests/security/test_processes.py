"""Signals to the real processes with sessions open, and what the processes leave on disk.

SIGTERM to ``pforte gateway`` must drain as the README says: readiness 503 at once, new
connections refused with 1013, open sessions keep working (input, output, pings) until
``drain_timeout``, then close with 1001. A broker that stops, or is killed, takes no open session
with it, and after a restart everyone is where they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import stat
import struct

import aiohttp
import pytest

from ..conftest import AiohttpStream, rfb_viewer_handshake
from .conftest import DRAIN, bearer, close_of

pytestmark = pytest.mark.integration

FRAMEBUFFER_UPDATE_REQUEST = b"\x03\x00" + struct.pack(">HHHH", 0, 0, 8, 8)  # RFB, 8×8 pixels


async def desktop_answers(ws: aiohttp.ClientWebSocketResponse) -> bool:
    """Ask the desktop for pixels through the gateway; True when a FramebufferUpdate arrives.
    The gateway's heartbeat pings a viewer that was silent a while: answered, as a viewer does
    (the websockets here are opened without aiohttp's own answering)."""
    await ws.send_bytes(FRAMEBUFFER_UPDATE_REQUEST)
    async with asyncio.timeout(5):
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.PING:
                await ws.pong(msg.data)
                continue
            if msg.type is aiohttp.WSMsgType.BINARY and msg.data[:1] == b"\x00":
                return True
            if msg.type is not aiohttp.WSMsgType.BINARY:
                return False


@contextlib.asynccontextmanager
async def answering_pings(ws: aiohttp.ClientWebSocketResponse):
    """While inside, the viewer answers the gateway's heartbeat as a browser does by itself (a
    viewer silent past the heartbeat is closed); nothing but pings may arrive meanwhile."""
    async def answer() -> None:
        while True:
            msg = await ws.receive()
            if msg.type is not aiohttp.WSMsgType.PING:
                raise AssertionError(f"the viewer got {msg.type.name} while it waited")
            await ws.pong(msg.data)
    answering = asyncio.create_task(answer())
    try:
        yield
    finally:
        answering.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await answering


async def open_session(live, http: aiohttp.ClientSession, user: str = "bernd"):
    """Sign in, connect, open the desktop through the gateway: (token, session id, websocket)."""
    if user not in live.secrets:
        await live.enrol(http, user)
    token = await live.login(http, user)
    r = await http.post(f"{live.portal}/api/v1/pools/buero/connect", headers=bearer(token))
    conn = await r.json()
    ws = await http.ws_connect(live.gateway_ws, autoping=False)
    await ws.send_str(conn["ticket"])
    await rfb_viewer_handshake(AiohttpStream(ws))
    return token, conn["session"], ws


async def wait_exit(proc, timeout: float) -> int:
    async with asyncio.timeout(timeout):
        while proc.poll() is None:
            await asyncio.sleep(0.05)
    return proc.returncode


async def test_sigterm_drains_the_real_gateway_process(own_live):
    live = own_live()
    async with live.client("10.60.0.1") as http:
        _, _, ws = await open_session(live, http)
        live.gateway.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        r = await http.get(f"{live.gateway_http}/readyz")
        assert r.status == 503                                   # out of the load balancer
        late = await http.ws_connect(live.gateway_ws)
        assert await close_of(late) == (1013, "gateway draining, try again")
        assert await desktop_answers(ws)                         # input and output go on
        await ws.ping(b"still there?")
        assert (await ws.receive()).type is aiohttp.WSMsgType.PONG
        assert await close_of(ws, timeout=DRAIN + 5) == (1001, "gateway shutting down")
    assert await wait_exit(live.gateway, 15) == 0


async def test_a_session_outlives_a_broker_stopped_by_sigterm_or_killed(own_live):
    live = own_live()
    async with live.client("10.60.0.2") as http:
        token, session, ws = await open_session(live, http)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            live.broker.send_signal(sig)
            code = await wait_exit(live.broker, 15)
            assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
            assert await desktop_answers(ws)                     # the desktop stays on screen
            live.start_broker()
            r = await http.get(f"{live.portal}/api/v1/pools", headers=bearer(token))
            assert r.status == 200                               # still signed in
            r = await http.post(f"{live.portal}/api/v1/pools/buero/connect",
                                headers=bearer(token))
            assert (await r.json())["session"] == session        # and still on their desktop
        await ws.close()


async def test_a_killed_gateway_loses_no_session(own_live):
    live = own_live()
    async with live.client("10.60.0.3") as http:
        token, session, ws = await open_session(live, http)
        live.gateway.send_signal(signal.SIGKILL)
        await wait_exit(live.gateway, 10)
        await close_of(ws)          # nothing can send a close frame for a killed process
        live.start_gateway()
        r = await http.post(f"{live.portal}/api/v1/pools/buero/connect", headers=bearer(token))
        conn = await r.json()
        assert conn["session"] == session
        again = await http.ws_connect(live.gateway_ws, autoping=False)
        await again.send_str(conn["ticket"])
        await rfb_viewer_handshake(AiohttpStream(again))
        assert await desktop_answers(again)
        await again.close()


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


async def test_state_keys_and_the_directory_config_are_private(live, slapd):
    async with live.client("10.60.0.4") as http:
        await live.password(http, "bernd@musterstadt.example", "Bernd-pass-1")
    state = live.state / "broker"
    assert mode(state) == 0o700
    for name in ("pforte.db", "pforte.db-wal", "pforte.db-shm"):
        if (state / name).exists():
            assert mode(state / name) == 0o600, name
    for key in ("ticket-signing.pem", "credential.key", "totp.key", "report.token"):
        assert mode(live.state / "keys" / key) == 0o600, key
    assert mode(slapd.state) == 0o700
    assert mode(slapd.state / "slapd.conf") == 0o600           # it holds the root password


async def test_the_journal_has_one_event_per_line_for_what_an_operator_searches(own_live):
    """Sign-ins (and their refusals), a refused desktop, a session's start and end: each is one
    ``event=…`` line with tenant, user, source and session in the process's journal (here its
    log file), and no password appears in either log."""
    from ..conftest import USERS
    from .conftest import DOMAIN
    live = own_live()
    async with live.client("10.97.0.1") as http:
        token, session, ws = await open_session(live, http, "user2")
        await ws.close()
        r = await http.post(f"{live.portal}/api/v1/login",
                            json={"username": f"bernd@{DOMAIN}", "password": "not-bernds"})
        assert r.status == 401
        r = await http.post(f"{live.portal}/api/v1/pools/standesamt/connect",  # not hers
                            headers=bearer(token))
        assert r.status == 403
    for _ in range(100):                                  # the gateway's end of the session
        if "event=session.end" in (live.state / "gateway.log").read_text():
            break
        await asyncio.sleep(0.1)
    broker_log = (live.state / "broker.log").read_text()
    gateway_log = (live.state / "gateway.log").read_text()
    assert re.search(r"event=login\.password tenant=musterstadt user=user2 source=10\.97\.0\.1 "
                     r"result=ok$", broker_log, re.M), broker_log
    assert re.search(r"event=login\.password tenant=musterstadt user=bernd source=10\.97\.0\.1 "
                     r"result=bad_credentials", broker_log)
    assert re.search(r"event=connect tenant=musterstadt user=user2 source=10\.97\.0\.1 "
                     r"result=not_entitled", broker_log)
    assert re.search(rf"event=session\.start session={session} tenant=musterstadt user=user2 "
                     rf"source=10\.97\.0\.1 host=127\.0\.0\.1 port=\d+ protocol=vnc", gateway_log)
    assert re.search(rf"event=session\.end session={session} tenant=musterstadt user=user2 "
                     rf'reason="client closed" bytes_up=\d+ bytes_down=\d+$', gateway_log, re.M)
    for _, password in USERS.values():
        assert password not in broker_log and password not in gateway_log
    assert "not-bernds" not in broker_log
