"""End to end: the README's demo command, then Debian chromium logs in with password and TOTP,
opens a desktop, and the noVNC canvas shows that desktop's background colour."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pyotp
import pytest

import urllib.request

from testbed import (BreakableProxy, DemoProcess, free_port,
                            hex_rgb, wait_for_desktop_colour)

from .conftest import need

pytestmark = pytest.mark.e2e

SCREENSHOTS = Path(__file__).resolve().parent.parent / "var" / "screenshots"


@pytest.fixture(scope="module")
def network():
    """The network between browser and gateway: a proxy the tests can cut."""
    proxy = BreakableProxy(free_port())
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def demo(tmp_path_factory, network):
    """``pforte demo`` as a user runs it, on free ports, its gateway reached through ``network``;
    stopped with SIGINT like Ctrl-C."""
    need("slapd", "Xvnc")
    demo = DemoProcess(tmp_path_factory.mktemp("demo"), sys.executable,
                       "--gateway-port", str(network.target_port),
                       "--gateway-url", f"ws://127.0.0.1:{network.port}/ws")
    yield demo.wait_ready()
    assert demo.stop() in (0, 130)


def new_page(chromium, locale: str = "en-GB"):
    """A page in a fresh context (own cookies), with the browser language set to ``locale``."""
    context = chromium.new_context(locale=locale, viewport={"width": 1280, "height": 900})
    return context.new_page()


_USED_STEPS: set[tuple[str, int]] = set()


def unused_code(user: dict) -> str:
    """A one-time code of the user's the broker has not seen yet (each 30-second step counts
    once, and the current step and the next are accepted): tests that sign the same user in
    again take the next step, or wait for one."""
    while True:
        now = int(time.time()) // 30
        for step in (now, now + 1):
            if (user["login"], step) not in _USED_STEPS:
                _USED_STEPS.add((user["login"], step))
                return pyotp.TOTP(user["totp_secret"]).at(step * 30)
        time.sleep(1)


def login(page, demo, user: dict) -> None:
    page.goto(demo["portal_url"])
    page.get_by_label("Username").fill(user["login"])
    page.get_by_label("Password").fill(user["password"])
    page.get_by_role("button", name="Sign in").click()


def signed_in(chromium, demo, name: str):
    """A page (English) where the demo user ``name`` signed in with password and code."""
    user = next(u for u in demo["users"] if u["login"].startswith(f"{name}@"))
    page = new_page(chromium)
    login(page, demo, user)
    page.get_by_label("One-time code").fill(unused_code(user))
    page.get_by_role("button", name="Confirm").click()
    return page


def test_a_user_logs_in_with_password_and_totp_and_sees_the_desktop(demo, chromium):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = signed_in(chromium, demo, "anna")
    page.get_by_role("link", name="Open Büro-Desktop").click()
    colour = wait_for_desktop_colour(page)
    page.screenshot(path=str(SCREENSHOTS / "desktop.png"))
    backgrounds = {hex_rgb(d["background"]): d["name"] for d in demo["desktops"]}
    assert colour in backgrounds, f"canvas shows {colour}, not one of {backgrounds}"
    assert page.locator("#status").inner_text() == "Connected"
    page.context.close()


def test_the_demos_windows_pool_opens_her_rdp_desktop_signed_in(demo, chromium):
    """The demo's RDP pool (xrdp in front of a desktop that opens with Anna's directory
    password only): she opens it from the portal and the gateway signs her in."""
    windows = next((d for d in demo["desktops"] if d.get("protocol") == "rdp"), None)
    if windows is None:
        pytest.skip("not installed: xrdp (scripts/setup installs it)")
    page = signed_in(chromium, demo, "anna")
    page.get_by_role("link", name="Open Windows-Desktop").click()
    colour = wait_for_desktop_colour(page)
    page.screenshot(path=str(SCREENSHOTS / "demo-windows-desktop.png"))
    want = hex_rgb(windows["background"])
    assert colour and all(abs(a - b) <= 8 for a, b in zip(colour, want)), colour
    assert page.locator("#status").inner_text() == "Connected"
    page.context.close()


def test_a_new_user_enrols_in_the_browser(demo, chromium):
    dora = next(u for u in demo["users"] if u["totp_secret"] is None)
    page = new_page(chromium)
    login(page, demo, dora)
    assert page.locator(".qr svg").count() == 1
    key = page.locator("#enrol-key").inner_text().replace(" ", "")
    page.screenshot(path=str(SCREENSHOTS / "enrolment.png"))
    page.get_by_label("One-time code").fill(pyotp.TOTP(key).now())
    page.get_by_role("button", name="Confirm").click()
    assert page.get_by_role("heading", name="Your recovery codes").is_visible()
    assert page.locator(".recovery li").count() == 10     # shown once, to be kept on paper
    page.screenshot(path=str(SCREENSHOTS / "recovery-codes.png"))
    page.get_by_role("link", name="Continue").click()
    assert page.get_by_role("heading", name="Your desktops").is_visible()
    page.context.close()


def test_a_user_who_is_not_entitled_is_told_so(demo, chromium):
    clara = next(u for u in demo["users"] if not u["entitled"])
    page = new_page(chromium)
    login(page, demo, clara)
    page.get_by_label("One-time code").fill(pyotp.TOTP(clara["totp_secret"]).now())
    page.get_by_role("button", name="Confirm").click()
    assert "No desktop has been assigned to you" in page.locator(".notice").inner_text()
    page.context.close()


def test_a_wrong_password_is_answered_in_german_for_a_german_browser(demo, chromium):
    page = new_page(chromium, "de-DE")
    page.goto(demo["portal_url"])
    page.get_by_label("Benutzername").fill(demo["users"][0]["login"])
    page.get_by_label("Passwort").fill("falsch")
    page.get_by_role("button", name="Anmelden").click()
    assert page.get_by_role("alert").inner_text() == \
        "Benutzername oder Passwort ist nicht korrekt."
    page.context.close()


def wait_until(page, condition, timeout: float = 10.0) -> None:
    """Poll ``condition`` (the portal's CSP forbids the string evaluation wait_for_function uses)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        page.wait_for_timeout(50)


XTERM_AREA_SUM_JS = """() => {
    const c = document.querySelector('#screen canvas');
    const probe = document.createElement('canvas');
    probe.width = c.width; probe.height = c.height;
    const ctx = probe.getContext('2d');
    ctx.drawImage(c, 0, 0);
    const d = ctx.getImageData(40, 40, 500, 140).data;
    let sum = 0;
    for (let i = 0; i < d.length; i += 4) sum += d[i] + d[i + 1] + d[i + 2];
    return sum;
}"""


def test_the_desktop_survives_a_network_drop(demo, chromium, network):
    bernd = next(u for u in demo["users"] if u["login"].startswith("bernd@"))
    page = new_page(chromium)
    login(page, demo, bernd)
    page.get_by_label("One-time code").fill(pyotp.TOTP(bernd["totp_secret"]).now())
    page.get_by_role("button", name="Confirm").click()
    page.get_by_role("link", name="Open").click()
    assert wait_for_desktop_colour(page) is not None
    network.cut()
    wait_until(page, lambda: page.evaluate("() => document.body.dataset.state") == "connected")
    # still live both ways: typing reaches the desktop's xterm and its echo reaches the canvas
    box = page.locator("#screen canvas").bounding_box()
    scale = box["width"] / page.evaluate("document.querySelector('#screen canvas').width")
    page.mouse.click(box["x"] + 200 * scale, box["y"] + 100 * scale)  # keyboard focus: canvas, xterm
    page.wait_for_timeout(500)
    before = page.evaluate(XTERM_AREA_SUM_JS)
    page.keyboard.type("hello after the drop")
    wait_until(page, lambda: page.evaluate(XTERM_AREA_SUM_JS) != before)
    page.wait_for_timeout(300)
    page.screenshot(path=str(SCREENSHOTS / "after-drop.png"))
    metrics = urllib.request.urlopen(demo["gateway_metrics_url"]).read().decode()
    assert "pforte_gateway_resumes_total 1" in metrics
    assert page.locator("#status").inner_text() == "Connected"
    page.context.close()


def test_a_long_network_outage_counts_down_and_ends_with_a_way_back(demo, chromium, network):
    """The bar shows the connection's quality (round trip through the gateway, throughput);
    while the network is out the page says how long it keeps trying, in the user's language;
    when the desktop is back it says so; a session that ended offers "Erneut verbinden"."""
    anna = next(u for u in demo["users"] if u["login"].startswith("anna@"))
    page = new_page(chromium, "de-DE")
    page.goto(demo["portal_url"])
    page.get_by_label("Benutzername").fill(anna["login"])
    page.get_by_label("Passwort").fill(anna["password"])
    page.get_by_role("button", name="Anmelden").click()
    page.get_by_label("Einmalcode").fill(unused_code(anna))
    page.get_by_role("button", name="Bestätigen").click()
    page.get_by_role("link", name="Büro-Desktop").click()
    assert wait_for_desktop_colour(page) is not None
    assert not page.get_by_role("button", name="Erneut verbinden").is_visible()
    quality = page.locator("#quality")                 # what helpdesk asks the user to read out
    wait_until(page, lambda: "Antwortzeit" in quality.inner_text(), timeout=15)
    assert re.fullmatch(r"Antwortzeit \d+ ms · [\d.,]+ kbit/s", quality.inner_text())

    network.down = True
    network.cut()
    status = page.locator("#status")
    wait_until(page, lambda: "noch höchstens" in status.inner_text())
    first = int(re.search(r"(\d+) s", status.inner_text()).group(1))
    page.wait_for_timeout(2200)
    later = int(re.search(r"(\d+) s", status.inner_text()).group(1))
    assert 50 <= first <= 60 and later < first                  # counting down, in seconds
    page.screenshot(path=str(SCREENSHOTS / "reconnecting.png"))
    network.down = False
    wait_until(page, lambda: status.inner_text() == "Verbunden")

    # The session ends (an admin logs it off): the page says so and offers a way back.
    base = demo["portal_url"].rstrip("/") + "/api/v1/admin/tenants/musterstadt"
    token = subprocess.run([sys.executable, "-m", "pforte", "admin-token", "--config",
                            demo["config"], "--tenant", "musterstadt", "--name", "e2e"],
                           capture_output=True, text=True, check=True).stdout.split()[-1]
    auth = {"Authorization": f"Bearer {token}"}
    sessions = json.loads(urllib.request.urlopen(urllib.request.Request(
        base + "/sessions", headers=auth)).read())["sessions"]
    mine = next(x for x in sessions if x["user"].startswith("anna"))
    urllib.request.urlopen(urllib.request.Request(
        f"{base}/sessions/{mine['id']}/logoff", method="POST", headers=auth))
    again = page.get_by_role("button", name="Erneut verbinden")
    wait_until(page, again.is_visible)
    assert status.inner_text().startswith("Sie wurden von Ihrem Arbeitsplatz abgemeldet")
    again.click()
    wait_until(page, lambda: status.inner_text() == "Verbunden")
    assert not again.is_visible()
    page.context.close()
