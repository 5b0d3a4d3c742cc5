"""The boot agent: its retry schedule (pure) and a boot against the real broker, also when the
broker comes up only after the thin client."""

from __future__ import annotations

import asyncio
import collections
import os
import random
import secrets
import sys
import time
import subprocess
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import given, strategies as st

from broker import mfa
from broker.config import load_config
from testbed.demo import TENANT, DesktopEntry, write_config
from broker.service import Broker
from broker.store import OPERATOR, Store
from testbed import (CHROMIUM, CHROMIUM_ARGS, BreakableProxy, Dnsmasq, Processes,
                            XvncDesktop, free_port, wait_for_port)
from client.agent import (MAX_DELAY, SRV_SERVICE, TEXTS, Agent, Refused, backoff,
                                   choose_srv, discover)

from .conftest import USERS, need

EXAMPLES = Path(__file__).resolve().parent.parent / "client_profiles" / "examples"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "var" / "screenshots"


@given(st.integers(0, 50), st.integers(0, 2**32))
def test_waits_grow_but_stay_bounded(attempt, seed):
    delay = backoff(attempt, random.Random(seed))
    assert 0 <= delay <= min(MAX_DELAY, 0.5 * 2 ** attempt)


@given(st.integers(0, 50), st.integers(0, 2**32), st.integers(1, 30))
def test_a_busy_brokers_retry_after_is_waited_and_spread(attempt, seed, retry_after):
    delay = backoff(attempt, random.Random(seed), at_least=retry_after)
    assert retry_after <= delay <= 2 * retry_after


def test_neighbours_do_not_retry_in_lockstep():
    schedules = {tuple(round(backoff(a, random.Random(seed)), 6) for a in range(6))
                 for seed in range(50)}
    assert len(schedules) == 50


def user_answers(secret: str, on_ask: Callable[[str], None] = lambda prompt: None,
                 login: str = "anna"):
    """The user at the thin client (anna unless told): answers the agent's questions, which
    ``on_ask`` sees first (as "username", "password" or "code")."""
    keys = {texts[key]: key for texts in TEXTS.values() for key in ("username", "password", "code")}
    answers = {"username": f"{login}@musterstadt.example", "password": USERS[login][1]}

    def ask(prompt: str, secret_answer: bool) -> str:
        key = keys[prompt]
        on_ask(key)
        if key == "code":
            return mfa.current_code(secret, time.time())
        return answers[key]
    return ask


def test_srv_records_are_chosen_by_priority_then_by_weight():
    rng = random.Random(4)
    records = [(20, 100, "spare", 443), (10, 30, "a", 443), (10, 10, "b", 443), (10, 0, "c", 443)]
    picks = collections.Counter(choose_srv(records, rng)[2] for _ in range(4000))
    assert "spare" not in picks                        # a higher priority only when alone
    assert 2.4 < picks["a"] / picks["b"] < 3.7         # 30 : 10
    assert picks["c"] < 40                             # weight 0: rarely
    assert choose_srv([(20, 0, "spare", 443)], rng)[2] == "spare"


async def boot_agent(inst, url: str | None, state: Path, anna_secret: str, messages: list[str],
                     device_class: str = "thin-client", **options) -> tuple[Agent, list[str]]:
    _, body = await _admin(inst, "POST", f"/api/v1/admin/tenants/{TENANT}/enrolment-codes",
                           {"site": "rathaus-front-office", "device_class": device_class})
    agent = Agent(url, state, user_answers(anna_secret), messages.append, "Counter 7",
                  body["code"], rng=random.Random(1), give_up_after=30.0, **options)
    return agent, await agent.boot()


async def first_bytes_through(command: list[str]) -> bytes:
    """The first bytes a native viewer would read from the connection file's local tunnel."""
    text = Path(command[1]).read_text()
    port = int(text.split("::")[1].split()[0])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await asyncio.wait_for(reader.readexactly(12), 10)
    finally:
        writer.close()


