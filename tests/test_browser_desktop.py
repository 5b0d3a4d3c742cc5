"""The desktop in the browser, for German offices. The keyboard, exactly: the key events a real German (T1) keyboard makes in
Chromium — sent through the DevTools protocol (``Input.dispatchKeyEvent``: key, code, modifiers),
AltGr in its Linux form (AltRight, "AltGraph") and in its Windows form (Ctrl+Alt) — into the
portal's desktop page, and what a real Xvnc desktop with a German keymap received, read from the
line its xterm wrote. The same for an English keyboard on an English desktop. And the screen:
the desktop follows the browser window (TigerVNC resizes on the page's request)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyotp
import pytest

from testbed import XvncDesktop, wait_for_desktop_colour

from .conftest import USERS, need
from .security.conftest import DOMAIN, TENANT, make_live

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Key:
    """One key stroke as Chromium reports it: ``key`` (what it types), ``code`` (where it is)."""
    key: str
    code: str
    shift: bool = False
    altgr: bool = False


def german(text: str) -> list[Key]:
    """The strokes that type ``text`` on a German T1 keyboard (DIN 2137)."""
    plain = {c: Key(c, f"Key{c.upper()}") for c in "abcdefghijklmnopqrstuvwx"}
    plain |= {"y": Key("y", "KeyZ"), "z": Key("z", "KeyY"), " ": Key(" ", "Space")}
    plain |= {str(d): Key(str(d), f"Digit{d}") for d in range(10)}
    plain |= {"ä": Key("ä", "Quote"), "ö": Key("ö", "Semicolon"), "ü": Key("ü", "BracketLeft"),
              "ß": Key("ß", "Minus"), "+": Key("+", "BracketRight"), "#": Key("#", "Backslash"),
              "-": Key("-", "Slash"), ",": Key(",", "Comma"), ".": Key(".", "Period"),
              "<": Key("<", "IntlBackslash")}
    shifted = {"Ä": "Quote", "Ö": "Semicolon", "Ü": "BracketLeft", "!": "Digit1",
               '"': "Digit2", "§": "Digit3", "$": "Digit4", "%": "Digit5", "&": "Digit6",
               "/": "Digit7", "(": "Digit8", ")": "Digit9", "=": "Digit0", "?": "Minus",
               "*": "BracketRight", "'": "Backslash", "_": "Slash", ";": "Comma", ":": "Period",
               ">": "IntlBackslash", "Z": "KeyY", "Y": "KeyZ",
               **{c.upper(): f"Key{c.upper()}" for c in "abcdefghijklmnopqrstuvwx"}}
    altgr = {"@": "KeyQ", "€": "KeyE", "\\": "Minus", "{": "Digit7", "[": "Digit8",
             "]": "Digit9", "}": "Digit0", "|": "IntlBackslash", "~": "BracketRight",
             "²": "Digit2", "³": "Digit3", "µ": "KeyM"}
    strokes = []
    for c in text:
        if c in plain:
            strokes.append(plain[c])
        elif c in shifted:
            strokes.append(Key(c, shifted[c], shift=True))
        else:
            strokes.append(Key(c, altgr[c], altgr=True))
    return strokes


def english(text: str) -> list[Key]:
    """The strokes that type ``text`` on a US English keyboard."""
    plain = {c: Key(c, f"Key{c.upper()}") for c in "abcdefghijklmnopqrstuvwxyz"}
    plain |= {str(d): Key(str(d), f"Digit{d}") for d in range(10)} | {" ": Key(" ", "Space")}
    plain |= {c: Key(c, code) for c, code in zip("-=[]\\;',./`", (
        "Minus", "Equal", "BracketLeft", "BracketRight", "Backslash", "Semicolon", "Quote",
        "Comma", "Period", "Slash", "Backquote"))}
    shifted = dict(zip("!@#$%^&*()_+{}|:\"<>?~", (
        "Digit1", "Digit2", "Digit3", "Digit4", "Digit5", "Digit6", "Digit7", "Digit8",
        "Digit9", "Digit0", "Minus", "Equal", "BracketLeft", "BracketRight", "Backslash",
        "Semicolon", "Quote", "Comma", "Period", "Slash", "Backquote")))
    shifted |= {c: f"Key{c}" for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}
    return [plain[c] if c in plain else Key(c, shifted[c], shift=True) for c in text]


ENGLISH_LINE = "The quick brown fox 0123456789 -=[]\\;',./` !@#$%^&*()_+{}|:\"<>?~"
GERMAN_LINE = "@€\\{[]}|~²³µ äöüß ÄÖÜ !\"§$%&/()=?*'_;:> zy ZY #+-,.<"

VK = {"Shift": 16, "Control": 17, "Alt": 18, "AltGraph": 225, "Enter": 13}


class Keyboard:
    """Key events into the page as Chromium gets them from the operating system."""

    def __init__(self, page, altgr: str, xterm: tuple[float, float] = (0, 0)) -> None:
        self.page, self.xterm = page, xterm
        self.cdp = page.context.new_cdp_session(page)
        self.altgr = altgr                        # "linux": AltRight; "windows": Ctrl + Alt

    def _send(self, kind: str, key: str, code: str, modifiers: int = 0, text: str = "") -> None:
        event = {"type": kind, "key": key, "code": code, "modifiers": modifiers,
                 "windowsVirtualKeyCode": VK.get(key, ord(key.upper()[0]) if key else 0)}
        if text:
            event["text"] = event["unmodifiedText"] = text
        self.cdp.send("Input.dispatchKeyEvent", event)

    def type(self, strokes: list[Key]) -> None:
        for s in strokes:
            held = []
            if s.shift:
                held.append(("Shift", "ShiftLeft", 8))
            if s.altgr and self.altgr == "linux":
                held.append(("AltGraph", "AltRight", 0))
            elif s.altgr:                            # Windows: AltGr arrives as Ctrl + Alt
                held += [("Control", "ControlLeft", 2), ("AltGraph", "AltRight", 3)]
            modifiers = 0
            for key, code, bit in held:
                modifiers |= {0: 0, 8: 8, 2: 2, 3: 1}[bit]
                self._send("rawKeyDown", key, code, modifiers)
            self._send("keyDown", s.key, s.code, modifiers, s.key)
            self._send("keyUp", s.key, s.code, modifiers)
            for key, code, _ in reversed(held):
                self._send("keyUp", key, code, 0)

    def dead(self, code: str, shift: bool, then: Key) -> None:
        """A dead key (the accent alone), then the key after it: Chromium reports the first as
        "Dead" (its code: where the key is) and the second as ``then`` says."""
        if shift:
            self._send("rawKeyDown", "Shift", "ShiftLeft", 8)
        self._send("rawKeyDown", "Dead", code, 8 if shift else 0)
        self._send("keyUp", "Dead", code, 8 if shift else 0)
        if shift:
            self._send("keyUp", "Shift", "ShiftLeft", 0)
        self.type([then])

    def enter(self) -> None:
        self._send("keyDown", "Enter", "Enter", 0, "\r")
        self._send("keyUp", "Enter", "Enter", 0)


def desktop_with(layout: str, processes, tmp_path_factory) -> XvncDesktop:
    need("Xvnc", "setxkbmap", "xterm")
    desktop = XvncDesktop(tmp_path_factory.mktemp(f"xvnc-{layout}"), f"Desktop {layout}",
                          "#5d4037", password=f"{layout}-pass", keyboard=layout)
    desktop.start(processes)
    return desktop


@pytest.fixture(scope="module")
def german_desktop(processes, tmp_path_factory) -> XvncDesktop:
    return desktop_with("de", processes, tmp_path_factory)


@pytest.fixture(scope="module")
def english_desktop(processes, tmp_path_factory) -> XvncDesktop:
    return desktop_with("us", processes, tmp_path_factory)


@pytest.fixture
def open_desktop(slapd, tmp_path, database, chromium):
    """Open the portal's desktop page in Chromium on a desktop, in a browser on Linux or on
    Windows (as the page sees it: ``navigator.platform``); the page, and the keyboard that types
    into it as that system's Chromium reports a German or English keyboard."""
    opened = []

    def open_page(desktop: XvncDesktop, platform: str, screen: str = "scale",
                  clipboard: str = "both", tamper: str | None = None,
                  broker_options: dict | None = None):
        live = make_live(tmp_path / f"live-{len(opened)}", slapd, [desktop], database(),
                         pool_options={"screen": screen, "clipboard": clipboard},
                         broker_options=broker_options)
        opened.append(live)

        async def enrol() -> None:
            async with live.client("10.93.0.1") as http:
                await live.enrol(http, "user1")
        with ThreadPoolExecutor(1) as thread:     # playwright runs its own loop in this one
            thread.submit(asyncio.run, enrol()).result()
        context = chromium.new_context(locale="de-DE", viewport={"width": 1280, "height": 900})
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live.portal)
        if tamper is not None:       # the user changes the page (as anyone can in a browser)
            context.add_init_script(tamper)
        if platform == "windows":
            context.add_init_script("Object.defineProperty(Navigator.prototype, 'platform', "
                                    "{get: () => 'Win32'})")
        page = context.new_page()
        page.goto(f"{live.portal}/login")
        page.evaluate("navigator.clipboard.writeText('')")  # the browser's, shared by pages
        page.get_by_label("Benutzername").fill(f"user1@{DOMAIN}")
        page.get_by_label("Passwort").fill(USERS["user1"][1])
        page.get_by_role("button", name="Anmelden").click()
        page.get_by_label("Einmalcode").fill(
            pyotp.TOTP(live.secrets["user1"]).at(time.time() + 30))
        page.get_by_role("button", name="Bestätigen").click()
        page.get_by_role("link", name="Büro").click()
        assert wait_for_desktop_colour(page) is not None
        canvas = page.locator("#screen canvas").bounding_box()
        xterm = (canvas["x"] + 200, canvas["y"] + 80)
        page.mouse.click(*xterm)                   # the xterm: the pointer, and so the focus
        page.wait_for_timeout(300)
        keyboard = Keyboard(page, platform, xterm)
        keyboard.live = live
        return keyboard
    yield open_page
    for live in opened:
        live.processes.stop()


