"""Client profiles: TOML layers merged base → device class → site → single device, then checked.

Theory of operation
-------------------
A profile directory holds ``base.toml``, ``classes/NAME.toml``, ``sites/NAME.toml`` and
``devices/ID.toml``. A device's effective profile merges the layers that exist for it, tables key
by key (a later layer wins), and is then read into a frozen :class:`Profile`: every value checked,
unknown keys refused, each mistake reported with the file that set it, the key and what was
expected. Merging and checking are pure; only :func:`load_layers` touches the disk.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wire.config import Section
from wire.errors import ConfigError

VIEWERS = ("browser", "vnc", "rdp", "spice")
ON_LOGOFF = ("login", "shutdown", "restart")
_RESOLUTION = re.compile(r"^(auto|\d{3,5}x\d{3,5})$")
_LAYOUT = re.compile(r"^[a-z]{2,8}(\([a-z0-9_]{1,32}\))?$")   # de, us, de(nodeadkeys)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class Kiosk:
    auto_connect: bool            # open the only desktop without asking
    reconnect_on_drop: bool
    on_logoff: str                # login | shutdown | restart


@dataclass(frozen=True)
class Display:
    resolution: str               # "auto" or WIDTHxHEIGHT
    monitors: int
    fullscreen: bool


@dataclass(frozen=True)
class Redirect:
    """What the viewer is told it may redirect (policy, enforced by the viewer)."""
    clipboard: bool
    usb: bool
    printing: bool


@dataclass(frozen=True)
class Profile:
    tenant: str
    pools: tuple[str, ...]        # offered on this device; empty: all the user is entitled to
    viewer: str
    kiosk: Kiosk
    display: Display
    keyboard_layout: str          # the thin client's X keyboard map (setxkbmap -layout)
    language: str
    redirect: Redirect


Layers = list[tuple[str, dict[str, Any]]]   # (file, table) in merge order


def merge(layers: Layers) -> tuple[dict[str, Any], dict[str, str]]:
    """Merge layers; also says which file set each dotted key (for error messages)."""
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}

    def into(target: dict, source: dict, prefix: str, path: str) -> None:
        for key, value in source.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict) and isinstance(target.get(key), dict):
                into(target[key], value, f"{dotted}.", path)
            else:
                target[key] = _copy(value)
                for k in _keys(value, dotted):
                    origin[k] = path
    for path, table in layers:
        into(merged, table, "", path)
    return merged, origin


def _copy(value: Any) -> Any:
    return {k: _copy(v) for k, v in value.items()} if isinstance(value, dict) else value


def _keys(value: Any, dotted: str) -> list[str]:
    if isinstance(value, dict):
        return [k for key, v in value.items() for k in _keys(v, f"{dotted}.{key}")] or [dotted]
    return [dotted]


def resolve(layers: Layers) -> Profile:
    """The effective profile of merged layers.

    Raises:
        ConfigError: naming the file that set the offending key (or the last layer).
    """
    merged, origin = merge(layers)
    fallback = layers[-1][0] if layers else "<no profile>"
    try:
        return _profile(Section(fallback, merged))
    except ConfigError as exc:
        raise ConfigError(origin.get(exc.key, fallback), exc.key, exc.expected) from None


def _choice(s: Section, name: str, default: str, choices: tuple[str, ...]) -> str:
    value = s.str(name, default)
    if value not in choices:
        raise s.fail(name, f"expected one of {', '.join(choices)}, got {value!r}")
    return value


def _layout(keyboard: Section) -> str:
    layout = keyboard.str("layout", "de")
    if not _LAYOUT.match(layout):
        raise keyboard.fail("layout", f"expected an XKB layout like de or de(nodeadkeys), "
                                      f"got {layout!r}")
    return layout


def _profile(root: Section) -> Profile:
    kiosk, display = root.table("kiosk", {}), root.table("display", {})
    keyboard, redirect = root.table("keyboard", {}), root.table("redirect", {})
    resolution = display.str("resolution", "auto")
    if not _RESOLUTION.match(resolution):
        raise display.fail("resolution", f"expected auto or WIDTHxHEIGHT, got {resolution!r}")
    profile = Profile(
        tenant=root.str("tenant"),
        pools=tuple(root.str_list("pools", [], non_empty=False)),
        viewer=_choice(root, "viewer", "browser", VIEWERS),
        kiosk=Kiosk(kiosk.bool("auto_connect", True),
                    kiosk.bool("reconnect_on_drop", True),
                    _choice(kiosk, "on_logoff", "login", ON_LOGOFF)),
        display=Display(resolution, display.int("monitors", 1, minimum=1, maximum=4),
                        display.bool("fullscreen", True)),
        keyboard_layout=_layout(keyboard),
        language=_choice(keyboard, "language", "de", ("de", "en")),
        redirect=Redirect(redirect.bool("clipboard", False), redirect.bool("usb", False),
                          redirect.bool("printing", True)),
    )
    for section in (kiosk, display, keyboard, redirect, root):
        section.done()
    return profile


def check_directory(directory: Path, tenants: set[str]) -> int:
    """Check a whole profile directory before any device boots with it: every file parses, and
    every profile a device can get — base with each class, each site, each pair of them, and
    each device file — is valid and names one of ``tenants``. Returns how many were checked.

    Raises:
        ConfigError: the first mistake, naming the file that made it.
    """
    classes, sites, devices = (sorted(p.stem for p in (directory / sub).glob("*.toml"))
                               for sub in ("classes", "sites", "devices"))
    combinations = [{"device_class": c, "site": s} for c in (None, *classes)
                    for s in (None, *sites)] + [{"device": d} for d in devices]
    for combination in combinations:
        layers = load_layers(directory, **{"device": None, **combination})
        profile = resolve(layers)
        if profile.tenant not in tenants:
            origin = merge(layers)[1].get("tenant", layers[-1][0])
            raise ConfigError(origin, "tenant",
                              f"one of the broker's tenants, got {profile.tenant!r}")
    return len(combinations)


def load_layers(directory: Path, *, device: str | None, device_class: str | None = None,
                site: str | None = None) -> Layers:
    """The layer files that exist for a device, in merge order.

    Raises:
        ConfigError: a file is not valid TOML, or a name is not a plain file name.
    """
    candidates = [directory / "base.toml"]
    for sub, name in (("classes", device_class), ("sites", site), ("devices", device)):
        if name is None:
            continue
        if not _NAME.match(name):
            raise ConfigError(str(directory), sub, f"expected a plain name, got {name!r}")
        candidates.append(directory / sub / f"{name}.toml")
    layers = []
    for path in candidates:
        data = _parsed(path)
        if data is not None:
            layers.append((str(path), data))
    if not layers:
        raise ConfigError(str(directory), "", "expected at least base.toml")
    return layers


_PARSED: dict[Path, tuple[tuple[int, int], dict[str, Any]]] = {}  # path → ((mtime, size), data)


def _parsed(path: Path) -> dict[str, Any] | None:
    """A layer file's TOML (None if there is no such file), parsed again only when it changed:
    every thin client fetches its profile at every boot, all at about the same time."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    version = (st.st_mtime_ns, st.st_size)
    cached = _PARSED.get(path)
    if cached is not None and cached[0] == version:
        return cached[1]
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"not valid TOML ({exc})") from None
    _PARSED[path] = (version, data)
    return data
