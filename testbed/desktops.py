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
                        wait_for_port)


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
    const c = document.querySelector('#screen canvas');
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
    """Poll the noVNC canvas until it shows a non-black pixel; the colour, or None on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        colour = page.evaluate(CANVAS_COLOUR_JS)
        if colour and colour != [0, 0, 0]:
            return tuple(colour)
        page.wait_for_timeout(poll_ms)
    return None
