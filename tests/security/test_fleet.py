"""Two real ``pforte broker`` processes on one database: the fleet's duties run in exactly one of
them, and when it is killed (``kill -9``) the other takes over within the lease, doing no step of
a drain twice. On the engine the suite runs on (a shared SQLite file, or PostgreSQL)."""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
import pytest

from broker.config import load_config
from broker.duties import LEASE, LEASE_NAME, TICK
from broker.engine import engine_for
from client.stream import GatewayStream
from testbed import HAProxy, free_port
from wire.closes import Close
from wire.resume import Resume, encode

from ..conftest import drop_stream, need
from .conftest import bearer, start

pytestmark = pytest.mark.integration


async def lease_holder(config) -> str | None:
    engine = engine_for(config.database, config.state_dir, config.database_password, 1)
    try:
        row = await engine.read(lambda tx: tx.execute(
            "SELECT holder FROM leases WHERE name=? AND until>?",
            (LEASE_NAME, time.time())).fetchone())
        return row[0] if row else None
    finally:
        await engine.close()


class Reader:
    """Exactly ``n`` bytes at a time from a stream that delivers pieces of any size."""

    def __init__(self, stream: GatewayStream) -> None:
        self.stream, self.pending = stream, bytearray()

    async def __call__(self, n: int) -> bytes:
        while len(self.pending) < n:
            self.pending += await self.stream.recv()
        data = bytes(self.pending[:n])
        del self.pending[:n]
        return data


async def resumable_desktop(live, http: aiohttp.ClientSession, user: str) -> GatewayStream:
    """A user's desktop through a resumable stream, as the portal's page opens it."""
    if user not in live.secrets:
        await live.enrol(http, user)
    token = await live.login(http, user)
    r = await http.post(f"{live.portal}/api/v1/pools/buero/connect", headers=bearer(token))
    conn = await r.json()
    stream = GatewayStream(http, conn["gateway_url"], conn["ticket"], resume_within=10)
    await stream.open()
    return stream


async def drop_thrice_while_asking_for_pixels(stream: GatewayStream) -> None:
    """Complete the RFB handshake, then break the network before each of three framebuffer
    requests: each is answered, byte-exact, after a resume."""
    read = Reader(stream)
    assert await read(12) == b"RFB 003.008\n"
    await stream.send(b"RFB 003.008\n")
    assert await read(2) == b"\x01\x01"      # one security type: None
    await stream.send(b"\x01")
    assert await read(4) == b"\x00\x00\x00\x00"  # SecurityResult OK
    await stream.send(b"\x01")                                 # ClientInit: shared
    init = await read(24)
    bytes_per_pixel = init[4] // 8
    await read(int.from_bytes(init[20:24], "big"))   # the desktop's name
    for _ in range(3):
        drop_stream(stream)
        await stream.send(b"\x03\x00" + bytes(4) + (1).to_bytes(2, "big") * 2)  # 1x1 at 0,0
        update = await read(4 + 12 + bytes_per_pixel)
        assert update[:4] == b"\x00\x00\x00\x01"              # FramebufferUpdate, 1 rectangle
        assert update[4:16] == bytes(4) + b"\x00\x01\x00\x01" + bytes(4)   # 1x1 at 0,0, raw
    assert stream.resumes == 3


async def test_a_resume_reaches_the_worker_that_holds_the_session(own_live):
    """``pforte gateway --workers 2``: the kernel gives a reconnect to either worker; one that
    does not hold the session carries it to the one that does. Four sessions, three drops each:
    every resume succeeds (by chance alone, one in 4,096 runs would)."""
    live = own_live()
    live.processes.stop(live.gateway)
    live.gateway = start(live.processes, "gateway", live.config, live.gateway_port, live.state,
                         "--workers", "2")
    async with live.client("10.86.0.1") as http:
        streams = [await resumable_desktop(live, http, user)
                   for user in ("user1", "user2", "user3", "user4")]
        await asyncio.gather(*(drop_thrice_while_asking_for_pixels(s) for s in streams))
        for s in streams:
            await s.close()
        # forged tokens naming either worker, or none, are refused with a close code, each time
        for token in ("0.forged", "1.forged", "9999.forged", "1." + "x" * 5000, "forged"):
            for _ in range(3):
                ws = await http.ws_connect(live.gateway_ws)
                await ws.send_str(encode(Resume(token, 0)))
                assert (await ws.receive()).type is aiohttp.WSMsgType.CLOSE
                assert ws.close_code == Close.RESUME.code