async def _admin(inst, method, path, body=None):
    r = await inst.http.request(method, f"{inst.base_url}{path}", json=body,
                                headers={"Authorization": "Bearer op"})
    return r.status, await r.json()


@pytest.fixture
async def fleet(make_installation):
    inst = await make_installation(broker_options={"profiles_dir": str(EXAMPLES)})
    await inst.broker.store.admin.create_token("op", OPERATOR, "t", now=time.time())
    secret = mfa.new_secret()
    await inst.broker.second_factor.import_enrolment(TENANT, "anna", secret)
    return inst, secret


@pytest.mark.integration
async def test_a_thin_client_boots_into_its_viewer_through_the_tunnel(fleet, tmp_path):
    inst, secret = fleet
    messages: list[str] = []
    agent, command = await boot_agent(inst, inst.base_url, tmp_path, secret, messages)
    try:
        assert command[0] == "vncviewer"                       # the profile's native viewer
        text = Path(command[1]).read_text()
        assert "ServerName=127.0.0.1::" in text and "FullScreenMode=All" in text
        assert (tmp_path / "device-credential").stat().st_mode & 0o077 == 0
        assert await first_bytes_through(command) == b"RFB 003.008\n"
    finally:
        await agent.close()
    # the next boot uses the stored credential: no new enrolment code needed
    again = Agent(inst.base_url, tmp_path, lambda p, s: "", messages.append)
    try:
        credential = await again.credential()
        assert credential == (tmp_path / "device-credential").read_text()
    finally:
        await again.close()


@pytest.mark.integration
async def test_the_agent_waits_for_a_broker_that_comes_up_later(fleet, tmp_path):
    inst, secret = fleet
    port = free_port()                      # nothing listens here yet: the broker is "down"
    messages: list[str] = []
    broker_port = int(inst.base_url.rsplit(":", 1)[1])

    async def bring_up() -> BreakableProxy:
        await asyncio.sleep(1.5)
        return BreakableProxy(broker_port, port=port)
    up = asyncio.ensure_future(bring_up())
    agent, command = await boot_agent(inst, f"http://127.0.0.1:{port}", tmp_path, secret,
                                      messages)
    proxy = await up
    try:
        assert command[0] == "vncviewer"
        # before the device's profile is known the agent speaks German (the default)
        assert any("nicht erreichbar" in m and "Nächster Versuch" in m for m in messages)
    finally:
        await agent.close()
        proxy.stop()


@pytest.mark.integration
async def test_a_revoked_device_is_told_plainly_and_not_retried(fleet, tmp_path):
    inst, secret = fleet
    agent, _ = await boot_agent(inst, inst.base_url, tmp_path, secret, [])
    await agent.close()
    _, devices = await _admin(inst, "GET", f"/api/v1/admin/tenants/{TENANT}/devices")
    await _admin(inst, "POST", f"/api/v1/admin/tenants/{TENANT}/devices/"
                               f"{devices['devices'][0]['id']}/revoke")
    again = Agent(inst.base_url, tmp_path, lambda p, s: "", lambda m: None)
    try:
        with pytest.raises(Refused) as refused:
            await again.boot()
        assert refused.value.code == "device_revoked"
    finally:
        await again.close()


@pytest.mark.integration
async def test_a_thin_client_finds_its_broker_by_a_dns_srv_record(fleet, tmp_path):
    inst, secret = fleet
    broker_port = int(inst.base_url.rsplit(":", 1)[1])
    processes = Processes()
    dns = Dnsmasq(tmp_path / "dns", {f"{SRV_SERVICE}.rathaus.example": ("localhost", broker_port)})
    dns.start(processes)
    rng = random.Random(3)

    def find(domain: str):
        # plain HTTP only because the test broker has no certificate (the agent's CLI: HTTPS)
        return lambda: discover(domain, rng, scheme="http", nameserver=("127.0.0.1", dns.port))
    try:
        agent, command = await boot_agent(inst, None, tmp_path / "tc", secret, [],
                                          find_broker=find("rathaus.example"))
        try:
            assert agent.broker_url == f"http://localhost:{broker_port}"
            assert await first_bytes_through(command) == b"RFB 003.008\n"
        finally:
            await agent.close()
        lost = Agent(None, tmp_path / "lost", user_answers(secret), lambda m: None,
                     find_broker=find("schule.example"))
        try:
            with pytest.raises(Refused) as refused:  # a setup mistake: told, not retried
                await lost.boot()
            assert refused.value.code == "no_srv_record"
        finally:
            await lost.close()
    finally:
        processes.stop()


