"""End to end: the README's demo command, then Debian chromium logs in with password and TOTP,
opens a desktop, and the noVNC canvas shows that desktop's background colour."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pyotp
import pytest

from broker.testbed import CHROMIUM, CHROMIUM_ARGS, DemoProcess, hex_rgb, wait_for_desktop_colour

from .conftest import need

pytestmark = pytest.mark.e2e

SCREENSHOTS = Path(__file__).resolve().parent.parent / "var" / "screenshots"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """``pforte demo`` as a user runs it, on free ports; stopped with SIGINT like Ctrl-C."""
    need("slapd", "Xvnc")
    demo = DemoProcess(tmp_path_factory.mktemp("demo"), sys.executable)
    yield demo.wait_ready()
    assert demo.stop() in (0, 130)


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
    colour = wait_for_desktop_colour(page)
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
