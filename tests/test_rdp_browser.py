"""An RDP desktop in the browser, end to end with real parts: a directory user signs in at the
portal in Debian's Chromium (password and one-time code), opens the pool of an ``xrdp`` host,
and IronRDP's client in the page shows the desktop — signed in by the gateway with the password
she typed at the portal (the desktop behind xrdp opens with nothing else), the page holding no
password. What she types arrives on the desktop in the pool's German layout; a drain's notice
shows over it and its deadline logs her off."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pyotp
import pytest

from testbed import (CANVAS_COLOUR_JS, BreakableProxy, ShadowRdpHost, XrdpDesktop, XvncDesktop,
                     hex_rgb)
from testbed.demo import DesktopEntry

from .conftest import USERS, need
from .security.conftest import DOMAIN, make_live
from .test_accessibility import AXE, TEXTS, violations
from .test_browser_desktop import DEAD_AS_SENT, Keyboard, admin_call, german

pytestmark = pytest.mark.e2e

COLOUR = "#1565c0"
NLA_COLOUR = "#2e7d32"


@pytest.fixture(scope="module")
def rdp_host(processes, tmp_path_factory) -> XrdpDesktop:
    """An xrdp host whose desktop (German keymap) opens with user1's directory password only."""
    need("xrdp", "Xvnc", "xterm", "setxkbmap")
    state = tmp_path_factory.mktemp("xrdp-browser")
    host = XrdpDesktop(state, XvncDesktop(state / "desktop", "Rathaus Windows", COLOUR,
                                          password=USERS["user1"][1], keyboard="de"))
    host.start(processes)
    return host


@pytest.fixture(scope="module")
def nla_host(processes, tmp_path_factory) -> ShadowRdpHost:
    """A host that requires Network Level Authentication and knows user1's password."""
    need("freerdp-shadow-cli", "winpr-hash", "Xvnc")
    state = tmp_path_factory.mktemp("shadow-browser")
    host = ShadowRdpHost(state, XvncDesktop(state / "desktop", "NLA Desktop", NLA_COLOUR,
                                            password="unused1"),
                         user="user1", password=USERS["user1"][1])
    host.start(processes)
    return host


def canvas_colour(page, timeout: float = 30.0) -> tuple[int, int, int] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        colour = page.evaluate(CANVAS_COLOUR_JS)
        if colour and colour != [0, 0, 0]:
            return tuple(colour)
        page.wait_for_timeout(50)
    return None


@pytest.fixture
def open_rdp(slapd, tmp_path, database, chromium, rdp_host):
    """Open the portal's RDP pool in Chromium as user1 (the pool's clipboard policy; ``tamper``:
    a script the user runs in the page first; ``network``: a proxy between page and gateway;
    other pool options by name); the page and the installation."""
    opened = []

    def open_page(clipboard: str = "both", tamper: str | None = None, host=None,
                  locale: str = "de-DE", axe: bool = False,
                  network: BreakableProxy | None = None, **pool_options):
        host = host or rdp_host
        live = make_live(tmp_path / f"live-{len(opened)}", slapd, [], database(),
                         pool_options={"clipboard": clipboard, **pool_options}, entries=[
            DesktopEntry("win1", host.port, 10, None, "rdp",
                         options={"certificate_sha256": host.certificate_sha256})],
                         gateway_url=network and f"ws://127.0.0.1:{network.port}/ws")
        if network is not None:
            network.target_port = urlsplit(live.gateway_http).port

        async def enrol() -> None:
            async with live.client("10.94.0.1") as http:
                await live.enrol(http, "user1")
        with ThreadPoolExecutor(1) as thread:     # playwright runs its own loop in this one
            thread.submit(asyncio.run, enrol()).result()
        context = chromium.new_context(locale=locale, viewport={"width": 1280, "height": 900},
                                       bypass_csp=axe)   # axe is injected, as CSP would refuse
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live.portal)
        if tamper is not None:
            context.add_init_script(tamper)
        opened.append((live, context))
        t = TEXTS["de" if locale.startswith("de") else "en"]
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
        page.on("response", lambda r: errors.append(f"{r.status} {r.url}")
                if r.status >= 400 else None)
        page.goto(f"{live.portal}/login")
        page.evaluate("navigator.clipboard.writeText('')")  # the browser's, shared by pages
        page.get_by_label(t["username"]).fill(f"user1@{DOMAIN}")
        page.get_by_label(t["password"]).fill(USERS["user1"][1])
        page.get_by_role("button", name=t["sign_in"]).click()
        page.get_by_label(t["code"]).fill(
            pyotp.TOTP(live.secrets["user1"]).at(time.time() + 30))
        page.get_by_role("button", name=t["confirm"]).click()
        page.get_by_role("link", name="Büro").click()
        page.errors = errors
        return page, live
    yield open_page
    for live, context in opened:
        context.close()
        live.processes.stop()