@pytest.mark.integration
async def test_a_thin_client_survives_a_broker_restart_during_boot(tmp_path, slapd, desktops,
                                                                  database):
    """The real ``pforte broker`` process is stopped while the user types the one-time code
    (the password was accepted) and started again a second later; the agent keeps trying."""
    portal, gateway = free_port(), free_port()
    path = write_config(
        tmp_path, slapd=slapd, group=slapd.group_dn("desktop-users"), host="127.0.0.1",
        portal_port=portal, gateway_port=gateway,
        desktops=[DesktopEntry("desk1", desktops[0].port, 4, desktops[0].password)],
        broker_options={"profiles_dir": str(EXAMPLES), **database()})
    config = load_config(path)
    secret, code = mfa.new_secret(), "restart-code-1"
    broker = Broker(config, Store.for_config(config))
    await broker.store.open()
    await broker.second_factor.import_enrolment(TENANT, "anna", secret)
    await broker.store.devices.create_enrolment_code(code, TENANT, "rathaus-front-office", "thin-client",
                                             expires=time.time() + 600)
    await broker.close()
    processes = Processes()
    python = [sys.executable, "-m", "pforte"]

    def start_broker() -> subprocess.Popen:
        proc = processes.start([*python, "broker", "--config", str(path)],
                               log=tmp_path / "broker.log")
        wait_for_port("127.0.0.1", portal, proc, what="broker")
        return proc
    running = [start_broker()]
    gw = processes.start([*python, "gateway", "--config", str(path)], log=tmp_path / "gw.log")
    wait_for_port("127.0.0.1", gateway, gw, what="gateway")
    loop = asyncio.get_running_loop()
    restarted = loop.create_future()

    def restart() -> None:
        running.append(start_broker())
        restarted.set_result(None)

    def on_ask(prompt: str) -> None:
        if prompt == "code" and len(running) == 1:
            processes.stop(running[0])
            loop.call_later(1.0, restart)
    messages: list[str] = []
    agent = Agent(f"http://127.0.0.1:{portal}", tmp_path / "tc", user_answers(secret, on_ask),
                  messages.append, "Counter 3", code, rng=random.Random(5), give_up_after=30.0)
    try:
        command = await agent.boot()
        assert restarted.done()
        assert any(m.startswith(TEXTS["de"]["checking"]) and "nicht erreichbar" in m
                   for m in messages), messages  # in the profile's language
        assert command[0] == "vncviewer"
        assert await first_bytes_through(command) == b"RFB 003.008\n"
    finally:
        await agent.close()
        processes.stop()


