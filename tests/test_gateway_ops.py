"""Operating the gateway: TLS, readiness and graceful drain, caps, trusted proxies, idle timeout,
metrics, and bad input that must not disturb other sessions."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time

import aiohttp
import pytest

from testbed import free_port, self_signed_certificate
from testbed.demo import TENANT
from wire.closes import Close
from gateway.config import gateway_config
from wire.config import load_toml
from wire import serving
from gateway.server import Gateway

from .conftest import open_ws, read_exactly

pytestmark = pytest.mark.integration


async def close_of(ws: aiohttp.ClientWebSocketResponse) -> tuple[int, str]:
    msg = await ws.receive()
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
    return ws.close_code, msg.extra or ""


def gateway_http(inst) -> str:
    return inst.gateway_url.replace("ws://", "http://").rsplit("/", 1)[0]


async def test_each_source_address_is_capped(raw_install):
    inst, token, _ = await raw_install(max_sessions_per_source=2)
    async with aiohttp.ClientSession() as http:
        first = [await open_ws(inst, token, http) for _ in range(2)]
        conn = await inst.connect(token)
        ws = await http.ws_connect(conn["gateway_url"])
        await ws.send_str(conn["ticket"])
        assert await close_of(ws) == (4429, "too many connections")
        for w in first:
            await w.close()


async def test_forwarded_addresses_count_only_from_trusted_proxies(raw_install):
    for trusted, expect_second in ((["127.0.0.1/32"], None), ([], 4429)):
        inst, token, _ = await raw_install(max_sessions_per_source=1, trusted_proxies=trusted)
        async with aiohttp.ClientSession() as http:
            opened = []
            for client in ("203.0.113.1", "203.0.113.2"):
                conn = await inst.connect(token)
                ws = await http.ws_connect(conn["gateway_url"],
                                           headers={"X-Forwarded-For": client})
                await ws.send_str(conn["ticket"])
                msg = await ws.receive()
                if msg.type is aiohttp.WSMsgType.BINARY:
                    opened.append(ws)
                else:
                    assert ws.close_code == expect_second
            assert len(opened) == (2 if expect_second is None else 1)
            for w in opened:
                await w.close()


async def test_an_idle_session_is_closed(raw_install):
    inst, token, _ = await raw_install(idle_timeout=1.0)
    async with aiohttp.ClientSession() as http:
        ws = await open_ws(inst, token, http)
        await ws.send_bytes(b"I")
        code, reason = await asyncio.wait_for(close_of(ws), 10)
        assert (code, reason) == (4000, "idle timeout")


async def test_a_session_the_broker_has_ended_is_closed_at_the_gateway(raw_install, monkeypatch):
    """The broker ended a session without telling this gateway (a timer while its report was
    lost): its answer to the gateway's next alive report names it, and the stream is closed, so
    no stream goes on without its seat."""
    monkeypatch.setattr("gateway.server.ALIVE_INTERVAL", 0.2)
    inst, token, _ = await raw_install()
    async with aiohttp.ClientSession() as http:
        ws = await open_ws(inst, token, http)
        [session] = [s for s in await inst.broker.store.sessions.live(TENANT)
                     if s.login == "anna"]
        await inst.broker.store.sessions.end(TENANT, session.id, now=time.time())
        code, _ = await asyncio.wait_for(close_of(ws), 10)
        assert code == Close.LOGOFF.code


@contextlib.asynccontextmanager
async def own_gateway(inst, *, tls: bool = False):
    """A second gateway on the installation's config that the test may drain: (gateway, port)."""
    config = gateway_config(load_toml(inst.config_path))
    gateway = Gateway(config)
    port = free_port()
    listening = await serving.listen([gateway.site(
        "127.0.0.1", port, serving.tls_context(config.tls_cert, config.tls_key) if tls else None)])
    try:
        yield gateway, port
    finally:
        await listening.close()


async def test_a_draining_gateway_is_not_ready_and_closes_sessions_after_its_deadline(
        raw_install, tmp_path):
    inst, token, _ = await raw_install(drain_timeout=1.0)
    async with own_gateway(inst) as (gateway, port):
        async with aiohttp.ClientSession() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/readyz")).status == 200
            conn = await inst.connect(token)
            ws = await http.ws_connect(f"ws://127.0.0.1:{port}/ws")
            await ws.send_str(conn["ticket"])
            assert (await ws.receive()).data == b"G"
            drain = asyncio.ensure_future(gateway.drain())
            await asyncio.sleep(0.2)
            assert (await http.get(f"http://127.0.0.1:{port}/readyz")).status == 503
            late = await http.ws_connect(f"ws://127.0.0.1:{port}/ws")
            assert await close_of(late) == (1013, "gateway draining, try again")
            await ws.send_bytes(b"Eabc")  # the open session keeps working until the deadline
            assert await read_exactly(ws, 3) == b"abc"
            assert await asyncio.wait_for(close_of(ws), 5) == (1001, "gateway shutting down")
            await drain


