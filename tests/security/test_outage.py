"""PostgreSQL goes down under a running fleet installation (a server of this test's own, so the
outage touches nothing else): open desktops keep running, a dropped network is resumed, new
sign-ins get a clear "temporarily unavailable" in the user's language, and once the database is
back everything works again without restarting any process."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import aiohttp

from broker.service import HOUSEKEEPING_INTERVAL
from client.api import BrokerApi
from client.tunnel import Tunnel
from testbed import Postgres, Processes, ShadowRdpHost, XvncDesktop, free_port
from testbed.demo import TENANT, DesktopEntry
from wire import rdcleanpath
from wire.api import RECONNECT_PASS_HEADER
from wire.closes import Close

from ..conftest import USERS, AiohttpStream, need, rfb_viewer_handshake
from ..test_rdp import CLIENT_X224
from .conftest import DOMAIN, DRAIN, bearer
from .test_processes import answering_pings, desktop_answers, open_session

pytestmark = pytest.mark.integration

SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"


@pytest.fixture
def own_postgres():
    """(a PostgreSQL server, the Processes that runs it)."""
    need("runuser")
    if not list(Path("/usr/lib/postgresql").glob("*/bin/postgres")):
        pytest.skip("not installed: postgresql (scripts/setup installs it)")
    processes, server = Processes(), Postgres()
    server.start(processes)
    yield server, processes
    processes.stop()
    server.remove()


def on_database(database: Postgres, name: str, tmp_path: Path) -> dict:
    """Broker options for a fresh database of this test's own PostgreSQL server."""
    password_file = tmp_path / "pg.pass"
    password_file.write_text(database.password)
    return {"database": database.create_database(name),
            "database_password_file": str(password_file)}


async def test_a_database_outage_keeps_desktops_running_and_ends_by_itself(
        own_live, own_postgres, tmp_path):
    database, processes = own_postgres
    live = own_live(broker_options=on_database(database, "outage", tmp_path))
    async with live.client("10.90.0.1") as http:
        token, _, ws = await open_session(live, http, "user3")

        database.halt()                                   # the database is gone
        assert await desktop_answers(ws)                      # the open desktop is not
        r = await http.post(f"{live.portal}/api/v1/login", headers={"Accept-Language": "de"},
                            json={"username": f"bernd@{DOMAIN}",
                                  "password": USERS["bernd"][1]})
        body = await r.json()
        assert r.status == 503 and body["error"] == "store_unavailable"
        assert body["message"].startswith("Die Anmeldung ist vorübergehend nicht möglich")
        r = await http.get(f"{live.gateway_http}/healthz")
        assert r.status == 200                                # the gateway does not care
        assert await desktop_answers(ws)

        database.run(processes)                      # back, same data
        r = await http.post(f"{live.portal}/api/v1/login",
                            json={"username": f"bernd@{DOMAIN}",
                                  "password": USERS["bernd"][1]})
        assert r.status == 200                                # no process was restarted
        r = await http.get(f"{live.portal}/api/v1/pools", headers=bearer(token))
        assert r.status == 200                                # logins survived the outage
        await ws.close()