@pytest.mark.integration
async def test_a_browser_kiosk_signs_in_on_the_portal_in_its_language_and_opens_the_desktop(
        fleet, tmp_path):
    inst, secret = fleet
    agent, command = await boot_agent(inst, inst.base_url, tmp_path, secret, [],
                                      device_class="kiosk-browser")
    await agent.close()
    assert command[:2] == ["chromium", "--kiosk"]
    assert command[-1] == f"{inst.base_url}/login?kiosk=1"  # the base profile: auto_connect
    # Run that very command in Debian's chromium (headless here) and read the page it shows.
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, *CHROMIUM_ARGS, *command[1:-1], "--dump-dom", command[-1],
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    page, _ = await asyncio.wait_for(proc.communicate(), 60)
    page = page.decode()
    assert 'lang="de"' in page and "Anmelden" in page and 'type="password"' in page
    # The profile says auto_connect: after password and code the kiosk is in the only desktop.
    from playwright.async_api import async_playwright
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM,
                                          args=[*CHROMIUM_ARGS, *command[1:-1]])
        try:
            page = await (await browser.new_context(locale="de-DE")).new_page()
            await page.goto(command[-1])
            await page.get_by_label("Benutzername").fill("anna@musterstadt.example")
            await page.get_by_label("Passwort").fill("Anna-pass-1")
            await page.get_by_role("button", name="Anmelden").click()
            await page.get_by_label("Einmalcode").fill(mfa.current_code(secret, time.time()))
            await page.get_by_role("button", name="Bestätigen").click()
            await page.wait_for_url(f"{inst.base_url}/desktop/buero")
            await page.locator("#status", has_text="Verbunden").wait_for()
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SCREENSHOTS / "kiosk-desktop.png"))
            await page.get_by_role("button", name="Abmelden").click()  # the next user's turn
            await page.wait_for_url(f"{inst.base_url}/login")
        finally:
            await browser.close()


class Stop(Exception):
    """The test's way to end the agent's loop: the next user never comes."""


@pytest.mark.integration
async def test_after_logoff_the_next_user_signs_in_or_the_device_shuts_down(make_installation,
                                                                            tmp_path):
    import shutil
    profiles = tmp_path / "profiles"
    shutil.copytree(EXAMPLES, profiles)
    (profiles / "classes" / "shared-counter.toml").write_text(
        'viewer = "vnc"\n[kiosk]\non_logoff = "shutdown"\n')
    inst = await make_installation(broker_options={"profiles_dir": str(profiles)})
    await inst.broker.store.admin.create_token("op", OPERATOR, "t", now=time.time())
    secret = mfa.new_secret()
    await inst.broker.second_factor.import_enrolment(TENANT, "anna", secret)
    sessions: list[bytes] = []

    async def viewer(command: list[str]) -> None:   # the user works, then closes the viewer
        sessions.append(await first_bytes_through(command))

    def until_second_user(prompt: str) -> None:
        if prompt == "username" and len(sessions) == 1:
            raise Stop
    _, body = await _admin(inst, "POST", f"/api/v1/admin/tenants/{TENANT}/enrolment-codes",
                           {"site": "rathaus-front-office", "device_class": "thin-client"})
    agent = Agent(inst.base_url, tmp_path / "a", user_answers(secret, until_second_user),
                  lambda m: None, "Counter 1", body["code"], rng=random.Random(2))
    try:
        with pytest.raises(Stop):  # on_logoff = "login" (the base profile): the next sign-in
            await agent.serve(viewer)
        assert sessions == [b"RFB 003.008\n"] and agent.tunnel is None
    finally:
        await agent.close()
    _, body = await _admin(inst, "POST", f"/api/v1/admin/tenants/{TENANT}/enrolment-codes",
                           {"site": "rathaus-front-office", "device_class": "shared-counter"})
    bernd = mfa.new_secret()  # (anna's code of this half-minute is spent)
    await inst.broker.second_factor.import_enrolment(TENANT, "bernd", bernd)
    agent = Agent(inst.base_url, tmp_path / "b", user_answers(bernd, login="bernd"),
                  lambda m: None, "Counter 2", body["code"], rng=random.Random(2))
    try:
        assert await agent.serve(viewer) == "shutdown" and len(sessions) == 2
    finally:
        await agent.close()


