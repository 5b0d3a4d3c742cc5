"""Test and demo tooling: real servers (slapd, Samba AD, sshd, dnsmasq, Xvnc, xrdp, FreeRDP's
shadow server, Xvfb, Chromium helpers) on loopback, and the demo. Runs from a checkout; the wheel
does not ship it."""

from .processes import (Processes, STARTUP_TIMEOUT, TestbedError, exit_on_sigterm, free_port,
                        require, self_signed_certificate, wait_for_port, write_private)
from .directories import (DirectoryUserSpec, GroupSpec, Organisation, Postgres, SLAPD_CONF,
                          SambaDC, Slapd, directory_of_users)
from .desktops import (CANVAS_COLOUR_JS, CHROMIUM, CHROMIUM_ARGS, DEMO_START_TIMEOUT, DemoProcess,
                       ShadowRdpHost, XrdpDesktop, XvfbScreen, XvncDesktop, hex_rgb,
                       wait_for_desktop_colour)
from .network import (BreakableProxy, Dnsmasq, HAProxy, SSHD_CONFIG, Sshd)

__all__ = ["BreakableProxy", "HAProxy", "Postgres", "CANVAS_COLOUR_JS", "CHROMIUM",
           "CHROMIUM_ARGS", "DEMO_START_TIMEOUT", "DemoProcess", "DirectoryUserSpec", "Dnsmasq",
           "GroupSpec", "Organisation", "Processes", "SLAPD_CONF", "SSHD_CONFIG",
           "STARTUP_TIMEOUT", "SambaDC", "ShadowRdpHost", "Slapd", "Sshd", "TestbedError",
           "XrdpDesktop", "XvfbScreen", "XvncDesktop", "directory_of_users", "exit_on_sigterm",
           "free_port", "hex_rgb", "require", "self_signed_certificate",
           "wait_for_desktop_colour", "wait_for_port", "write_private"]