async def test_a_signed_in_user_gets_back_to_her_desktop_while_the_database_is_down(
        own_live, own_postgres, tmp_path):
    """With the pass her last connect gave her, and her own login token, she gets a short ticket
    to the same desktop session; the gateway admits it once. Anyone else's pass, another pool,
    no pass, or the same ticket twice: refused, each with a clear answer."""
    database, processes = own_postgres
    live = own_live(broker_options=on_database(database, "reconnect", tmp_path))
    async with live.client("10.91.0.1") as http:
        tokens, passes, sessions = {}, {}, {}
        for user in ("user4", "user5"):
            await live.enrol(http, user)
            tokens[user] = await live.login(http, user)
        r = await http.post(f"{live.portal}/api/v1/pools/buero/connect",
                            headers=bearer(tokens["user4"]))
        answer = await r.json()
        passes["user4"], sessions["user4"] = answer["reconnect_pass"], answer["session"]
        # user5 is a thin client: its tunnel asks through client.api, which keeps the pass
        thin_client = BrokerApi(live.portal, token=tokens["user5"], http=http)
        answer = await thin_client.connect("buero")
        passes["user5"], sessions["user5"] = answer["reconnect_pass"], answer["session"]

        database.halt()

        async def connect(user, with_pass, pool="buero"):
            headers = {**bearer(tokens[user]), "Accept-Language": "de",
                       **({RECONNECT_PASS_HEADER: with_pass} if with_pass else {})}
            return await http.post(f"{live.portal}/api/v1/pools/{pool}/connect", headers=headers)

        r = await connect("user4", passes["user4"])
        assert r.status == 200, await r.text()
        answer = await r.json()
        assert answer["session"] == sessions["user4"]            # the desktop she already has
        opened = await http.ws_connect(live.gateway_ws, autoping=False)
        await opened.send_str(answer["ticket"])
        await rfb_viewer_handshake(AiohttpStream(opened))
        assert await desktop_answers(opened)                      # her desktop, live
        replay = await http.ws_connect(live.gateway_ws)            # the same ticket again
        await replay.send_str(answer["ticket"])
        assert (await replay.receive()).type is aiohttp.WSMsgType.CLOSE
        assert replay.close_code == Close.BROKER.code
        for user, shown, pool in (("user4", None, "buero"),          # no pass
                                  ("user4", passes["user5"], "buero"),  # another's pass
                                  ("user5", passes["user4"], "buero"),  # her pass, his login
                                  ("user4", passes["user4"], "labor"),  # another pool
                                  ("user4", passes["user4"][:-4] + "AAAA", "buero"),  # tampered
                                  ("user4", "x" * 6000, "buero")):        # too long
            r = await connect(user, shown, pool)
            body = await r.json()
            assert r.status == 503 and body["error"] == "store_unavailable", (user, pool)
            assert body["message"].startswith("Die Anmeldung ist vorübergehend nicht möglich")
        await opened.close()
        again = await thin_client.connect("buero")         # shows its pass by itself
        assert again["session"] == sessions["user5"]

        database.run(processes)
        r = await connect("user4", passes["user4"])
        assert r.status == 200                      # the ordinary way again, a new pass with it
        assert (await r.json())["reconnect_pass"] != passes["user4"]


async def test_an_rdp_user_gets_back_signed_in_to_her_nla_desktop_while_the_database_is_down(
        own_live, own_postgres, tmp_path):
    """Her pass carries her Windows logon as her login keeps it (sealed to her): with the
    database down the gateway still does the host's Network Level Authentication as her — the
    host, which knows only her, takes it."""
    need("freerdp-shadow-cli", "winpr-hash", "Xvnc")
    database, processes = own_postgres
    host = ShadowRdpHost(tmp_path / "nla", XvncDesktop(tmp_path / "nla-desktop", "NLA",
                                                       "#2e7d32", password="unused1"),
                         user="user6", password=USERS["user6"][1])
    host.start(processes)
    live = own_live(broker_options=on_database(database, "rdp_outage", tmp_path), entries=[
        DesktopEntry("win1", host.port, 10, None, "rdp",
                     options={"certificate_sha256": host.certificate_sha256})])
    async with live.client("10.91.0.6") as http:
        await live.enrol(http, "user6")
        token = await live.login(http, "user6")
        r = await http.post(f"{live.portal}/api/v1/pools/buero/connect", headers=bearer(token))
        held = (await r.json())["reconnect_pass"]

        database.halt()
        r = await http.post(f"{live.portal}/api/v1/pools/buero/connect",
                            headers={**bearer(token), RECONNECT_PASS_HEADER: held})
        assert r.status == 200, await r.text()
        ticket = (await r.json())["ticket"]
        ws = await http.ws_connect(live.gateway_ws)
        await ws.send_bytes(rdcleanpath.encode_request(rdcleanpath.Request(ticket, CLIENT_X224)))
        answer = rdcleanpath.decode_response((await ws.receive()).data)
        assert isinstance(answer, rdcleanpath.Response), answer
        await ws.close()
        database.run(processes)


