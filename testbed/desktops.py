"""Desktops and the browser: TigerVNC ``Xvnc`` desktops, the demo as a user runs it, and helpers
for Debian's Chromium driven by playwright."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


from .processes import (STARTUP_TIMEOUT, Processes, TestbedError, free_port, require,
                        wait_for_port, write_private)


# -- TigerVNC ------------------------------------------------------------------------------------

@dataclass
class XvncDesktop:
    """A real X desktop served by Xvnc with VNC password auth, a solid background and a titled xterm."""

    state: Path
    name: str
    colour: str            # an X colour like "#2e7d32"
    password: str
    port: int = 0
    display: int = 0       # learned from Xvnc at start
    geometry: str = "1024x768"
    keyboard: str = "us"   # the X keyboard layout (setxkbmap), e.g. "de"

    @property
    def typed(self) -> Path:
        """Every line typed into the desktop's xterm, as the desktop received it (UTF-8)."""
        return self.state / "typed.txt"

    def start(self, processes: Processes) -> None:
        xvnc = require("Xvnc")
        self.state.mkdir(parents=True, exist_ok=True)
        passwd = self.state / "passwd"
        passwd.write_bytes(subprocess.run([require("vncpasswd"), "-f"],
                                          input=self.password.encode(), capture_output=True,
                                          check=True).stdout)
        passwd.chmod(0o600)
        self.port = self.port or free_port()
        # -displayfd: Xvnc picks a free display itself and tells us which.
        read_fd, write_fd = os.pipe()
        with os.fdopen(read_fd, "rb") as announced:
            try:
                proc = processes.start(
                    [xvnc, "-displayfd", str(write_fd), "-rfbport", str(self.port), "-localhost",
                     "-nolisten", "tcp", "-SecurityTypes", "VncAuth", "-PasswordFile",
                     str(passwd), "-AlwaysShared", "-geometry", self.geometry, "-depth", "24",
                     # only the gateway connects, and it throttles users itself: TigerVNC's
                     # per-address blacklist would lock everyone out at once (FIELD-NOTES)
                     "-UseBlacklist=0", "-desktop", self.name],
                    log=self.state / "xvnc.log", pass_fds=(write_fd,))
            finally:
                os.close(write_fd)
            display = announced.readline().strip()  # EOF (b"") if Xvnc dies first
        if not display.isdigit():
            raise TestbedError(f"Xvnc did not start (see {self.state / 'xvnc.log'})")
        self.display = int(display)
        wait_for_port("127.0.0.1", self.port, proc, what="Xvnc")
        env = {**os.environ, "DISPLAY": f":{self.display}", "LANG": "C.UTF-8",
               "LC_ALL": "C.UTF-8"}
        subprocess.run([require("xsetroot"), "-solid", self.colour], env=env, check=True,
                       timeout=STARTUP_TIMEOUT)
        if self.keyboard != "us":
            subprocess.run([require("setxkbmap"), self.keyboard], env=env, check=True,
                           timeout=STARTUP_TIMEOUT)
        self.typed.touch()
        processes.start([require("xterm"), "-T", self.name, "-geometry", "80x10+40+40", "-e",
                         "sh", "-c",
                         f"echo 'This is {self.name}. Type here: it echoes what you type.'; "
                         f"exec tee -a {self.typed}"], env=env,
                        log=self.state / "xterm.log")

    def _x(self) -> dict[str, str]:
        return {**os.environ, "DISPLAY": f":{self.display}", "LANG": "C.UTF-8",
                "LC_ALL": "C.UTF-8"}

    def copy(self, processes: Processes, text: str) -> subprocess.Popen:
        """Copy ``text`` in the desktop, as a program there does: ``xclip`` owns the CLIPBOARD
        selection until another owner takes it (stop it with ``processes``)."""
        held = self.state / f"copied-{len(list(self.state.glob('copied-*')))}.txt"
        held.write_text(text, encoding="utf-8")
        return processes.start([require("xclip"), "-quiet", "-selection", "clipboard", "-i",
                                str(held)], env=self._x(), log=self.state / "xclip.log")

    def pasted(self) -> str | None:
        """What pasting in the desktop would insert now (None: the clipboard is empty)."""
        done = subprocess.run([require("xclip"), "-o", "-selection", "clipboard"],
                              env=self._x(), capture_output=True, timeout=STARTUP_TIMEOUT)
        return done.stdout.decode("utf-8") if done.returncode == 0 else None