async def wait_for(predicate, timeout: float):
    async with asyncio.timeout(timeout):
        while not (found := await predicate()):
            await asyncio.sleep(0.2)
    return found


async def test_duties_move_to_another_broker_when_their_holder_is_killed(own_live):
    live = own_live()
    config = load_config(live.config)
    second_port = free_port()
    second = live.config.with_name("second-broker.toml")
    second.write_text(live.config.read_text().replace(
        f'listen = "127.0.0.1:{live.portal_port}"', f'listen = "127.0.0.1:{second_port}"', 1))
    other = start(live.processes, "broker", second, second_port, live.state)
    brokers = {live.broker.pid: live.broker, other.pid: other}

    holder = await wait_for(lambda: lease_holder(config), 10)
    pid = int(holder.split(":")[1])
    assert pid in brokers                        # one of the two runs the duties

    async with live.client("10.80.0.1") as http:
        await live.enrol(http, "user5")
        token = await live.login(http, "user5")
        r = await http.post(f"{live.portal}/api/v1/pools/buero/connect", headers=bearer(token))
        assert r.status == 200                   # a session (pending) on a host
        r = await http.get(f"{live.portal}/api/v1/admin/tenants/musterstadt/sessions",
                           headers=bearer(live.admin_token))
        host = next(s["host"] for s in (await r.json())["sessions"] if s["user"] == "user5")
        r = await http.post(f"{live.portal}/api/v1/admin/tenants/musterstadt/hosts/{host}/"
                            f"actions/drain", json={"deadline_seconds": 600},
                            headers=bearer(live.admin_token))
        assert r.status == 200

    portals = {live.broker.pid: live.portal, other.pid: f"http://127.0.0.1:{second_port}"}
    asking = [live.portal]

    async def notices() -> list[dict]:
        async with aiohttp.ClientSession() as http:
            r = await http.get(f"{asking[0]}/api/v1/admin/tenants/musterstadt/audit",
                               headers=bearer(live.admin_token))
            return [e for e in (await r.json())["audit"]
                    if e["action"] == "host.notice" and "user=user5" in e["detail"]]
    await wait_for(notices, 10)                  # the first notice, at once
    brokers[pid].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    survivor = next(p for p in brokers if p != pid)
    asking[0] = portals[survivor]

    async def taken_over() -> bool:
        found = await lease_holder(config)
        return found is not None and int(found.split(":")[1]) == survivor
    await wait_for(taken_over, LEASE + 10)
    took = time.monotonic() - killed_at
    assert took <= LEASE + 2 * TICK + 1, f"takeover after {took:.1f} s"
    await asyncio.sleep(3 * TICK)                # the new holder has looked at the drain
    assert len(await notices()) == 1             # and did not send the first notice again


async def test_a_gateway_redeems_at_the_next_broker_when_one_is_down(own_live):
    """A gateway that knows several brokers (broker_urls) still admits users when the first
    one is dead: the ticket is redeemed at the next."""
    live = own_live()
    second_port, gateway_port = free_port(), free_port()
    text = live.config.read_text()
    second = live.config.with_name("second-broker.toml")
    second.write_text(text.replace(f'listen = "127.0.0.1:{live.portal_port}"',
                                   f'listen = "127.0.0.1:{second_port}"', 1))
    start(live.processes, "broker", second, second_port, live.state)
    fleet = live.config.with_name("fleet-gateway.toml")
    fleet.write_text(text.replace(
        f'broker_url = "http://127.0.0.1:{live.portal_port}"',
        f'broker_urls = ["http://127.0.0.1:{live.portal_port}", '
        f'"http://127.0.0.1:{second_port}"]').replace(
        f'listen = "127.0.0.1:{live.gateway_port}"', f'listen = "127.0.0.1:{gateway_port}"'))
    start(live.processes, "gateway", fleet, gateway_port, live.state)
    async with live.client("10.80.1.1") as http:
        await live.enrol(http, "user6")
        token = await live.login(http, "user6")
        r = await http.post(f"{live.portal}/api/v1/pools/buero/connect", headers=bearer(token))
        conn = await r.json()
        live.broker.send_signal(signal.SIGKILL)          # the first broker dies
        live.broker.wait()
        ws = await http.ws_connect(f"ws://127.0.0.1:{gateway_port}/ws")
        await ws.send_str(conn["ticket"])
        assert (await ws.receive()).data == b"RFB 003.008\n"   # redeemed at the second
        await ws.close()


ALL_UP = {"brokers/broker1", "brokers/broker2", "gateways/gateway1", "gateways/gateway2"}