async def test_every_connection_that_predates_a_database_restart_is_replaced_unnoticed(
        own_postgres):
    """Each of the broker's connections was opened before PostgreSQL restarted: the first
    unit of work on each finds it dead and runs on a new one instead of answering 503."""
    import asyncio

    from broker.engine import DEFAULT_CONNECTIONS, PostgresEngine

    database, processes = own_postgres
    engine = PostgresEngine(database.dsn(), database.password)

    def slow_read(tx):                       # holds its thread, so that each gets a connection
        return tx.execute("SELECT pg_sleep(0.2), 1").fetchone()[1]

    def write(tx):
        tx.execute("INSERT INTO t VALUES (1)")
        return tx.execute("SELECT pg_sleep(0.2), 1").fetchone()[1]

    try:
        await engine.write(lambda tx: tx.execute("CREATE TABLE t (n integer)"))
        assert await asyncio.gather(*(engine.read(slow_read) for _ in range(
            DEFAULT_CONNECTIONS))) == [1] * DEFAULT_CONNECTIONS
        database.halt()
        database.run(processes)
        answers = await asyncio.gather(*(engine.read(slow_read)
                                         for _ in range(DEFAULT_CONNECTIONS // 2)),
                                       *(engine.write(write)
                                         for _ in range(DEFAULT_CONNECTIONS // 2)))
        assert answers == [1] * DEFAULT_CONNECTIONS
        assert await engine.read(lambda tx: tx.execute("SELECT count(*) FROM t").fetchone()[0]) \
            == DEFAULT_CONNECTIONS // 2                   # each write once, none twice
    finally:
        await engine.close()



@pytest.mark.parametrize("signed_out", ["before the outage", "during the outage"])
async def test_a_signed_out_users_reconnect_pass_is_dead_at_the_broker_that_saw_it(
        own_live, own_postgres, tmp_path, signed_out):
    """She signs out (on a shared town-hall PC); while the database is down, whoever kept her
    login token and pass gets nothing from the broker that saw the sign-out."""
    database, processes = own_postgres
    live = own_live(broker_options=on_database(database, "signout", tmp_path))
    async with live.client("10.93.0.1") as http:
        await live.enrol(http, "user2")
        token = await live.login(http, "user2")
        r = await http.post(f"{live.portal}/api/v1/pools/buero/connect", headers=bearer(token))
        held_pass = (await r.json())["reconnect_pass"]
        if signed_out == "during the outage":
            database.halt()
        r = await http.post(f"{live.portal}/api/v1/logout", headers=bearer(token))
        assert r.status in (204, 503)               # 503: the database could not be told
        if signed_out == "before the outage":
            database.halt()
        r = await http.post(f"{live.portal}/api/v1/pools/buero/connect",
                            headers={**bearer(token), RECONNECT_PASS_HEADER: held_pass})
        assert r.status == 503 and (await r.json())["error"] == "store_unavailable"
        database.run(processes)


async def tunnel_viewer(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A VNC viewer on a thin client's tunnel, past the RFB handshake."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await reader.readexactly(12) == b"RFB 003.008\n"
    writer.write(b"RFB 003.008\n")
    assert await reader.readexactly(2) == b"\x01\x01"          # security: None
    writer.write(b"\x01")
    assert await reader.readexactly(4) == bytes(4)
    writer.write(b"\x01")                                        # ClientInit: shared
    server_init = await reader.readexactly(24)
    await reader.readexactly(int.from_bytes(server_init[20:24], "big"))
    return reader, writer


async def tunnel_desktop_answers(reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter) -> bool:
    """A full update request gets the desktop's FramebufferUpdate (message type 0)."""
    writer.write(b"\x03\x00" + bytes(4) + (16).to_bytes(2, "big") * 2)
    return await asyncio.wait_for(reader.readexactly(1), 20) == b"\x00"


async def test_a_reconnect_pass_is_short_lived_and_the_thin_client_renews_it_while_connected(
        own_live, own_postgres, tmp_path):
    """Passes live 30 s here (the shortest the broker takes). The thin client's tunnel renews
    its pass while the desktop is open: once the database is down the renewed pass brings it
    back, the first one, never renewed, has expired. No connected desktop, no renewal."""
    database, processes = own_postgres
    live = own_live(broker_options={**on_database(database, "renewal", tmp_path),
                                    "reconnect_pass_lifetime": 30})
    async with live.client("10.94.0.1") as http:
        await live.enrol(http, "user1")
        token = await live.login(http, "user1")
        r = await http.post(f"{live.portal}/api/v1/pools/buero/reconnect-pass",
                            headers=bearer(token))
        assert r.status == 409 and (await r.json())["error"] == "not_connected"

        tunnel = Tunnel(live.portal, token, "buero")
        port = await tunnel.start()
        try:
            issued = time.monotonic()
            reader, writer = await tunnel_viewer(port)
            first = tunnel.api.held_pass("buero")
            assert first and await tunnel_desktop_answers(reader, writer)
            deadline = time.monotonic() + 25
            while tunnel.api.held_pass("buero") == first and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            renewed = tunnel.api.held_pass("buero")
            assert renewed != first                      # renewed while connected
            await asyncio.sleep(max(0.0, issued + 31 - time.monotonic()))   # the first expired
            writer.close()
            await tunnel.settled()

            database.halt()
            r = await http.post(f"{live.portal}/api/v1/pools/buero/connect",
                                headers={**bearer(token), RECONNECT_PASS_HEADER: first})
            assert r.status == 503 and (await r.json())["error"] == "store_unavailable"
            reader, writer = await tunnel_viewer(port)   # the tunnel shows its renewed pass
            assert await tunnel_desktop_answers(reader, writer)
            writer.close()
        finally:
            await tunnel.close()
        database.run(processes)


async def test_a_desktop_admitted_during_an_outage_keeps_its_seat_once_the_database_is_back(
        own_live, own_postgres, tmp_path):
    """A thin client of the 8 a.m. storm: its ticket's redemption was refused while PostgreSQL
    was down, so it came back with its reconnect pass and the gateway admitted the outage
    ticket by its own memory. Once the database is back the broker must learn of that desktop:
    the session is connected and keeps its seat past the timer that ends a pending session,
    never a live stream whose seat counts as free."""
    database, processes = own_postgres
    pending_timeout = 10                                # the smallest the broker takes
    live = own_live(broker_options={**on_database(database, "seats", tmp_path),
                                    "pending_timeout": pending_timeout})
    async with live.client("10.92.0.1") as http:
        await live.enrol(http, "user6")
        token = await live.login(http, "user6")
        r = await http.post(f"{live.portal}/api/v1/pools/buero/connect", headers=bearer(token))
        issued = time.monotonic()
        first = await r.json()                          # its ticket is never redeemed
        database.halt()
        r = await http.post(f"{live.portal}/api/v1/pools/buero/connect",
                            headers={**bearer(token), RECONNECT_PASS_HEADER: first["reconnect_pass"]})
        outage = await r.json()
        assert r.status == 200 and outage["session"] == first["session"], outage
        ws = await http.ws_connect(live.gateway_ws, autoping=False)
        await ws.send_str(outage["ticket"])
        await rfb_viewer_handshake(AiohttpStream(ws))
        database.run(processes)

        async def state() -> str | None:
            r = await http.get(f"{live.portal}/api/v1/admin/tenants/{TENANT}/sessions",
                               headers=bearer(live.admin_token))
            assert r.status == 200, await r.text()
            return next((s["state"] for s in (await r.json())["sessions"]
                         if s["id"] == first["session"]), None)

        # past the pending timer and the broker's sweep after it
        await asyncio.sleep(max(0.0, issued + pending_timeout + HOUSEKEEPING_INTERVAL + 1
                                - time.monotonic()))
        assert await state() == "connected"
        assert await desktop_answers(ws)                # the same stream, still relayed
        await ws.close()



def test_a_broker_started_while_the_database_is_down_says_so_in_one_line(
        own_postgres, slapd, desktops, tmp_path):
    """Started by systemd while PostgreSQL is down: one line that says what is wrong, exit 1
    (the unit starts it again), no traceback and no secret."""
    from testbed.demo import write_config
    database, _ = own_postgres
    options = on_database(database, "down", tmp_path)
    config = write_config(tmp_path / "state", slapd=slapd, host="127.0.0.1",
                          portal_port=free_port(), gateway_port=free_port(),
                          group=slapd.group_dn("desktop-users"),
                          desktops=[DesktopEntry("desk1", desktops[0].port, 10,
                                                 desktops[0].password)],
                          broker_options=options)
    database.halt()
    done = subprocess.run([sys.executable, "-m", "pforte", "broker", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "the database cannot be reached" in lines[0], done.stderr
    assert database.password not in done.stderr



async def test_when_the_database_machine_burns_the_brokers_follow_the_promoted_standby(
        own_live, own_postgres, tmp_path):
    """A primary with a synchronous streaming standby, the brokers on a URL naming both
    (``target_session_attrs=read-write``). The primary stops hard (as a crash); the standby is
    promoted; the broker follows without a restart, nothing committed is lost (her second
    factor, her session), and the open desktop never noticed."""
    database, processes = own_postgres
    standby = database.standby(processes)
    try:
        database.commit_on("standby")
        options = on_database(database, "failover", tmp_path)
        options["database"] = options["database"].replace(
            f"127.0.0.1:{database.port}/",
            f"127.0.0.1:{database.port},127.0.0.1:{standby.port}/") + \
            "?target_session_attrs=read-write"
        live = own_live(broker_options=options)
        async with live.client("10.95.0.1") as http:
            token, session, ws = await open_session(live, http, "user1")
            async with answering_pings(ws):             # a failover may outlast a heartbeat
                database.halt(hard=True)                 # the database's machine burns
                standby.promote()
                answered = None
                for _ in range(100):                    # the broker's next connection finds it
                    r = await http.post(f"{live.portal}/api/v1/login",
                                        json={"username": f"user1@{DOMAIN}",
                                              "password": USERS["user1"][1]})
                    answered = r.status
                    if answered == 200:
                        break
                    await asyncio.sleep(0.2)
                assert answered == 200
                again = await live.login(http, "user1")  # her enrolment survived: committed
                r = await http.get(f"{live.portal}/api/v1/admin/tenants/{TENANT}/sessions",
                                   headers=bearer(live.admin_token))
                state = {s["id"]: s["state"] for s in (await r.json())["sessions"]}
            assert state.get(session) == "connected"
            r = await http.post(f"{live.portal}/api/v1/pools/buero/connect",
                                headers=bearer(again))
            assert r.status == 200 and (await r.json())["session"] == session
            assert await desktop_answers(ws)             # the desktop never noticed
            await ws.close()
    finally:
        standby.remove()


def test_in_chromium_the_page_brings_her_back_through_another_gateway_while_the_database_is_down(
        own_live, own_postgres, tmp_path, chromium):
    """The whole path a user meets: two brokers on PostgreSQL and two gateways behind HAProxy;
    she works on her desktop in Chromium; PostgreSQL stops; then her gateway is shut down. The
    page gets a ticket to the same desktop with its reconnect pass, through the other gateway."""
    import pyotp

    from testbed import wait_for_desktop_colour

    from .test_fleet import fleet_behind_haproxy

    database, processes = own_postgres
    live = own_live(broker_options=on_database(database, "browser", tmp_path))

    async def fleet_and_enrolment():
        fleet = await fleet_behind_haproxy(live)          # once HAProxy checked all four
        async with live.client("10.92.0.1") as http:
            await live.enrol(http, "user6")
        return fleet
    with ThreadPoolExecutor(1) as thread:          # playwright runs its own loop in this one
        ports, _, gateway2, _ = thread.submit(asyncio.run, fleet_and_enrolment()).result()

    page = chromium.new_context(locale="de-DE", viewport={"width": 1280, "height": 900}).new_page()
    page.goto(f"{live.portal}/login")
    page.get_by_label("Benutzername").fill(f"user6@{DOMAIN}")
    page.get_by_label("Passwort").fill(USERS["user6"][1])
    page.get_by_role("button", name="Anmelden").click()
    # the next step's code: this one's was used to enrol
    page.get_by_label("Einmalcode").fill(pyotp.TOTP(live.secrets["user6"]).at(time.time() + 30))
    page.get_by_role("button", name="Bestätigen").click()
    page.get_by_role("link", name="Öffnen").click()
    assert wait_for_desktop_colour(page) is not None
    assert page.evaluate("() => Object.keys(sessionStorage)") == [
        "pforte.reconnect-pass.buero"]

    database.halt()
    holder, other = ((live.gateway, ports["gateway2"]) if open_sessions(live.gateway_port)
                     else (gateway2, live.gateway_port))
    holder.send_signal(signal.SIGTERM)                      # drained: the page is told 1001
    deadline = time.monotonic() + DRAIN + 20
    while open_sessions(other) == 0 and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert open_sessions(other) == 1                        # on the other gateway now
    page.wait_for_function("() => document.body.dataset.state === 'connected'", timeout=10_000)
    assert wait_for_desktop_colour(page) is not None        # her desktop, on her screen
    assert page.locator("#status").inner_text() == "Verbunden"
    page.screenshot(path=str(SCREENSHOTS / "outage-reconnect.png"))
    page.context.close()


def open_sessions(gateway_port: int) -> int:
    """The sessions a gateway holds, from its metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{gateway_port}/metrics", timeout=5).read()
    for line in text.decode().splitlines():
        if line.startswith("pforte_gateway_sessions_open "):
            return int(float(line.split()[1]))
    return 0