# -- a thin client's screen: Xvfb ------------------------------------------------------------------

@dataclass
class XvfbScreen:
    """An X display without a monitor, as a thin client's: native viewers run on it, and the
    tests read its pixels (Pillow) and type on it (``xdotool``)."""

    state: Path
    geometry: str = "1280x800"
    display: int = 0          # learned from Xvfb at start

    def start(self, processes: Processes) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        read_fd, write_fd = os.pipe()
        with os.fdopen(read_fd, "rb") as announced:
            try:
                processes.start([require("Xvfb"), "-displayfd", str(write_fd), "-screen", "0",
                                 f"{self.geometry}x24", "-nolisten", "tcp"],
                                log=self.state / "xvfb.log", pass_fds=(write_fd,))
            finally:
                os.close(write_fd)
            display = announced.readline().strip()
        if not display.isdigit():
            raise TestbedError(f"Xvfb did not start (see {self.state / 'xvfb.log'})")
        self.display = int(display)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DISPLAY": f":{self.display}", "LANG": "C.UTF-8",
                "LC_ALL": "C.UTF-8"}

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        from PIL import ImageGrab
        return ImageGrab.grab(xdisplay=f":{self.display}").convert("RGB").getpixel((x, y))

    def type(self, text: str) -> None:
        subprocess.run([require("xdotool"), "type", "--delay", "30", text], env=self.env,
                       check=True, timeout=STARTUP_TIMEOUT)

    def click(self, x: int, y: int) -> None:
        subprocess.run([require("xdotool"), "mousemove", str(x), str(y), "click", "1"],
                       env=self.env, check=True, timeout=STARTUP_TIMEOUT)

    def key(self, *keys: str) -> None:
        subprocess.run([require("xdotool"), "key", *keys], env=self.env, check=True,
                       timeout=STARTUP_TIMEOUT)


# -- xrdp: an RDP host in front of an Xvnc desktop ---------------------------------------------

@dataclass
class XrdpDesktop:
    """An RDP host as the tests know one: Debian's ``xrdp`` serving TLS only (no Network Level
    Authentication; see FIELD-NOTES) with its own certificate, and behind it, for every
    connection, the :class:`XvncDesktop` ``desktop`` (xrdp's ``libvnc`` hands the RDP logon's
    password on as the VNC password: only the user's own password opens it)."""

    state: Path
    desktop: XvncDesktop
    port: int = 0
    certificate_sha256: str = ""     # what the host shows, for the broker's config

    def start(self, processes: Processes) -> None:
        self.desktop.start(processes)
        self.state.mkdir(parents=True, exist_ok=True)
        cert, key = _rsa_certificate(self.state)
        self.certificate_sha256 = _sha256_of_pem(cert)
        self.port = self.port or free_port()
        ini = self.state / "xrdp.ini"
        ini.write_text(_XRDP_INI.format(port=self.port, cert=cert, key=key,
                                        log=self.state / "xrdp.log",
                                        vnc_port=self.desktop.port))
        proc = processes.start([require("xrdp"), "--nodaemon", "--config", str(ini)],
                               log=self.state / "xrdp.out")
        wait_for_port("127.0.0.1", self.port, proc, what="xrdp")


_XRDP_INI = """[Globals]
ini_version=1
fork=true
port=tcp://127.0.0.1:{port}
tcp_nodelay=true
security_layer=tls
crypt_level=none
certificate={cert}
key_file={key}
ssl_protocols=TLSv1.2, TLSv1.3
autorun=desktop
allow_channels=true
max_bpp=32
new_cursors=true
use_fastpath=both
[Logging]
LogFile={log}
LogLevel=INFO
EnableSyslog=false
[Channels]
rdpdr=true
rdpsnd=true
drdynvc=true
cliprdr=true
rail=false
xrdpvr=false
[desktop]
name=desktop
lib=libvnc.so
ip=127.0.0.1
port={vnc_port}
username=na
password=ask
"""