@pytest.fixture
def rdp_page(open_rdp):
    return open_rdp()


def test_the_rdp_desktop_opens_signed_in_with_the_portal_password(rdp_page, rdp_host):
    page, live = rdp_page
    colour = canvas_colour(page)
    page.screenshot(path=str(live.state / "rdp-desktop.png"))
    assert colour is not None, f"no desktop on the canvas; the bar says " \
        f"{page.locator('#status').inner_text()!r}; console errors: {page.errors}"
    assert all(abs(a - b) <= 8 for a, b in zip(colour, hex_rgb(COLOUR))), colour
    assert page.locator("#status").inner_text() == "Verbunden"
    # the page never held her password: not in the page, not in what the client was given
    assert USERS["user1"][1] not in page.content()


def test_german_text_typed_in_the_page_arrives_exactly(rdp_page, rdp_host):
    page, live = rdp_page
    assert canvas_colour(page) is not None
    box = page.locator("iron-remote-desktop").bounding_box()
    page.mouse.click(box["x"] + 200, box["y"] + 80)        # the xterm at the top left
    page.wait_for_timeout(300)
    keyboard = Keyboard(page, "linux")
    line = "Grüße, Straße @€{x} zy ZY"
    keyboard.type(german(line))
    keyboard.enter()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and line not in rdp_host.desktop.typed.read_text("utf-8"):
        page.wait_for_timeout(100)
    assert rdp_host.desktop.typed.read_text("utf-8").splitlines()[-1:] == [line]


# The host composes (RDP sends where the keys are): these combine alike on Windows and on the
# test host's X11. X11's Compose table differs in two that Windows types as written: ´ then
# space is an apostrophe there, and ^ then x is nothing.
RDP_DEAD = [d for d in DEAD_AS_SENT if d[-1] not in ("´", "^x")]


def test_dead_keys_as_chromium_sends_them_combine_on_the_rdp_desktop(rdp_page, rdp_host):
    """RDP sends where the keys are: the host composes ``^`` then ``a`` as its own German
    keyboard would (the page composes nothing)."""
    page, live = rdp_page
    assert canvas_colour(page) is not None
    box = page.locator("iron-remote-desktop").bounding_box()
    page.mouse.click(box["x"] + 200, box["y"] + 80)
    page.wait_for_timeout(300)
    keyboard = Keyboard(page, "linux")
    keyboard.type(german("x"))
    for code, shift, then, _ in RDP_DEAD:
        keyboard.dead(code, shift, then)
    keyboard.enter()
    expected = "x" + "".join(typed for *_, typed in RDP_DEAD)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and expected not in rdp_host.desktop.typed.read_text("utf-8"):
        page.wait_for_timeout(100)
    assert rdp_host.desktop.typed.read_text("utf-8").splitlines()[-1:] == [expected]


def typed_line_arrives(page, rdp_host, line: str, timeout: float = 15.0) -> bool:
    """Type ``line`` (and Enter) into the desktop's xterm; whether the desktop received it."""
    keyboard = Keyboard(page, "linux")
    keyboard.type(german(line))
    keyboard.enter()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and line not in rdp_host.desktop.typed.read_text("utf-8"):
        page.wait_for_timeout(100)
    return rdp_host.desktop.typed.read_text("utf-8").splitlines()[-1:] == [line]