@pytest.mark.integration
async def test_a_dropped_connection_brings_the_viewer_back_into_the_same_session(
        make_installation, tmp_path):
    gateway_port = free_port()
    network = [BreakableProxy(gateway_port)]      # between the thin client and the gateway
    proxy_port = network[0].port
    inst = await make_installation(broker_options={"profiles_dir": str(EXAMPLES)},
                                   gateway_port=gateway_port,
                                   gateway_url=f"ws://127.0.0.1:{proxy_port}/ws")
    await inst.broker.store.admin.create_token("op", OPERATOR, "t", now=time.time())
    secret = mfa.new_secret()
    await inst.broker.second_factor.import_enrolment(TENANT, "anna", secret)
    seen: list[bytes] = []

    async def viewer(command: list[str]) -> None:
        port = int(Path(command[1]).read_text().split("::")[1].split()[0])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        seen.append(await asyncio.wait_for(reader.readexactly(12), 10))
        if len(seen) == 1:   # the network fails for longer than the tunnel tries to resume
            network.pop().stop()
            assert await asyncio.wait_for(reader.read(), 20) == b""  # the tunnel gave up
            network.append(BreakableProxy(gateway_port, port=proxy_port))  # the network is back
        writer.close()       # second time round: the user closes the viewer

    def until_second_user(prompt: str) -> None:
        if prompt == "username" and len(seen) == 2:
            raise Stop
    _, body = await _admin(inst, "POST", f"/api/v1/admin/tenants/{TENANT}/enrolment-codes",
                           {"site": "rathaus-front-office", "device_class": "thin-client"})
    messages: list[str] = []
    agent = Agent(inst.base_url, tmp_path, user_answers(secret, until_second_user),
                  messages.append, "Counter 4", body["code"], rng=random.Random(6),
                  resume_within=1.0)
    try:
        with pytest.raises(Stop):
            await agent.serve(viewer)
        assert seen == [b"RFB 003.008\n"] * 2
        assert any(m.startswith(TEXTS["de"]["interrupted"][:40]) for m in messages), messages
        sessions = await inst.broker.store.sessions.live(TENANT)
        assert len([s for s in sessions if s.login == "anna"]) == 1   # the same session
    finally:
        await agent.close()
        network.pop().stop()


@pytest.mark.integration
async def test_a_user_without_a_desktop_is_told_and_the_next_user_signs_in(fleet, tmp_path):
    inst, _ = fleet
    clara = mfa.new_secret()                    # in no desktop group
    await inst.broker.second_factor.import_enrolment(TENANT, "clara", clara)
    asked: list[str] = []

    def next_user(prompt: str) -> None:
        asked.append(prompt)
        if asked.count("username") == 2:
            raise Stop
    _, body = await _admin(inst, "POST", f"/api/v1/admin/tenants/{TENANT}/enrolment-codes",
                           {"site": "rathaus-front-office", "device_class": "thin-client"})
    messages: list[str] = []
    agent = Agent(inst.base_url, tmp_path, user_answers(clara, next_user, login="clara"),
                  messages.append, "Counter 5", body["code"], rng=random.Random(7))

    async def viewer(command: list[str]) -> None:
        raise AssertionError("clara has no desktop to open")
    try:
        with pytest.raises(Stop):
            await agent.serve(viewer)
        assert TEXTS["de"]["no_desktop"] in messages and agent.token is None
    finally:
        await agent.close()


def test_of_several_desktops_the_user_chooses_one(tmp_path):
    answers = iter(["", "3", "zwei", "2"])
    agent = Agent("http://broker", tmp_path, lambda prompt, secret: next(answers), print)
    pools = [{"id": "buero", "name": "Büro"}, {"id": "schule", "name": "Schule"}]
    assert agent.choose_pool(pools) == "schule"


async def x_output(*command: str) -> str:
    proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.DEVNULL)
    out, _ = await proc.communicate()
    return out.decode(errors="replace")


async def x_screen_size(display: int) -> str:
    info = await x_output("xdpyinfo", "-display", f":{display}")
    return next(line.split()[1] for line in info.splitlines() if "dimensions:" in line)