@dataclass
class ShadowRdpHost:
    """An RDP host that requires Network Level Authentication (CredSSP with NTLM), as Windows
    hosts do by default: FreeRDP's shadow server showing the :class:`XvncDesktop` ``desktop``,
    with one account (``user``, ``password``) in its SAM file and its own certificate."""

    state: Path
    desktop: XvncDesktop
    user: str
    password: str
    port: int = 0
    certificate_sha256: str = ""

    def start(self, processes: Processes) -> None:
        self.desktop.start(processes)
        home = self.state / "home"
        home.mkdir(parents=True, exist_ok=True)
        sam = self.state / "sam"
        line = subprocess.run([require("winpr-hash"), "-u", self.user, "-p", self.password,
                               "-f", "sam"], capture_output=True, text=True, check=True,
                              timeout=STARTUP_TIMEOUT).stdout
        write_private(sam, line)
        self.port = self.port or free_port()
        env = {**self.desktop._x(), "HOME": str(home)}
        proc = processes.start([require("freerdp-shadow-cli"), f"/port:{self.port}",
                                "/bind-address:127.0.0.1", "+auth", "/sec:nla",
                                f"/sam-file:{sam}"], env=env, log=self.state / "shadow.log")
        wait_for_port("127.0.0.1", self.port, proc, what="freerdp-shadow-cli")
        self.certificate_sha256 = _sha256_of_pem(home / ".config/freerdp/shadow/shadow.crt")


def _rsa_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed RSA certificate as a Windows host has one: (certificate, key) PEM files."""
    from client.rdp_stream import self_signed_rsa
    cert, key = self_signed_rsa("rdp-host.test")
    cert_path, key_path = directory / "rdp.crt", directory / "rdp.key"
    cert_path.write_bytes(cert)
    write_private(key_path, key.decode())
    return cert_path, key_path


def _sha256_of_pem(path: Path) -> str:
    import hashlib
    import ssl
    text = path.read_text().replace("\0", "").strip()   # FreeRDP ends its file with a NUL
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(text)).hexdigest()


# -- the demo as a user runs it, and Debian's chromium ------------------------------------------

DEMO_START_TIMEOUT = 60.0
CHROMIUM = "/usr/bin/chromium"
# Flags that work as root on a closed network (see FIELD-NOTES): no sandbox, no background traffic.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]


class DemoProcess:
    """``python -m pforte demo`` in a subprocess on free ports; :meth:`stop` sends SIGINT (Ctrl-C).
    ``extra`` arguments go to ``pforte demo``."""

    def __init__(self, state: Path, python: str, *extra: str) -> None:
        self.state = state
        self.facts_path = state / "facts.json"
        self.proc = subprocess.Popen(
            [python, "-m", "pforte", "demo", "--state-dir", str(state), "--portal-port",
             str(free_port()), "--gateway-port", str(free_port()), "--facts",
             str(self.facts_path), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self) -> dict:
        """The demo's facts, once it has written them."""
        import json
        deadline = time.monotonic() + DEMO_START_TIMEOUT
        while not self.facts_path.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                output = self.proc.stdout.read().decode(errors="replace")
                raise TestbedError(f"demo did not start: {output}")
            time.sleep(0.1)
        return json.loads(self.facts_path.read_text())

    def stop(self, timeout: float = 20.0) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise TestbedError("demo did not stop on Ctrl-C") from None


# Reads the noVNC canvas: the colour near its bottom-right corner (away from the xterm).
CANVAS_COLOUR_JS = """() => {
    const iron = document.querySelector('iron-remote-desktop');   // an RDP page: IronRDP's
    const c = iron ? iron.shadowRoot && iron.shadowRoot.querySelector('canvas')
                   : document.querySelector('#screen canvas');   // a VNC page: noVNC's
    if (!c || c.width < 100) return null;
    const probe = document.createElement('canvas');
    probe.width = c.width; probe.height = c.height;
    const ctx = probe.getContext('2d');
    ctx.drawImage(c, 0, 0);
    const d = ctx.getImageData(c.width - 20, c.height - 20, 1, 1).data;
    return [d[0], d[1], d[2]];
}"""


def hex_rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def wait_for_desktop_colour(page, timeout: float = 20.0, poll_ms: int = 10):
    """Poll the desktop page's canvas (noVNC's or IronRDP's) until it shows a non-black pixel;
    the colour, or None on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        colour = page.evaluate(CANVAS_COLOUR_JS)
        if colour and colour != [0, 0, 0]:
            return tuple(colour)
        page.wait_for_timeout(poll_ms)
    return None