async def test_tls_from_certificate_files(raw_install, tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    inst, token, _ = await raw_install(tls_cert_file=str(cert), tls_key_file=str(key))
    async with own_gateway(inst, tls=True) as (_, port):
        client_ctx = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession() as http:
            conn = await inst.connect(token)
            ws = await http.ws_connect(f"wss://127.0.0.1:{port}/ws", ssl=client_ctx)
            await ws.send_str(conn["ticket"])
            assert (await ws.receive()).data == b"G"
            await ws.close()
            with pytest.raises(aiohttp.ClientError):
                await http.ws_connect(f"ws://127.0.0.1:{port}/ws")  # plain text is not spoken


async def test_an_oversized_message_closes_only_its_own_session(raw_install):
    inst, token, _ = await raw_install(max_message_bytes=65536)
    async with aiohttp.ClientSession() as http:
        bystander = await open_ws(inst, token, http)
        await bystander.send_bytes(b"E")
        big = await open_ws(inst, token, http)
        await big.send_bytes(bytes(200_000))
        assert (await close_of(big))[0] == 1009  # message too big
        await bystander.send_bytes(b"still here")
        assert await read_exactly(bystander, 10) == b"still here"
        await bystander.close()


async def test_garbage_frames_and_plain_http_do_not_disturb_other_sessions(raw_install):
    inst, token, _ = await raw_install()
    async with aiohttp.ClientSession() as http:
        bystander = await open_ws(inst, token, http)
        await bystander.send_bytes(b"E")
        # a plain HTTP request to the websocket endpoint
        r = await http.get(inst.gateway_url.replace("ws://", "http://"))
        assert r.status == 400
        # a websocket handshake followed by bytes that are no websocket frame
        host, port = inst.gateway_url[5:].split("/")[0].split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"\xff" * 64)  # reserved opcode, unmasked: a protocol error
        rest = await asyncio.wait_for(reader.read(), 5)
        assert rest[:1] == b"\x88"  # the gateway answers with a close frame and hangs up
        writer.close()
        await bystander.send_bytes(b"ok")
        assert await read_exactly(bystander, 2) == b"ok"
        await bystander.close()


async def test_metrics_count_sessions_refusals_and_handshakes(raw_install):
    inst, token, _ = await raw_install()
    async with aiohttp.ClientSession() as http:
        ws = await open_ws(inst, token, http)
        bad = await http.ws_connect(inst.gateway_url)
        await bad.send_str("not-a-ticket")
        await close_of(bad)
        text = await (await http.get(gateway_http(inst) + "/metrics")).text()
        await ws.close()
    assert "pforte_gateway_sessions_open 1" in text
    assert 'pforte_gateway_refusals_total{reason="malformed"} 1' in text
    assert "pforte_gateway_handshake_seconds_count 1" in text


async def test_a_viewer_that_stalls_in_the_vnc_handshake_is_closed(make_installation):
    inst = await make_installation(gateway_options={"handshake_timeout": 1.0})
    conn = await inst.connect(await inst.login("anna"))
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(conn["gateway_url"])
        await ws.send_str(conn["ticket"])
        assert (await ws.receive()).data == b"RFB 003.008\n"   # ... and never answers
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert ws.close_code == 4408, msg


@pytest.mark.parametrize("headers, body, status", [
    ({}, {"session": "s", "text": "hi"}, 401),                       # no report token
    ({"Authorization": "Bearer wrong"}, {"session": "s", "text": "hi"}, 401),
    (None, {"session": "s"}, 400),                                   # no text
    (None, {"session": "s", "text": "x" * 1001}, 400),               # too long
    (None, {"session": "s", "text": "hi", "deadline": -1}, 400),
    (None, ["s", "hi"], 400),                                        # not an object
    (None, {"session": "nobody", "text": "hi"}, 200),                # no such session: none reached
])
async def test_the_notice_control_takes_only_the_brokers_word_and_checks_it(
        raw_install, headers, body, status):
    inst, _, _ = await raw_install()
    token = inst.broker.config.report_token.decode()
    r = await inst.http.post(f"{gateway_http(inst)}/control/notice", json=body,
                             headers=headers if headers is not None else {
                                 "Authorization": f"Bearer {token}"})
    assert r.status == status
    if status == 200:
        assert await r.json() == {"reached": 0}