@pytest.mark.integration
async def test_the_native_viewer_shows_the_desktop_on_the_thin_clients_screen_as_profiled(
        make_installation, tmp_path, monkeypatch):
    """The agent's own command: TigerVNC's vncviewer on the thin client's screen (an Xvnc here),
    through the tunnel and the gateway to a desktop of its own (the viewer may resize it). An
    admin's message to the session appears in a window over the viewer, in German."""
    need("vncviewer", "xwininfo", "xdpyinfo", "xmessage")
    processes = Processes()
    screen = XvncDesktop(tmp_path / "screen", "Thin client", "#000000", secrets.token_hex(4))
    desk = XvncDesktop(tmp_path / "desk", "Counter Desk", "#6a1b9a", secrets.token_hex(4))
    viewer = None
    try:
        screen.start(processes)
        desk.start(processes)
        inst = await make_installation(broker_options={"profiles_dir": str(EXAMPLES)},
                                       desktops=[DesktopEntry("counter", desk.port, 5,
                                                              desk.password)])
        await inst.broker.store.admin.create_token("op", OPERATOR, "t", now=time.time())
        secret = mfa.new_secret()
        await inst.broker.second_factor.import_enrolment(TENANT, "anna", secret)
        messages: list[str] = []
        agent, command = await boot_agent(inst, inst.base_url, tmp_path / "tc", secret, messages)
        try:
            assert command[0] == "vncviewer"
            need("setxkbmap")
            await x_output(*agent.keyboard, "-display", f":{screen.display}")
            query = await x_output("setxkbmap", "-query", "-display", f":{screen.display}")
            assert "layout:     de" in query             # the thin-client class's keyboard
            log = tmp_path / "vncviewer.log"
            with open(log, "wb") as out:
                viewer = await asyncio.create_subprocess_exec(
                    *command, env={**os.environ, "DISPLAY": f":{screen.display}"},
                    stdout=out, stderr=out)
            deadline = time.monotonic() + 20
            while " 1024x768+0+0 " not in await x_output(
                    "xwininfo", "-root", "-children", "-display", f":{screen.display}"):
                # a window over the whole screen: the viewer is up, full screen as profiled
                # (without FullScreen it would be a titled window below the top edge)
                assert time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.2)
            deadline = time.monotonic() + 20
            while await x_screen_size(desk.display) != "1920x1080":
                # the viewer asked the desktop for the class's resolution, through the gateway
                assert time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.2)

            monkeypatch.setenv("DISPLAY", f":{screen.display}")   # the agent's screen
            _, body = await _admin(inst, "GET", f"/api/v1/admin/tenants/{TENANT}/sessions")
            session = body["sessions"][0]["id"]
            assert body["sessions"][0]["device"] == "Counter 7"   # which thin client
            status, body = await _admin(
                inst, "POST", f"/api/v1/admin/tenants/{TENANT}/sessions/{session}/message",
                {"text": "Bitte speichern, Neustart um 12 Uhr."})
            assert (status, body) == (200, {"reached": True})
            deadline = time.monotonic() + 10
            while '"Pforte"' not in await x_output("xwininfo", "-root", "-tree", "-display",
                                                   f":{screen.display}"):
                assert time.monotonic() < deadline, "no notice over the viewer"
                await asyncio.sleep(0.2)
            assert "Hinweis Ihres IT-Services: Bitte speichern, Neustart um 12 Uhr." in messages
        finally:
            if viewer is not None:
                viewer.terminate()
                await viewer.wait()
            await agent.close()
    finally:
        processes.stop()


@pytest.mark.integration
async def test_a_mistyped_enrolment_code_is_asked_for_again(fleet, tmp_path):
    inst, secret = fleet
    _, body = await _admin(inst, "POST", f"/api/v1/admin/tenants/{TENANT}/enrolment-codes",
                           {"site": "rathaus-front-office", "device_class": "thin-client"})
    typed = iter(["abcd-efgh-jkmn", body["code"]])
    messages: list[str] = []
    agent = Agent(inst.base_url, tmp_path, lambda prompt, secret_answer: next(typed),
                  messages.append, "Counter 8", rng=random.Random(8))
    try:
        assert (await agent.credential()).startswith("pfd_")
        assert len(messages) == 1 and "Registrierungscode" in messages[0]  # told, in German
    finally:
        await agent.close()
