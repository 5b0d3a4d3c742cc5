"""The thin-client boot agent: enrol once, then at every boot fetch the profile, sign the user in
(password and one-time code) and start the viewer the profile names.

``python -m client.agent --broker https://broker.example --state /var/lib/pforte-agent``,
or ``--discover rathaus.example`` to find the broker in DNS: the SRV record
``_pforte._tcp.rathaus.example`` names its host and port (HTTPS); of several records the agent takes
the first in RFC 2782 order (lowest priority, then at random by weight).

When the viewer ends, the agent does what the profile's ``on_logoff`` says: back to the sign-in
for the next user (``login``), or power off or restart the device (``systemctl``).

Every step that talks to the broker is retried with exponential backoff and full jitter (never in
lockstep with the neighbours that booted at the same second), bounded by ``give_up_after``, and the
user is told in plain words what is happening. Answers that retrying cannot fix — a revoked device,
a wrong password — are not retried.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, TypeVar

import dns.asyncresolver
import dns.exception
import dns.resolver

from .api import BrokerApi, Refused, Unavailable
from .tunnel import Tunnel
from wire.resume import Notice

T = TypeVar("T")

BASE_DELAY = 0.5        # seconds: first retry waits up to this
MAX_DELAY = 30.0        # seconds: no wait is longer
GIVE_UP_AFTER = 600.0   # seconds of retrying before the agent gives up
VIEWERS = {"vnc": ["vncviewer"], "rdp": ["xfreerdp"], "spice": ["remote-viewer"]}
# after the connection file: xfreerdp takes the local tunnel's own certificate (loopback; the
# RDP host's certificate is checked by the gateway against the one the ticket pins)
VIEWER_OPTIONS = {"rdp": ["/cert:ignore"]}
POWER = {"shutdown": "poweroff", "restart": "reboot"}  # the profile's on_logoff → systemctl
SETTLE_TIMEOUT = 10.0   # seconds the tunnel has to finish a connection after the viewer ended
NOTICE_WINDOW = ["xmessage", "-center", "-title", "Pforte", "-buttons", "OK"]  # over the viewer

# What the agent says to the person at the device: in the profile's language once it is known,
# German before (the broker's own answers come in that language too, by Accept-Language).
TEXTS = {
    "de": {
        "enrolment_code": "Registrierungscode von Ihrem IT-Service",
        "username": "Benutzername", "password": "Passwort", "code": "Einmalcode",
        "finding": "Server wird gesucht", "enrolling": "Gerät wird registriert",
        "settings": "Geräteeinstellungen werden geladen", "signing_in": "Anmeldung",
        "checking": "Code wird geprüft", "desktops": "Ihre Arbeitsplätze werden geladen",
        "preparing": "Ihr Arbeitsplatz wird vorbereitet",
        "retry": "{what}: {why}. Nächster Versuch in {delay:.0f} s.",
        "unreachable": "der Server ist nicht erreichbar ({detail})",
        "busy": "der Server ist ausgelastet ({detail})",
        "notice": "Hinweis Ihres IT-Services: {text}",
        "notice_default": "Dieser Arbeitsplatz wird für eine Wartung heruntergefahren.",
        "notice_logoff": "Sie werden um {time} Uhr abgemeldet. Bitte speichern Sie jetzt Ihre "
                         "Arbeit.",
        "interrupted": "Die Verbindung zu Ihrem Arbeitsplatz wurde unterbrochen. Neuer Versuch "
                       "in {delay:.0f} s.",
        "lost": "Die Verbindung zu Ihrem Arbeitsplatz ist abgebrochen. Bitte melden Sie sich "
                "erneut an.",
        "no_desktop": "Ihnen ist an diesem Gerät kein Arbeitsplatz zugewiesen.",
        "choose": "Welcher Arbeitsplatz? ({listing})",
        "keyboard": "Die Tastaturbelegung {layout} ließ sich nicht einstellen.",
        "give_up": "Der Server ist nicht erreichbar: {why}. Bitte wenden Sie sich an Ihren "
                   "IT-Service.",
        "tunnel": "Der Tunnel wartet auf 127.0.0.1:{port}, bis Sie Strg-C drücken.",
        "no_srv": "Im DNS fehlt der Eintrag {name}: das Gerät findet seinen Server nicht.",
        "no_dns": "der DNS-Server antwortet nicht ({detail})",
    },
    "en": {
        "enrolment_code": "Enrolment code from your IT service desk",
        "username": "Username", "password": "Password", "code": "One-time code",
        "finding": "Finding the server", "enrolling": "Enrolling this device",
        "settings": "Loading this device's settings", "signing_in": "Signing in",
        "checking": "Checking the code", "desktops": "Loading your desktops",
        "preparing": "Preparing your desktop",
        "retry": "{what}: {why}. Next try in {delay:.0f} s.",
        "unreachable": "the server cannot be reached ({detail})",
        "busy": "the server is busy ({detail})",
        "notice": "Notice from your IT service: {text}",
        "notice_default": "This desktop will be shut down for maintenance.",
        "notice_logoff": "You will be logged off at {time}. Please save your work now.",
        "interrupted": "The connection to your desktop was interrupted. Reconnecting in "
                       "{delay:.0f} s.",
        "lost": "The connection to your desktop was lost. Please sign in again.",
        "no_desktop": "No desktop has been assigned to you on this device.",
        "choose": "Which desktop? ({listing})",
        "keyboard": "The keyboard layout {layout} could not be set.",
        "give_up": "The server cannot be reached: {why}. Please call your IT service desk.",
        "tunnel": "The tunnel listens on 127.0.0.1:{port} until Ctrl-C.",
        "no_srv": "DNS has no {name} record: the device cannot find its server.",
        "no_dns": "DNS does not answer ({detail})",
    },
}


def kiosk_browser(broker_url: str, profile: dict) -> list[str]:
    """Chromium in kiosk mode on the portal's sign-in page, in the profile's language; the portal
    asks for password and one-time code itself (and, if the profile says ``auto_connect``, opens
    the user's only desktop at once); an incognito window keeps nothing after it closes."""
    page = "/login?kiosk=1" if profile["kiosk"]["auto_connect"] else "/login"
    return ["chromium", "--kiosk", "--incognito", "--no-first-run", f"--lang={profile['language']}",
            f"--accept-lang={profile['language']}", f"{broker_url}{page}"]


def keyboard_command(profile: dict) -> list[str]:
    """Set the thin client's keyboard map to the profile's layout (the viewer, and the browser,
    send what the local keyboard map makes of a key)."""
    return ["setxkbmap", "-layout", profile["keyboard_layout"]]


def backoff(attempt: int, rng: random.Random, *, base: float = BASE_DELAY,
            cap: float = MAX_DELAY, at_least: float | None = None) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): full jitter over an exponential cap;
    with ``at_least`` (a broker's ``Retry-After``), jittered over that time and as much again,
    so that the clients a busy broker turned away do not all come back at once."""
    if at_least:
        return rng.uniform(at_least, 2 * at_least)
    return rng.uniform(0, min(cap, base * 2 ** attempt))


SRV_SERVICE = "_pforte._tcp"


async def discover(domain: str, rng: random.Random, *, scheme: str = "https",
                   nameserver: tuple[str, int] | None = None, language: str = "de") -> str:
    """The broker's URL from the SRV record ``_pforte._tcp.DOMAIN`` (what it says, in
    ``language``: the device does not know its profile yet).

    Raises:
        Refused: there is no such record (a setup mistake: retrying will not help).
        Unavailable: DNS did not answer.
    """
    resolver = dns.asyncresolver.Resolver(configure=nameserver is None)
    if nameserver is not None:
        resolver.nameservers, resolver.port = [nameserver[0]], nameserver[1]
    name = f"{SRV_SERVICE}.{domain}"
    try:
        answer = await resolver.resolve(name, "SRV", lifetime=5.0)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        raise Refused(None, "no_srv_record",
                      TEXTS[language]["no_srv"].format(name=name)) from None
    except dns.exception.DNSException as exc:
        raise Unavailable(None, "no_dns",
                          TEXTS[language]["no_dns"].format(detail=type(exc).__name__)) from None
    first = choose_srv([(r.priority, r.weight, r.target.to_text(omit_final_dot=True), r.port)
                        for r in answer], rng)
    return f"{scheme}://{first[2]}:{first[3]}"


def choose_srv(records: list[tuple[int, int, str, int]],
               rng: random.Random) -> tuple[int, int, str, int]:
    """The SRV record (priority, weight, target, port) to use first, as RFC 2782 says: one of the
    lowest priority, chosen at random in proportion to weight (weight 0: rarely)."""
    best = min(r[0] for r in records)
    candidates = [r for r in records if r[0] == best]
    weights = [r[1] or 0.01 for r in candidates]
    return rng.choices(candidates, weights=weights)[0]


@dataclass
class Agent:
    broker_url: str | None                   # None: found by ``find_broker`` at boot
    state: Path
    ask: Callable[[str, bool], str]          # (prompt, secret) -> answer
    say: Callable[[str], None]
    device_name: str = "thin client"
    enrolment_code: str | None = None
    rng: random.Random = field(default_factory=random.SystemRandom)
    give_up_after: float = GIVE_UP_AFTER
    api: BrokerApi | None = None             # made once the broker is known
    find_broker: Callable[[], Awaitable[str]] | None = None  # e.g. DNS SRV, see discover()
    tunnel: Tunnel | None = None             # while a native viewer runs
    token: str | None = None                 # the signed-in user's, while their session runs
    on_logoff: str = "login"                 # from the profile: login, shutdown or restart
    reconnect_on_drop: bool = True           # from the profile
    resume_within: float = 60.0              # seconds the tunnel tries to resume a dropped stream
    language: str = "de"                     # of what it says; the profile's, once known
    keyboard: list[str] | None = None        # the command that sets the profile's keyboard map
    notice_window: list[str] = field(default_factory=lambda: list(NOTICE_WINDOW))
    _windows: set = field(default_factory=set)  # notice windows open now

    def text(self, key: str, **values: object) -> str:
        return TEXTS[self.language][key].format(**values)

    @property
    def credential_file(self) -> Path:
        return self.state / "device-credential"

    async def _call(self, method: str, path: str, *, body: dict | None = None,
                    token: str | None = None, device: str | None = None) -> dict:
        """A broker API call in the agent's language; no answer is said in it too."""
        self.api = self.api or BrokerApi(self.broker_url)
        self.api.language = self.language
        try:
            return await self.api.call(method, path, body, token=token, device=device)
        except Unavailable as exc:
            if exc.status is None:
                raise Unavailable(None, exc.code,
                                  self.text("unreachable", detail=exc.message)) from None
            if exc.code == "refused":  # no word from the broker itself (a proxy's error page)
                raise Unavailable(exc.status, exc.code, self.text("busy", detail=exc.status),
                                  exc.retry_after) from None
            raise

    async def retrying(self, what: str, step: Callable[[], Awaitable[T]]) -> T:
        """Run a step until it succeeds, waiting between attempts; Refused passes through.
        ``what`` names the step (a key of :data:`TEXTS`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.give_up_after
        attempt = 0
        while True:
            try:
                return await step()
            except Unavailable as exc:
                delay = backoff(attempt, self.rng, at_least=exc.retry_after)
                if loop.time() + delay > deadline:
                    raise
                self.say(self.text("retry", what=self.text(what), why=exc, delay=delay))
                await asyncio.sleep(delay)
                attempt += 1

    async def credential(self) -> str:
        """The device credential: stored, or got once by enrolling with a one-time code (asked
        again after a wrong one, unless it was given on the command line)."""
        if self.credential_file.exists():
            return self.credential_file.read_text().strip()
        while True:
            code = self.enrolment_code or self.ask(self.text("enrolment_code"), False)
            try:
                body = await self.retrying("enrolling", lambda: self._call(
                    "POST", "/devices/enrol",
                    body={"code": code, "name": self.device_name}))
                break
            except Refused as exc:
                if self.enrolment_code:
                    raise
                self.say(str(exc))
        self.state.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.credential_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(body["credential"])
        return body["credential"]

    async def profile(self, credential: str) -> dict:
        return await self.retrying("settings", lambda: self._call(
            "GET", "/devices/profile", token=credential))

    async def sign_in(self) -> str:
        """Password, then one-time code; asks again after a wrong answer."""
        while True:
            user = self.ask(self.text("username"), False)
            password = self.ask(self.text("password"), True)
            try:
                body = await self.retrying("signing_in", lambda: self._call(
                    "POST", "/login", body={"username": user, "password": password}))
            except Refused as exc:
                self.say(str(exc))
                continue
            token = body["token"]
            while True:
                code = self.ask(self.text("code"), False)
                try:
                    await self.retrying("checking", lambda: self._call(
                        "POST", "/mfa", body={"code": code}, token=token))
                    return token
                except Refused as exc:
                    self.say(str(exc))
                    if exc.code not in ("code_rejected", "code_replayed"):
                        break

    async def boot(self) -> list[str]:
        """Everything up to the viewer; the command that starts it.

        For native viewers a local tunnel keeps running in this process (see :attr:`tunnel`).
        """
        if self.broker_url is None:
            self.broker_url = await self.retrying("finding", self.find_broker)
        credential = await self.credential()
        device = await self.profile(credential)
        profile = device["profile"]
        self.on_logoff = profile["kiosk"]["on_logoff"]
        self.language = profile["language"]
        self.reconnect_on_drop = profile["kiosk"]["reconnect_on_drop"]
        self.keyboard = keyboard_command(profile)
        if profile["viewer"] == "browser":
            return kiosk_browser(self.broker_url, profile)
        self.token = token = await self.sign_in()
        entitled = (await self.retrying("desktops", lambda: self._call(
            "GET", "/pools", token=token)))["pools"]
        offered = [p for p in entitled if not profile["pools"] or p["id"] in profile["pools"]]
        if not offered:
            raise Refused(None, "not_entitled", self.text("no_desktop"))
        pool = offered[0]["id"] if len(offered) == 1 else self.choose_pool(offered)
        self.tunnel = Tunnel(self.broker_url, token, pool, resume_within=self.resume_within,
                             device_credential=credential, on_notice=self.show_notice)
        port = await self.tunnel.start()
        viewer_file = await self.retrying("preparing", lambda: self._call(
            "POST", f"/pools/{pool}/connection-file", token=token,
            body={"viewer": profile["viewer"], "port": port}, device=credential))
        file = self.state / Path(viewer_file["file_name"]).name
        file.write_text(viewer_file["content"])
        viewer = profile["viewer"]
        return [*VIEWERS[viewer], str(file), *VIEWER_OPTIONS.get(viewer, [])]

    def choose_pool(self, pools: list[dict]) -> str:
        """Ask which of several desktops (the user's, that this device offers) to open."""
        listing = ", ".join(f"{i} = {p['name']}" for i, p in enumerate(pools, 1))
        while True:
            answer = self.ask(self.text("choose", listing=listing), False).strip()
            if answer.isdigit() and 1 <= int(answer) <= len(pools):
                return pools[int(answer) - 1]["id"]

    async def serve(self, launch: Callable[[list[str]], Awaitable[object]]) -> str:
        """Boot, run the viewer until it ends, then do what the profile says at logoff: sign
        the next user in (``"login"``), or return ``"shutdown"`` or ``"restart"`` for the
        caller to carry out."""
        while True:
            try:
                command = await self.boot()
            except Refused as exc:
                if self.token is None:
                    raise  # the device itself was refused: nobody can use it now
                self.say(str(exc))  # this user cannot work here (say, no desktop): the next one
                await self.end_session()
                continue
            await self.apply_keyboard()
            await self._run_viewer(launch, command)
            await self.end_session()
            if self.on_logoff != "login":
                return self.on_logoff

    def show_notice(self, notice: Notice) -> None:
        """A notice from the IT service (a drain, an admin's message), in the device's language:
        said, and shown in a window over the viewer where the device has a display."""
        text = self.text("notice", text=notice.text or self.text("notice_default"))
        if notice.deadline:
            at = time.strftime("%H:%M", time.localtime(notice.deadline))
            text += "\n" + self.text("notice_logoff", time=at)
        self.say(text)
        if os.environ.get("DISPLAY") and shutil.which(self.notice_window[0]):
            window = asyncio.ensure_future(self._notice_window(text))
            self._windows.add(window)
            window.add_done_callback(self._windows.discard)

    async def _notice_window(self, text: str) -> None:
        proc = await asyncio.create_subprocess_exec(*self.notice_window, text,
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.DEVNULL)
        await proc.wait()   # until the user presses OK

    async def apply_keyboard(self) -> None:
        """Set the profile's keyboard map on the device's X display (where there is one)."""
        if self.keyboard is None or not os.environ.get("DISPLAY") or not shutil.which(
                self.keyboard[0]):
            return
        proc = await asyncio.create_subprocess_exec(*self.keyboard,
                                                    stderr=asyncio.subprocess.DEVNULL)
        if await proc.wait() != 0:
            self.say(self.text("keyboard", layout=self.keyboard[-1]))

    async def _run_viewer(self, launch: Callable[[list[str]], Awaitable[object]],
                          command: list[str]) -> None:
        """Run the viewer; if its connection dropped and the profile says ``reconnect_on_drop``,
        start it again (the tunnel fetches a fresh ticket: the user is back in the same session),
        with jittered waits, for as long as ``give_up_after`` allows."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.give_up_after
        attempt = 0
        while True:
            await launch(command)
            if self.tunnel is not None:
                try:
                    await asyncio.wait_for(self.tunnel.settled(), SETTLE_TIMEOUT)
                except asyncio.TimeoutError:
                    pass  # judge by what the tunnel knows so far
            if not (self.reconnect_on_drop and self.tunnel is not None and self.tunnel.dropped):
                return
            delay = backoff(attempt, self.rng)
            if loop.time() + delay > deadline:
                self.say(self.text("lost"))
                return
            self.say(self.text("interrupted", delay=delay))
            await asyncio.sleep(delay)
            attempt += 1

    async def end_session(self) -> None:
        """After the viewer: close the tunnel and end the user's portal login (the desktop
        session itself follows its pool's policy for disconnected sessions)."""
        if self.tunnel is not None:
            await self.tunnel.close()
            self.tunnel = None
        if self.token is not None:
            try:
                await self._call("POST", "/logout", token=self.token)
            except (Unavailable, Refused):
                pass  # the login expires by itself
            self.token = None

    async def close(self) -> None:
        await self.end_session()
        if self.api is not None:
            await self.api.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Pforte thin-client boot agent")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--broker", help="the broker's URL")
    where.add_argument("--discover", metavar="DOMAIN", help=f"find the broker by the DNS SRV "
                       f"record {SRV_SERVICE}.DOMAIN")
    parser.add_argument("--state", default="/var/lib/pforte-agent", help="where the device "
                        "credential is kept")
    parser.add_argument("--name", default=os.uname().nodename, help="this device's name")
    parser.add_argument("--enrolment-code", help="first boot only")
    parser.add_argument("--dry-run", action="store_true", help="print the viewer command "
                        "instead of starting it (the tunnel stays open until Ctrl-C)")
    args = parser.parse_args()

    def ask(prompt: str, secret: bool) -> str:
        return getpass.getpass(f"{prompt}: ") if secret else input(f"{prompt}: ")

    async def run() -> int:
        rng = random.SystemRandom()
        agent = Agent(args.broker.rstrip("/") if args.broker else None, Path(args.state), ask,
                      lambda m: print(m, flush=True), args.name, args.enrolment_code, rng,
                      find_broker=lambda: discover(args.discover, rng))

        async def launch(command: list[str]) -> int:
            proc = await asyncio.create_subprocess_exec(*command)
            return await proc.wait()
        try:
            if args.dry_run:
                print(json.dumps(await agent.boot()), flush=True)
                if agent.tunnel is not None:
                    print(agent.text("tunnel", port=agent.tunnel.port), flush=True)
                    await asyncio.Event().wait()
                return 0
            after = await agent.serve(launch)
            await agent.close()
            os.execvp("systemctl", ["systemctl", POWER[after]])  # does not return
        except Refused as exc:
            print(str(exc), file=sys.stderr)
            return 1
        except Unavailable as exc:
            print(agent.text("give_up", why=exc), file=sys.stderr)
            return 2
        finally:
            await agent.close()
    try:
        sys.exit(asyncio.run(run()))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