def test_a_network_drop_is_bridged_and_the_desktop_carries_on(open_rdp, rdp_host):
    """The network between browser and gateway fails mid-session: the page's channel
    reattaches (the gateway held the host's TLS session), IronRDP never notices, and what she
    types afterwards arrives on the same desktop."""
    network = BreakableProxy(0)               # its target: the gateway, once it has a port
    try:
        page, live = open_rdp(network=network)
        assert canvas_colour(page) is not None
        box = page.locator("iron-remote-desktop").bounding_box()
        page.mouse.click(box["x"] + 200, box["y"] + 80)
        page.wait_for_timeout(300)
        assert typed_line_arrives(page, rdp_host, "vor dem Abbruch")
        network.cut()                                   # no goodbye, both sides reset
        assert typed_line_arrives(page, rdp_host, "Grüße nach dem Abbruch")
        metrics = urllib.request.urlopen(f"{live.gateway_http}/metrics").read().decode()
        assert "pforte_gateway_resumes_total 1" in metrics
        assert page.locator("body").get_attribute("data-state") == "connected"
        assert page.locator("#status").inner_text() == "Verbunden"
        assert admin_call(live, "GET", "/sessions")["sessions"][0]["state"] == "connected"
    finally:
        network.stop()


def test_an_untouched_rdp_desktop_is_logged_off_at_the_pools_idle_limit(open_rdp):
    """The pool's ``idle_logoff``: nothing moves either way (the desktop shows no change, the
    user touches nothing), and the gateway ends the session, which the broker logs off."""
    page, live = open_rdp(idle_logoff=6)
    assert canvas_colour(page) is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and \
            page.locator("body").get_attribute("data-state") == "connected":
        page.wait_for_timeout(500)
    assert page.locator("body").get_attribute("data-state") == "gateway_4000"
    assert page.locator("#status").inner_text() == \
        "Ihre Sitzung wurde nach längerer Inaktivität beendet."
    assert page.get_by_role("button", name="Erneut verbinden").is_visible()
    assert eventually(lambda: admin_call(live, "GET", "/sessions")["sessions"] == [])


def test_a_drain_shows_its_notice_and_logs_off_at_the_deadline(rdp_page, rdp_host):
    """The admin drains the RDP host with a deadline: the page shows the admin's words, which
    came on its stream, with a countdown, and at the deadline the session is logged off."""
    page, live = rdp_page
    assert canvas_colour(page) is not None
    admin_call(live, "POST", "/hosts/win1/actions/drain",
               {"deadline_seconds": 40, "message": "Updates heute um 22 Uhr."})
    notice = page.get_by_role("region", name="Hinweis Ihres IT-Services")
    notice.wait_for(state="visible", timeout=30_000)
    assert page.locator("#notice-text").text_content() == "Updates heute um 22 Uhr."
    assert "abgemeldet" in page.locator("#notice-countdown").text_content()
    notice.get_by_role("button", name="Verstanden").click()
    assert notice.is_hidden()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and \
            page.locator("body").get_attribute("data-state") == "connected":
        page.wait_for_timeout(500)
    assert page.locator("body").get_attribute("data-state") == "gateway_4003"   # logged off
    assert admin_call(live, "GET", "/sessions")["sessions"] == []
    assert not page.get_by_role("button", name="Strg+Alt+Entf").is_visible()
    assert page.get_by_role("button", name="Erneut verbinden").is_visible()


