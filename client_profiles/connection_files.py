"""Connection files for native viewers, from a profile and the local tunnel's address.

Native viewers never talk to a desktop directly: they connect to ``pforte connect``'s loopback
port, which carries their stream through the gateway with a fresh ticket per connection. The
files therefore name only the tunnel, never a desktop or a secret. Pure functions.
"""

from __future__ import annotations

from .profiles import Profile


def _size(profile: Profile) -> tuple[int, int] | None:
    if profile.display.resolution == "auto":
        return None
    width, height = profile.display.resolution.split("x")
    return int(width), int(height)


def vnc_file(profile: Profile, host: str, port: int) -> str:
    """A TigerVNC ``vncviewer`` configuration file."""
    lines = ["TigerVNC Configuration file Version 1.0", f"ServerName={host}::{port}",
             "Shared=1", f"FullScreen={int(profile.display.fullscreen)}",
             f"FullScreenMode={'All' if profile.display.monitors > 1 else 'Current'}",
             f"AcceptClipboard={int(profile.redirect.clipboard)}",
             f"SendClipboard={int(profile.redirect.clipboard)}"]
    size = _size(profile)
    if size:
        lines.append(f"DesktopSize={size[0]}x{size[1]}")
    return "\n".join(lines) + "\n"


def rdp_file(profile: Profile, host: str, port: int) -> str:
    """An ``.rdp`` file for mstsc and FreeRDP."""
    lines = [f"full address:s:{host}:{port}",
             f"screen mode id:i:{2 if profile.display.fullscreen else 1}",
             f"use multimon:i:{int(profile.display.monitors > 1)}",
             f"redirectclipboard:i:{int(profile.redirect.clipboard)}",
             f"redirectprinters:i:{int(profile.redirect.printing)}",
             f"usbdevicestoredirect:s:{'*' if profile.redirect.usb else ''}",
             "drivestoredirect:s:", "prompt for credentials:i:0",
             f"keyboardhook:i:{2 if profile.display.fullscreen else 0}"]
    size = _size(profile)
    if size:
        lines += [f"desktopwidth:i:{size[0]}", f"desktopheight:i:{size[1]}"]
    return "\r\n".join(lines) + "\r\n"


def vv_file(profile: Profile, host: str, port: int, title: str = "Pforte") -> str:
    """A ``remote-viewer`` (SPICE) file."""
    lines = ["[virt-viewer]", "type=spice", f"host={host}", f"port={port}", f"title={title}",
             f"fullscreen={int(profile.display.fullscreen)}",
             f"enable-usbredir={int(profile.redirect.usb)}",
             "enable-smartcard=0", "delete-this-file=1"]
    return "\n".join(lines) + "\n"


RENDERERS = {"vnc": vnc_file, "rdp": rdp_file, "spice": vv_file}
EXTENSIONS = {"vnc": ".vnc", "rdp": ".rdp", "spice": ".vv"}
MEDIA_TYPES = {"vnc": "application/x-vnc", "rdp": "application/x-rdp",
               "spice": "application/x-virt-viewer"}
