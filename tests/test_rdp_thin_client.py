"""An RDP desktop on a town hall's thin client, with real parts: FreeRDP's ``xfreerdp`` under
Xvfb opens the ``.rdp`` file the broker renders for the device, connects to the local tunnel
(``pforte connect``'s), and through the gateway reaches an ``xrdp`` host — signed in by the
gateway with the password the user gave at sign-in (the viewer is given none: not in its
arguments, not in its file). What the screen shows and what is typed on it is judged on the
real pixels and on the desktop's own record."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest

from broker import mfa
from broker.store import OPERATOR
from client.agent import VIEWER_OPTIONS
from client.tunnel import Tunnel
from testbed import (BreakableProxy, XrdpDesktop, XvfbScreen, XvncDesktop, free_port, hex_rgb,
                     require)
from testbed.demo import TENANT, DesktopEntry
from wire.resume import Notice

from .conftest import USERS, need
from .test_agent import EXAMPLES, boot_agent

pytestmark = pytest.mark.e2e

COLOUR = "#6a1b9a"


@pytest.fixture(scope="module")
def rdp_host(processes, tmp_path_factory) -> XrdpDesktop:
    need("xrdp", "Xvnc", "xterm")
    state = tmp_path_factory.mktemp("xrdp-thin")
    host = XrdpDesktop(state, XvncDesktop(state / "desktop", "Rathaus Windows", COLOUR,
                                          password=USERS["anna"][1], keyboard="de"))
    host.start(processes)
    return host


@pytest.fixture
def screen(processes, tmp_path) -> XvfbScreen:
    need("Xvfb", "xfreerdp", "xdotool")
    screen = XvfbScreen(tmp_path / "xvfb")
    screen.start(processes)
    return screen


async def wait_for_colour(screen: XvfbScreen, colour: str, at=(1200, 700),
                          timeout: float = 30.0) -> tuple[int, int, int] | None:
    want = hex_rgb(colour)
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = await asyncio.to_thread(screen.pixel, *at)
        if all(abs(a - b) <= 8 for a, b in zip(seen, want)):
            return seen
        await asyncio.sleep(0.2)
    return None


async def test_xfreerdp_opens_the_desktop_through_the_tunnel_signed_in_once(
        make_installation, rdp_host, screen, processes, tmp_path):
    inst = await make_installation(desktops=[DesktopEntry(
        "win1", rdp_host.port, 10, None, "rdp",
        options={"certificate_sha256": rdp_host.certificate_sha256})])
    token = await inst.login("anna")
    tunnel = Tunnel(inst.base_url, token, "buero")
    port = await tunnel.start()
    r = await inst.http.post(f"{inst.base_url}/api/v1/pools/buero/connection-file",
                             json={"viewer": "rdp", "port": port},
                             headers={"Authorization": f"Bearer {token}"})
    assert r.status == 200, await r.text()
    body = await r.json()
    rdp_file = tmp_path / body["file_name"]
    rdp_file.write_text(body["content"])
    assert USERS["anna"][1] not in body["content"]
    command = [require("xfreerdp"), str(rdp_file), *VIEWER_OPTIONS["rdp"], "/size:1280x800"]
    viewer = processes.start(command, env=screen.env, log=tmp_path / "xfreerdp.log")
    try:
        seen = await wait_for_colour(screen, COLOUR)
        log = (tmp_path / "xfreerdp.log").read_text(errors="replace")
        assert seen is not None, f"the desktop did not appear; xfreerdp said:\n{log[-3000:]}"
        assert USERS["anna"][1] not in " ".join(command)
        # no window manager on either screen: the focus follows the pointer, onto the xterm
        await asyncio.to_thread(screen.click, 200, 80)
        await asyncio.sleep(0.5)
        before = rdp_host.desktop.typed.read_text("utf-8")
        await asyncio.to_thread(screen.type, "Hallo Rathaus")
        await asyncio.to_thread(screen.key, "Return")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and \
                "Hallo Rathaus" not in rdp_host.desktop.typed.read_text("utf-8")[len(before):]:
            await asyncio.sleep(0.1)
        assert "Hallo Rathaus" in rdp_host.desktop.typed.read_text("utf-8")[len(before):]
    finally:
        processes.stop(viewer)
        await tunnel.close()


async def test_a_network_drop_is_bridged_and_xfreerdp_carries_on_in_the_same_session(
        make_installation, rdp_host, screen, processes, tmp_path):
    """The network between the thin client and the gateway fails: the tunnel reattaches the
    stream (the gateway held the host's TLS session), and ``xfreerdp`` never notices — it
    keeps running, and what is typed afterwards arrives on the same desktop."""
    gateway_port = free_port()
    network = BreakableProxy(gateway_port)
    try:
        inst = await make_installation(
            gateway_port=gateway_port, gateway_url=f"ws://127.0.0.1:{network.port}/ws",
            desktops=[DesktopEntry("win1", rdp_host.port, 10, None, "rdp",
                                   options={"certificate_sha256": rdp_host.certificate_sha256})])
        token = await inst.login("anna")
        tunnel = Tunnel(inst.base_url, token, "buero")
        port = await tunnel.start()
        viewer = processes.start([require("xfreerdp"), f"/v:127.0.0.1:{port}",
                                  *VIEWER_OPTIONS["rdp"], "/size:1280x800"],
                                 env=screen.env, log=tmp_path / "xfreerdp.log")
        try:
            assert await wait_for_colour(screen, COLOUR) is not None, \
                (tmp_path / "xfreerdp.log").read_text(errors="replace")[-3000:]
            await asyncio.to_thread(screen.click, 200, 80)
            await asyncio.sleep(0.5)
            network.cut()                                 # no goodbye, bytes in flight
            await asyncio.sleep(0.5)
            before = rdp_host.desktop.typed.read_text("utf-8")
            await asyncio.to_thread(screen.type, "Nach dem Abbruch")
            await asyncio.to_thread(screen.key, "Return")
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and "Nach dem Abbruch" not in \
                    rdp_host.desktop.typed.read_text("utf-8")[len(before):]:
                await asyncio.sleep(0.1)
            assert "Nach dem Abbruch" in rdp_host.desktop.typed.read_text("utf-8")[len(before):]
            assert viewer.poll() is None, "xfreerdp noticed the drop"
            sessions = await inst.broker.store.sessions.live(TENANT)
            assert [s.state.value for s in sessions] == ["connected"]
        finally:
            processes.stop(viewer)
            await tunnel.close()
    finally:
        network.stop()


async def test_a_drain_reaches_the_thin_client_and_its_deadline_ends_the_session(
        make_installation, rdp_host, screen, processes, tmp_path):
    """The admin drains the RDP host with a deadline and words: they reach the thin client on
    its stream (the agent shows them over the viewer, as for VNC), and at the deadline the
    session is logged off and xfreerdp's connection ends."""
    inst = await make_installation(desktops=[DesktopEntry(
        "win1", rdp_host.port, 10, None, "rdp",
        options={"certificate_sha256": rdp_host.certificate_sha256})])
    token = await inst.login("anna")
    notices: list[Notice] = []
    tunnel = Tunnel(inst.base_url, token, "buero", on_notice=notices.append)
    port = await tunnel.start()
    viewer = processes.start([require("xfreerdp"), f"/v:127.0.0.1:{port}",
                              *VIEWER_OPTIONS["rdp"], "/size:1280x800"],
                             env=screen.env, log=tmp_path / "xfreerdp.log")
    try:
        assert await wait_for_colour(screen, COLOUR) is not None
        await inst.broker.store.admin.create_token("op", OPERATOR, "t", now=time.time())
        r = await inst.http.post(
            f"{inst.base_url}/api/v1/admin/tenants/{TENANT}/hosts/win1/actions/drain",
            json={"deadline_seconds": 8, "message": "Updates heute um 22 Uhr."},
            headers={"Authorization": "Bearer op"})
        assert r.status == 200, await r.text()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not notices:
            await asyncio.sleep(0.1)
        assert notices and notices[0].text == "Updates heute um 22 Uhr." and notices[0].deadline
        while time.monotonic() < deadline and await inst.broker.store.sessions.live(TENANT):
            await asyncio.sleep(0.2)
        assert await inst.broker.store.sessions.live(TENANT) == []
        while time.monotonic() < deadline and await wait_for_colour(screen, COLOUR, timeout=0.2):
            await asyncio.sleep(0.2)          # the desktop goes from the screen
        assert await wait_for_colour(screen, COLOUR, timeout=0.2) is None
    finally:
        processes.stop(viewer)
        await tunnel.close()


async def test_the_boot_agent_starts_xfreerdp_into_the_rdp_desktop(make_installation, rdp_host,
                                                                  screen, processes, tmp_path):
    """The thin client's own way: the agent enrols, signs Anna in (password, one-time code),
    opens the tunnel and names ``xfreerdp`` with the broker's ``.rdp`` file for a device whose
    class says RDP; that command, run on the thin client's screen, shows her desktop."""
    profiles = tmp_path / "profiles"
    shutil.copytree(EXAMPLES, profiles)
    (profiles / "classes" / "thin-client.toml").write_text(
        'viewer = "rdp"\n[display]\nresolution = "1280x800"\nfullscreen = true\n')
    inst = await make_installation(
        broker_options={"profiles_dir": str(profiles)},
        desktops=[DesktopEntry("win1", rdp_host.port, 10, None, "rdp",
                               options={"certificate_sha256": rdp_host.certificate_sha256})])
    await inst.broker.store.admin.create_token("op", OPERATOR, "t", now=time.time())
    secret = mfa.new_secret()
    await inst.broker.second_factor.import_enrolment(TENANT, "anna", secret)
    agent, command = await boot_agent(inst, inst.base_url, tmp_path / "tc", secret, [])
    try:
        assert command[0] == "xfreerdp" and command[1].endswith(".rdp")
        assert USERS["anna"][1] not in " ".join(command)
        assert USERS["anna"][1] not in Path(command[1]).read_text()
        viewer = processes.start([require("xfreerdp"), *command[1:]], env=screen.env,
                                 log=tmp_path / "xfreerdp.log")
        try:
            assert await wait_for_colour(screen, COLOUR) is not None, \
                (tmp_path / "xfreerdp.log").read_text(errors="replace")[-3000:]
        finally:
            processes.stop(viewer)
    finally:
        await agent.close()