def typed_line(desktop: XvncDesktop, before: int, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = desktop.typed.read_bytes()[before:]
        if b"\n" in text:
            return text.split(b"\n")[0].decode("utf-8", "replace")
        time.sleep(0.1)
    return desktop.typed.read_bytes()[before:].decode("utf-8", "replace")


@pytest.mark.parametrize("platform", ["linux", "windows"])
def test_every_german_character_arrives_as_typed(open_desktop, german_desktop, platform):
    keyboard = open_desktop(german_desktop, platform)
    before = german_desktop.typed.stat().st_size
    keyboard.type(german(GERMAN_LINE))
    keyboard.enter()
    assert typed_line(german_desktop, before) == GERMAN_LINE


@pytest.mark.parametrize("platform", ["linux", "windows"])
def test_an_english_keyboard_types_exactly_on_an_english_desktop(open_desktop, english_desktop,
                                                                 platform):
    keyboard = open_desktop(english_desktop, platform)
    before = english_desktop.typed.stat().st_size
    keyboard.type(english(ENGLISH_LINE))
    keyboard.enter()
    assert typed_line(english_desktop, before) == ENGLISH_LINE


CTRL_ALT_DELETE_IN_XTERM = "\x1b[3;7~"   # xterm's Delete with Ctrl and Alt held

DEAD = [  # (accent key, with Shift, the key after it, what a German keyboard types)
    ("Backquote", False, Key("â", "KeyA"), "â"), ("Equal", False, Key("é", "KeyE"), "é"),
    ("Equal", True, Key("à", "KeyA"), "à"), ("Backquote", False, Key("^", "Space"), "^"),
    ("Equal", False, Key("´", "Space"), "´"), ("Equal", True, Key("`", "Space"), "`"),
]


@pytest.mark.parametrize("platform", ["linux", "windows"])
def test_dead_keys_combine_as_on_the_keyboard(open_desktop, german_desktop, platform):
    keyboard = open_desktop(german_desktop, platform)
    before = german_desktop.typed.stat().st_size
    # A key first: on a fresh xterm the first dead key is lost while its input method starts
    # (seen only when a dead key is the very first key the desktop ever gets).
    keyboard.type(german("x"))
    for code, shift, then, _ in DEAD:
        keyboard.dead(code, shift, then)
    keyboard.enter()
    assert typed_line(german_desktop, before) == "x" + "".join(typed for *_, typed in DEAD)


# What Chromium really sends on X11 and Windows: "Dead", then the plain key (never the
# composed character); the page composes. Each: (accent key, with Shift, the key after it).
DEAD_AS_SENT = [
    ("Backquote", False, Key("a", "KeyA"), "â"), ("Equal", False, Key("e", "KeyE"), "é"),
    ("Equal", True, Key("a", "KeyA"), "à"), ("Equal", True, Key("A", "KeyA", shift=True), "À"),
    ("Backquote", False, Key(" ", "Space"), "^"), ("Equal", False, Key(" ", "Space"), "´"),
    ("Equal", True, Key(" ", "Space"), "`"), ("Backquote", False, Key("x", "KeyX"), "^x"),
]


@pytest.mark.parametrize("platform", ["linux", "windows"])
def test_dead_keys_as_chromium_sends_them_combine_on_the_desktop(open_desktop, german_desktop,
                                                                  platform):
    keyboard = open_desktop(german_desktop, platform)
    before = german_desktop.typed.stat().st_size
    keyboard.type(german("x"))           # (see test_dead_keys_combine_as_on_the_keyboard)
    for code, shift, then, _ in DEAD_AS_SENT:
        keyboard.dead(code, shift, then)
    for name in ("René", "André"):       # as a German keyboard types them: ´ then e
        keyboard.type(german(" " + name[:-1]))
        keyboard.dead("Equal", False, Key("e", "KeyE"))
    keyboard.enter()
    assert typed_line(german_desktop, before) == "x" + "".join(
        typed for *_, typed in DEAD_AS_SENT) + " René André"


@pytest.mark.parametrize("platform", ["linux", "windows"])
def test_shortcuts_arrive_and_ctrl_alt_del_has_a_button(open_desktop, german_desktop, platform):
    keyboard = open_desktop(german_desktop, platform)
    before = german_desktop.typed.stat().st_size
    keyboard._send("rawKeyDown", "Control", "ControlLeft", 2)   # Ctrl+A: not taken for AltGr
    keyboard._send("keyDown", "a", "KeyA", 2)
    keyboard._send("keyUp", "a", "KeyA", 2)
    keyboard._send("keyUp", "Control", "ControlLeft", 0)
    keyboard.page.get_by_role("button", name="Strg+Alt+Entf").click()
    keyboard.page.mouse.click(*keyboard.xterm)                   # back to the desktop
    keyboard.enter()
    assert typed_line(german_desktop, before) == "\x01" + CTRL_ALT_DELETE_IN_XTERM


def desktop_size(desktop: XvncDesktop) -> tuple[int, int]:
    out = subprocess.run(["xdpyinfo", "-display", f":{desktop.display}"], capture_output=True,
                         text=True, check=True).stdout
    width, height = re.search(r"dimensions:\s+(\d+)x(\d+) pixels", out).groups()
    return int(width), int(height)


def test_the_desktop_follows_the_browser_window(open_desktop, english_desktop):
    need("xdpyinfo")
    page = open_desktop(english_desktop, "linux", screen="follow").page
    for width, height in ((1280, 900), (1000, 700), (1600, 1000)):
        page.set_viewport_size({"width": width, "height": height})
        screen = page.evaluate("() => [document.getElementById('screen').clientWidth, "
                               "document.getElementById('screen').clientHeight]")
        deadline = time.monotonic() + 10
        while desktop_size(english_desktop) != tuple(screen) and time.monotonic() < deadline:
            page.wait_for_timeout(100)
        assert desktop_size(english_desktop) == tuple(screen)     # pixel for pixel, no scaling


def test_a_scaled_desktop_keeps_its_size_in_any_window(open_desktop, german_desktop):
    """The default: the page scales the desktop into the window and never resizes it (a desktop
    several viewers may share keeps its resolution)."""
    need("xdpyinfo")
    before = desktop_size(german_desktop)
    page = open_desktop(german_desktop, "linux").page
    for width, height in ((1000, 700), (1600, 1000)):
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(1500)
        assert desktop_size(german_desktop) == before


# -- the clipboard --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clipboard_desktop(processes, tmp_path_factory) -> XvncDesktop:
    need("xclip")
    return desktop_with("us", processes, tmp_path_factory)


def eventually(probe, what: str, observed=None, timeout: float = 10.0):
    """Wait for ``probe()`` to be truthy (a condition the test then asserts, never a duration);
    if it never is, say what ``observed()`` shows."""
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        assert time.monotonic() < deadline, f"never: {what} {observed() if observed else ''}"
        time.sleep(0.1)
    return value


def clipboard_counts(live) -> dict[str, int]:
    """The gateway's clipboard counters (``/metrics``), as they happen."""
    text = urllib.request.urlopen(f"{live.gateway_http}/metrics", timeout=5).read().decode()
    counts = {}
    for direction, result, n in re.findall(
            r'pforte_gateway_clipboard_total\{direction="(\w+)",result="(\w+)"\} (\d+)', text):
        counts[direction if result == "allowed" else f"{direction}_{result}"] = int(n)
    return counts


def received_downstream(page) -> bytearray:
    """Every byte the page receives from the gateway from now on."""
    stream = bytearray()
    page.on("websocket", lambda ws: ws.on(
        "framereceived", lambda frame: stream.extend(frame) if isinstance(frame, bytes) else None))
    return stream


def test_text_crosses_both_ways_with_umlauts_and_euro(open_desktop, clipboard_desktop,
                                                      processes):
    keyboard = open_desktop(clipboard_desktop, "linux")
    page = keyboard.page
    # out of the desktop: a program there copies; the page's copy box has it, exactly
    copied = "Straße № 5 – Grüße, 10 € {x}"
    holder = clipboard_desktop.copy(processes, copied)
    try:
        eventually(lambda: page.locator("#clipboard-out").input_value() == copied,
                   "the desktop's text in the copy box")
        page.get_by_role("button", name="Zwischenablage").click()
        page.get_by_role("button", name="Auf meinen Computer kopieren").click()
        assert page.evaluate("navigator.clipboard.readText()") == copied
        assert page.get_by_role("status").filter(has_text="kopiert").is_visible()

        # into the desktop, through the paste box
        typed = "Ärger über 20 € – ½ Tag"
        page.get_by_label("Text für den Arbeitsplatz").fill(typed)
        page.get_by_role("button", name="An den Arbeitsplatz senden").click()
        eventually(lambda: clipboard_desktop.pasted() == typed, "the paste box's text on the desktop")

        # into the desktop, straight from the computer's clipboard on coming back to the desktop
        page.evaluate("navigator.clipboard.writeText('Von zu Hause: Öffnungszeiten')")
        page.get_by_role("button", name="Zwischenablage schließen").click()
        page.mouse.click(*keyboard.xterm)
        eventually(lambda: clipboard_desktop.pasted() == "Von zu Hause: Öffnungszeiten",
                   "the computer's clipboard on the desktop")
    finally:
        processes.stop(holder)


def test_only_into_the_desktop_text_never_leaves_it(open_desktop, clipboard_desktop, processes):
    keyboard = open_desktop(clipboard_desktop, "linux", clipboard="in")
    page, live = keyboard.page, keyboard.live
    assert page.locator("#clipboard-out").count() == 0     # not offered
    downstream = received_downstream(page)
    page.reload()
    assert wait_for_desktop_colour(page) is not None
    holder = clipboard_desktop.copy(processes, "Geheimes Aktenzeichen 4711")
    try:
        eventually(lambda: clipboard_counts(live).get("out_blocked", 0) >= 1,
                   "the gateway blocked the desktop's text")
        assert b"Aktenzeichen" not in downstream and len(downstream) > 0
        # into the desktop still works, in UTF-8 (the guard reads the extended clipboard)
        page.get_by_role("button", name="Zwischenablage").click()
        page.get_by_label("Text für den Arbeitsplatz").fill("Grüße aus dem Bürgerbüro: 12 €")
        page.get_by_role("button", name="An den Arbeitsplatz senden").click()
        eventually(lambda: clipboard_desktop.pasted() == "Grüße aus dem Bürgerbüro: 12 €",
                   "the paste box's text on the desktop",
                   lambda: (clipboard_desktop.pasted(), clipboard_counts(live)))
    finally:
        processes.stop(holder)


def test_a_changed_page_cannot_put_text_into_a_desktop_that_only_gives(
        open_desktop, clipboard_desktop, processes):
    """The user rewrites the page so that it offers the paste box its pool forbids: the gateway
    drops the text, the session goes on, the desktop's text still comes out, and the audit log
    counts what was blocked."""
    keyboard = open_desktop(clipboard_desktop, "linux", clipboard="out", tamper="""
        document.addEventListener("readystatechange", () => {   // parsed, before the page's code
            if (document.readyState === "interactive") document.body.dataset.clipboard = "both";
        });""")
    page, live = keyboard.page, keyboard.live
    holder = clipboard_desktop.copy(processes, "vorher")
    try:
        eventually(lambda: page.locator("#clipboard-out").input_value() == "vorher",
                   "the desktop's text in the copy box")
        # the changed page sends what the computer's clipboard holds on coming back
        page.evaluate("navigator.clipboard.writeText('eingeschleust')")
        page.mouse.click(10, 300)                           # off the desktop ...
        page.mouse.click(*keyboard.xterm)                   # ... and back in: the page sends
        eventually(lambda: clipboard_counts(live).get("in_blocked", 0) >= 1,
                   "the gateway blocked the page's text")
        assert clipboard_desktop.pasted() == "vorher"
        assert page.locator("body").get_attribute("data-state") == "connected"
    finally:
        processes.stop(holder)
    page.context.close()                                    # the session's end is reported

    def clipboard_entries() -> list[dict]:
        with ThreadPoolExecutor(1) as thread:     # playwright runs its own loop in this one
            audit = thread.submit(asyncio.run, live.audit()).result()
        return [e for e in audit if e["action"] == "session.clipboard"]
    audit = eventually(clipboard_entries, "the audit entry")
    counted = dict(re.findall(r"(\w+)=(\d+)", audit[0]["detail"]))
    assert audit[0]["result"] == "blocked"
    assert int(counted["in_blocked"]) >= 1 and counted["in"] == "0" and int(counted["out"]) >= 1


# -- notices inside the session -------------------------------------------------------------------

def admin_call(live, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{live.portal}/api/v1/admin/tenants/{TENANT}{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {live.admin_token}",
                 "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


def test_a_drain_and_an_admins_message_appear_over_the_desktop(open_desktop, german_desktop):
    """The admin drains the user's host with a deadline and a message: the page shows it over the
    desktop in German with a countdown to the logoff, and typing goes on into the desktop; "OK"
    hides it. A message to the session appears the same way."""
    keyboard = open_desktop(german_desktop, "linux")
    page, live = keyboard.page, keyboard.live
    admin_call(live, "POST", "/hosts/desk1/actions/drain",
               {"deadline_seconds": 600, "message": "Updates heute um 22 Uhr."})
    notice = page.get_by_role("region", name="Hinweis Ihres IT-Services")
    notice.wait_for(state="visible", timeout=10_000)
    assert page.locator("#notice-text").text_content() == "Updates heute um 22 Uhr."
    countdown = page.locator("#notice-countdown").text_content()
    assert re.fullmatch(r"Sie werden in (10:00|9:[0-5]\d) abgemeldet\. Bitte speichern Sie "
                        r"jetzt Ihre Arbeit\.", countdown), countdown
    # the notice takes no focus: what the user types still reaches the desktop
    before = german_desktop.typed.stat().st_size
    keyboard.type(german("weiter"))
    keyboard.enter()
    assert typed_line(german_desktop, before) == "weiter"
    notice.get_by_role("button", name="Verstanden").click()
    assert notice.is_hidden()

    session = admin_call(live, "GET", "/sessions")["sessions"][0]["id"]
    text = 'Bitte melden Sie sich beim Bürgerbüro. <img src=x onerror="document.title=1">'
    assert admin_call(live, "POST", f"/sessions/{session}/message",
                      {"text": text}) == {"reached": True}
    notice.wait_for(state="visible", timeout=10_000)
    assert page.locator("#notice-text").text_content() == text      # as text, never as markup
    assert page.locator("#notice img").count() == 0 and page.title() != "1"
    assert page.locator("#notice-countdown").text_content() == ""
    actions = [e["action"] for e in admin_call(live, "GET", "/audit")["audit"]]
    assert "host.notice" in actions and "session.message" in actions

    # the admin logs the session off: the notice goes, and so does what worked on the session
    admin_call(live, "POST", f"/sessions/{session}/logoff")
    page.get_by_role("button", name="Erneut verbinden").wait_for(timeout=10_000)
    assert notice.is_hidden()
    for gone in ("Strg+Alt+Entf", "Zwischenablage", "Vollbild"):
        assert not page.get_by_role("button", name=gone).is_visible(), gone


def test_the_page_renews_its_reconnect_pass_while_the_desktop_is_connected(open_desktop,
                                                                            english_desktop):
    """A pass lives a few minutes (here the shortest the broker takes, 30 s): the page asks
    for a fresh one while the desktop is open, so that an outage finds it with a live one."""
    keyboard = open_desktop(english_desktop, "linux",
                            broker_options={"reconnect_pass_lifetime": 30})
    page = keyboard.page
    key = "pforte.reconnect-pass.buero"
    first = page.evaluate(f"sessionStorage.getItem('{key}')")
    assert first
    held = first
    for _ in range(50):                       # the page's CSP allows no eval: poll from here
        page.wait_for_timeout(500)
        if (held := page.evaluate(f"sessionStorage.getItem('{key}')")) != first:
            break
    assert held and held != first
    assert page.locator("body").get_attribute("data-state") == "connected"
