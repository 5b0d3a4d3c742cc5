"""End to end: the README's demo command, then Debian chromium logs in with password and TOTP,
opens a desktop, and the noVNC canvas shows that desktop's background colour."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyotp
import pytest

from broker.testbed import free_port

from .conftest import need

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
DEMO_START_TIMEOUT = 60.0
SCREENSHOTS = Path(__file__).resolve().parent.parent / "var" / "screenshots"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """``pforte demo`` as a user runs it, on free ports; stopped with SIGINT like Ctrl-C."""
    need("slapd", "Xvnc")
    state = tmp_path_factory.mktemp("demo")
    facts = state / "facts.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "broker", "demo", "--state-dir", str(state), "--portal-port",
         str(free_port()), "--gateway-port", str(free_port()), "--facts", str(facts)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + DEMO_START_TIMEOUT
    while not facts.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"demo did not start: {proc.stdout.read().decode(errors='replace')}")
        time.sleep(0.1)
    yield json.loads(facts.read_text())
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("demo did not stop on Ctrl-C")
    assert proc.returncode in (0, 130)


@pytest.fixture(scope="module")
def chromium():
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium is not installed (scripts/setup installs it)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def new_page(chromium, locale: str = "en-GB"):
    """A page in a fresh context (own cookies), with the browser language set to ``locale``."""
    context = chromium.new_context(locale=locale, viewport={"width": 1280, "height": 900})
    return context.new_page()


def hex_rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def canvas_colour(page) -> tuple[int, int, int] | None:
    """The colour of the desktop's bottom-right area (away from the xterm), or None."""
    return page.evaluate("""() => {
        const c = document.querySelector('#screen canvas');
        if (!c || c.width < 100) return null;
        const probe = document.createElement('canvas');
        probe.width = c.width; probe.height = c.height;
        const ctx = probe.getContext('2d');
        ctx.drawImage(c, 0, 0);
        const d = ctx.getImageData(c.width - 20, c.height - 20, 1, 1).data;
        return [d[0], d[1], d[2]];
    }""")


def wait_for_colour(page, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    colour = None
    while time.monotonic() < deadline:
        colour = canvas_colour(page)
        if colour and colour != [0, 0, 0]:
            return tuple(colour)
        page.wait_for_timeout(50)
    return tuple(colour) if colour else None


def login(page, demo, user: dict) -> None:
    page.goto(demo["portal_url"])
    page.get_by_label("Username").fill(user["login"])
    page.get_by_label("Password").fill(user["password"])
    page.get_by_role("button", name="Sign in").click()


def test_a_user_logs_in_with_password_and_totp_and_sees_the_desktop(demo, chromium):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    anna = next(u for u in demo["users"] if u["login"].startswith("anna@"))
    page = new_page(chromium)
    login(page, demo, anna)
    page.get_by_label("One-time code").fill(pyotp.TOTP(anna["totp_secret"]).now())
    page.get_by_role("button", name="Confirm").click()
    page.get_by_role("link", name="Open").click()
    colour = wait_for_colour(page)
    page.screenshot(path=str(SCREENSHOTS / "desktop.png"))
    backgrounds = {hex_rgb(d["background"]): d["name"] for d in demo["desktops"]}
    assert colour in backgrounds, f"canvas shows {colour}, not one of {backgrounds}"
    assert page.locator("#status").inner_text() == "Connected"
    page.context.close()


def test_a_new_user_enrols_in_the_browser(demo, chromium):
    dora = next(u for u in demo["users"] if u["totp_secret"] is None)
    page = new_page(chromium)
    login(page, demo, dora)
    assert page.locator(".qr svg").count() == 1
    key = page.locator("#enrol-key").inner_text()
    page.screenshot(path=str(SCREENSHOTS / "enrolment.png"))
    page.get_by_label("One-time code").fill(pyotp.TOTP(key).now())
    page.get_by_role("button", name="Confirm").click()
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