async def fleet_behind_haproxy(live) -> tuple[dict, object, object, HAProxy]:
    """HAProxy (from Debian) in front of two brokers and two gateways (``gateway1`` is the
    live one, ``gateway2`` a second), once HAProxy counts all four up: (ports, second broker,
    second gateway, HAProxy)."""
    need("haproxy")
    ports = {"broker2": free_port(), "gateway2": free_port(), "lb_portal": free_port(),
             "lb_gateway": free_port()}
    text = live.config.read_text().replace(
        f'gateway_url = "ws://127.0.0.1:{live.gateway_port}/ws"',
        f'gateway_url = "ws://127.0.0.1:{ports["lb_gateway"]}/ws"').replace(
        f'broker_url = "http://127.0.0.1:{live.portal_port}"',
        f'broker_urls = ["http://127.0.0.1:{live.portal_port}", '
        f'"http://127.0.0.1:{ports["broker2"]}"]').replace(   # browsers come through HAProxy
        f'allowed_origins = ["http://127.0.0.1:{live.portal_port}"]',
        f'allowed_origins = ["http://127.0.0.1:{ports["lb_portal"]}"]')
    live.config.write_text(text.replace("[gateway]\n", '[gateway]\nname = "gateway1"\n'))
    second = live.config.with_name("second.toml")
    second.write_text(text.replace(f'"127.0.0.1:{live.portal_port}"',
                                   f'"127.0.0.1:{ports["broker2"]}"', 1).replace(
        f'listen = "127.0.0.1:{live.gateway_port}"', f'listen = "127.0.0.1:{ports["gateway2"]}"')
        .replace("[gateway]\n", '[gateway]\nname = "gateway2"\n'))
    for proc in (live.broker, live.gateway):           # again, on the fleet's config
        live.processes.stop(proc)
    live.start_broker()
    live.start_gateway()
    broker2 = start(live.processes, "broker", second, ports["broker2"], live.state)
    gateway2 = start(live.processes, "gateway", second, ports["gateway2"], live.state)
    haproxy = HAProxy(live.state / "haproxy", [live.portal_port, ports["broker2"]],
                      [live.gateway_port, ports["gateway2"]], ports["lb_portal"],
                      ports["lb_gateway"])
    haproxy.start(live.processes)
    live.portal = f"http://127.0.0.1:{ports['lb_portal']}"
    await haproxy.until_servers(ALL_UP)
    return ports, broker2, gateway2, haproxy


async def test_behind_haproxy_a_resume_reaches_the_gateway_that_holds_the_session(own_live):
    """The balancer spreads new connections over both gateways (leastconn; ties in turn), so
    that of a session's reconnects some would reach the wrong one; the resume URL names the
    holder and HAProxy routes by it. One session at a time, three drops each."""
    live = own_live()
    await fleet_behind_haproxy(live)
    async with live.client("10.87.0.1") as http:
        for user in ("user1", "user2"):
            stream = await resumable_desktop(live, http, user)
            assert stream.resume_url.endswith(("?gateway=gateway1", "?gateway=gateway2"))
            await drop_thrice_while_asking_for_pixels(stream)
            await stream.close()


async def test_a_fleet_behind_haproxy_survives_a_broker_and_a_gateway_killed(own_live):
    """HAProxy (from Debian) in front of two brokers and two gateways: sign-ins and desktops
    go on when one broker and then one gateway are killed (-9)."""
    live = own_live()
    ports, broker2, gateway2, haproxy = await fleet_behind_haproxy(live)

    async def desktops(user: str, source: str, times: int = 4) -> None:
        async with live.client(source) as http:
            await live.enrol(http, user)
            token = await live.login(http, user)
            for _ in range(times):                     # round robin: both brokers, gateways
                r = await http.post(f"{live.portal}/api/v1/pools/buero/connect",
                                    headers=bearer(token))
                conn = await r.json()
                assert conn["gateway_url"].endswith(f":{ports['lb_gateway']}/ws")
                ws = await http.ws_connect(conn["gateway_url"])
                await ws.send_str(conn["ticket"])
                assert (await ws.receive()).data == b"RFB 003.008\n"
                await ws.close()

    await desktops("user1", "10.85.0.1")
    broker2.send_signal(signal.SIGKILL)
    await desktops("user2", "10.85.1.1")
    gateway2.send_signal(signal.SIGKILL)
    await haproxy.until_servers({"brokers/broker1", "gateways/gateway1"})   # HAProxy notices
    await desktops("user3", "10.85.2.1")
