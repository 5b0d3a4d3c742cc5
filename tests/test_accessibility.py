"""Accessibility of the portal (BITV 2.0 / EN 301 549) in Debian chromium: every page a user
meets — sign-in, wrong password, one-time code, enrolment with its QR code, recovery codes, the
desktop list, "no desktop for you", the desktop itself — in German and English, checked with
axe-core (zero serious or critical violations), and a sign-in to the desktop by keyboard alone."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pyotp
import pytest

from testbed import DemoProcess, wait_for_desktop_colour

from .conftest import need

pytestmark = pytest.mark.e2e

AXE = Path(__file__).resolve().parents[1] / "node_modules" / "axe-core" / "axe.min.js"
RUN_AXE = """async () => {
    const result = await axe.run(document, {resultTypes: ["violations"]});
    return result.violations.filter(v => ["serious", "critical"].includes(v.impact))
        .map(v => `${v.id} (${v.impact}): ${v.help} at ` +
                  v.nodes.map(n => n.target.join(" ")).join(", "));
}"""
TEXTS = {  # what a user reads (and a screen reader announces) in each language
    "en": {"username": "Username", "password": "Password", "sign_in": "Sign in",
           "code": "One-time code", "confirm": "Confirm", "desktops": "Your desktops",
           "clipboard": "Clipboard"},
    "de": {"username": "Benutzername", "password": "Passwort", "sign_in": "Anmelden",
           "code": "Einmalcode", "confirm": "Bestätigen", "desktops": "Ihre Arbeitsplätze",
           "clipboard": "Zwischenablage"},
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    need("slapd", "Xvnc")
    if not AXE.is_file():
        pytest.skip("not installed: axe-core (scripts/setup installs it with npm)")
    process = DemoProcess(tmp_path_factory.mktemp("demo"), sys.executable, "--gateway-port", "0")
    yield process.wait_ready()
    process.stop()


def user(demo, login: str) -> dict:
    return next(u for u in demo["users"] if u["login"].startswith(login + "@"))


def new_page(chromium, lang: str):
    locale = "de-DE" if lang == "de" else "en-GB"
    # axe is injected into the page, which the portal's CSP would (rightly) refuse
    context = chromium.new_context(locale=locale, bypass_csp=True,
                                   viewport={"width": 1280, "height": 900})
    return context.new_page()


def violations(page) -> list[str]:
    page.add_script_tag(path=str(AXE))
    return page.evaluate(RUN_AXE)


def check(page, where: str, found: dict[str, list[str]]) -> None:
    found[where] = violations(page)


def sign_in(page, demo, login: str, lang: str, *, password: str | None = None) -> None:
    t = TEXTS[lang]
    page.goto(demo["portal_url"])
    page.get_by_label(t["username"]).fill(user(demo, login)["login"])
    page.get_by_label(t["password"]).fill(password or user(demo, login)["password"])
    page.get_by_role("button", name=t["sign_in"]).click()


@pytest.mark.parametrize("lang, login", [("en", "anna"), ("de", "bernd")])
def test_every_page_passes_axe_in_both_languages(demo, chromium, lang, login):
    t, found = TEXTS[lang], {}
    page = new_page(chromium, lang)
    page.goto(demo["portal_url"])
    check(page, "sign-in", found)
    sign_in(page, demo, login, lang, password="wrong")
    assert page.get_by_role("alert").is_visible()
    check(page, "wrong password", found)
    sign_in(page, demo, login, lang)
    check(page, "one-time code", found)
    page.get_by_label(t["code"]).fill(pyotp.TOTP(user(demo, login)["totp_secret"]).now())
    page.get_by_role("button", name=t["confirm"]).click()
    assert page.get_by_role("heading", name=t["desktops"]).is_visible()
    check(page, "desktop list", found)
    page.get_by_role("link", name="Büro-Desktop").click()      # the link names its desktop
    assert wait_for_desktop_colour(page) is not None
    check(page, "desktop", found)
    page.get_by_role("button", name=t["clipboard"]).click()   # the clipboard panel, open
    assert page.get_by_role("heading", name=t["clipboard"]).is_visible()
    check(page, "desktop with the clipboard open", found)
    page.context.close()

    clara = new_page(chromium, lang)                            # in no desktop group
    sign_in(clara, demo, "clara", lang)
    clara.get_by_label(t["code"]).fill(pyotp.TOTP(user(demo, "clara")["totp_secret"]).at(
        time.time() + (0 if lang == "en" else 30)))
    clara.get_by_role("button", name=t["confirm"]).click()
    check(clara, "no desktop", found)
    clara.context.close()
    assert found == {where: [] for where in found}


def test_enrolment_and_recovery_codes_pass_axe(demo, chromium):
    found = {}
    for lang in ("en", "de"):                  # dora enrols at first sign-in: both see the QR
        page = new_page(chromium, lang)
        sign_in(page, demo, "dora", lang)
        assert page.locator(".qr svg").count() == 1
        check(page, f"enrolment ({lang})", found)
        if lang == "de":
            key = page.locator("#enrol-key").inner_text().replace(" ", "")
            page.get_by_label(TEXTS[lang]["code"]).fill(pyotp.TOTP(key).now())
            page.get_by_role("button", name=TEXTS[lang]["confirm"]).click()
            assert page.locator(".recovery li").count() == 10
            check(page, "recovery codes (de)", found)
        page.context.close()
    assert found == {where: [] for where in found}


def focused_on(page, element_id: str, timeout: float = 5.0) -> None:
    """The browser applies ``autofocus`` once the page has rendered: wait for it."""
    deadline = time.monotonic() + timeout
    while page.evaluate("() => document.activeElement.id") != element_id:
        assert time.monotonic() < deadline, f"focus is not on #{element_id}"
        page.wait_for_timeout(50)


def test_a_user_signs_in_and_opens_her_desktop_by_keyboard_alone(demo, chromium):
    page = new_page(chromium, "de")
    anna = user(demo, "anna")
    page.goto(demo["portal_url"])
    focused_on(page, "username")                                 # where to type, at once
    page.keyboard.type(anna["login"])
    page.keyboard.press("Tab")
    page.keyboard.type(anna["password"])
    page.keyboard.press("Enter")
    page.wait_for_url("**/mfa")
    focused_on(page, "code")
    page.keyboard.type(pyotp.TOTP(anna["totp_secret"]).at(time.time() + 30))
    page.keyboard.press("Enter")
    page.wait_for_url("**/desktops")
    for _ in range(8):                                           # Tab to the desktop's link
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.getAttribute('aria-label')") == \
                "Büro-Desktop öffnen":
            break
    page.keyboard.press("Enter")
    page.wait_for_url("**/desktop/*")
    assert wait_for_desktop_colour(page) is not None
    page.context.close()