def eventually(check, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (found := check()):
            return found
        time.sleep(0.2)
    return check()


def copied_on_desktop_arrives(page, rdp_host, processes, text: str) -> bool:
    """Copy ``text`` on the desktop; whether the browser's clipboard gets it. A copy made right
    after the session opened is sometimes not announced to the client (seen in about 1 run of
    10 under ``out``, not in 16 under ``both``; not yet explained, see the closing note of
    issue 22): the user copies again, once, as she would."""
    for wait in (8.0, 15.0):
        holder = rdp_host.desktop.copy(processes, text)
        try:
            if eventually(lambda: page.evaluate("navigator.clipboard.readText()") == text,
                          timeout=wait):
                return True
        finally:
            processes.stop(holder)
    return False


def test_the_clipboard_crosses_both_ways_when_the_pool_allows_it(open_rdp, rdp_host,
                                                                 processes):
    page, live = open_rdp("both")
    assert canvas_colour(page) is not None
    assert copied_on_desktop_arrives(page, rdp_host, processes, "Aus dem Rathaus: Grüße")
    page.evaluate("navigator.clipboard.writeText('Von zu Hause: Straße')")
    assert eventually(lambda: rdp_host.desktop.pasted() == "Von zu Hause: Straße"), \
        rdp_host.desktop.pasted()


def test_under_in_text_goes_into_the_desktop_and_nothing_comes_out(open_rdp, rdp_host,
                                                                    processes):
    """Policy ``in``: the gateway lets the page's text into the desktop and turns the page's
    requests for the desktop's text into requests for nothing."""
    page, live = open_rdp("in")
    assert canvas_colour(page) is not None
    page.evaluate("navigator.clipboard.writeText('Von zu Hause: Straße')")
    assert eventually(lambda: rdp_host.desktop.pasted() == "Von zu Hause: Straße"), \
        rdp_host.desktop.pasted()
    holder = rdp_host.desktop.copy(processes, "Geheim aus dem Rathaus")
    try:
        page.wait_for_timeout(8000)    # as long as the same text took to cross under "both"
        assert page.evaluate("navigator.clipboard.readText()") == "Von zu Hause: Straße"
    finally:
        processes.stop(holder)
    assert page.locator("body").get_attribute("data-state") == "connected"


def test_under_out_the_desktops_text_comes_out_and_nothing_goes_in(open_rdp, rdp_host,
                                                                  processes):
    """Policy ``out``: the desktop's text reaches the page; what the page sends for the
    desktop goes on as a failed answer with its bytes zeroed."""
    page, live = open_rdp("out")
    assert canvas_colour(page) is not None
    assert copied_on_desktop_arrives(page, rdp_host, processes, "Aus dem Rathaus: Grüße")
    page.evaluate("navigator.clipboard.writeText('Von zu Hause')")
    page.wait_for_timeout(8000)
    assert rdp_host.desktop.pasted() != "Von zu Hause"
    assert page.locator("body").get_attribute("data-state") == "connected"


# The user changes the page so that it offers the clipboard the pool forbids.
OFFER_THE_CLIPBOARD = """document.addEventListener("readystatechange", () => {
    if (document.readyState === "interactive") document.body.dataset.clipboard = "both";
});"""


def test_no_clipboard_crosses_under_none_even_from_a_changed_page(open_rdp, rdp_host,
                                                                  processes):
    page, live = open_rdp("none", tamper=OFFER_THE_CLIPBOARD)
    assert canvas_colour(page) is not None
    assert page.locator("body").get_attribute("data-clipboard") == "both"   # the change took
    holder = rdp_host.desktop.copy(processes, "Geheim aus dem Rathaus")
    page.evaluate("navigator.clipboard.writeText('Von zu Hause')")
    try:
        # as long as the same text took to cross when the pool allowed it, and then some
        page.wait_for_timeout(8000)
        assert page.evaluate("navigator.clipboard.readText()") == "Von zu Hause"
        assert rdp_host.desktop.pasted() == "Geheim aus dem Rathaus"
    finally:
        processes.stop(holder)
    assert page.locator("body").get_attribute("data-state") == "connected"


def test_a_host_that_requires_nla_signs_the_user_in_without_a_prompt(open_rdp, nla_host):
    """The gateway does the host's Network Level Authentication as the user (CredSSP with
    her portal password); the page's client, which holds none, sees the desktop."""
    page, live = open_rdp(host=nla_host)
    colour = canvas_colour(page)
    page.screenshot(path=str(live.state / "nla-desktop.png"))
    assert colour is not None, f"no desktop on the canvas; console errors: {page.errors}"
    assert all(abs(a - b) <= 8 for a, b in zip(colour, hex_rgb(NLA_COLOUR))), colour


@pytest.mark.parametrize("locale", ["de-DE", "en-GB"])
def test_the_rdp_desktop_page_passes_axe_and_its_bar_works_by_keyboard(open_rdp, locale):
    """The RDP page is the VNC page's frame with another client in it: landmarks, labels and
    contrast pass axe (no serious or critical violation) in both languages, with the desktop
    connected; the bar's buttons are reached with Tab."""
    if not AXE.is_file():
        pytest.skip("not installed: axe-core (scripts/setup installs it with npm)")
    page, _ = open_rdp(locale=locale, axe=True)
    assert canvas_colour(page) is not None
    assert violations(page) == []
    reached = set()
    for _ in range(8):
        page.keyboard.press("Tab")
        reached.add(page.evaluate(
            "document.activeElement.id || document.activeElement.textContent"))
    assert {"ctrl-alt-del", "full-screen"} <= reached, reached
