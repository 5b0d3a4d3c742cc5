"""TOML configuration: a typed reader that reports every mistake with file, key and expectation.

Broker, gateway and client profiles read their files with :class:`Section`, so every process words
its errors alike. Call :meth:`Section.done` after reading a table to refuse unknown keys.
"""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Any

from .errors import ConfigError

_MISSING = object()


class Section:
    """A view of one TOML table that knows where it came from.

    Every accessor raises :class:`ConfigError` naming file, dotted key and what was expected.
    Call :meth:`done` after reading to refuse unknown keys (typos must not pass silently).
    """

    def __init__(self, path: str, data: dict[str, Any], prefix: str = "") -> None:
        self.path = path
        self.data = data
        self.prefix = prefix
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def fail(self, name: str, expected: str) -> ConfigError:
        return ConfigError(self.path, self.key(name), expected)

    def _get(self, name: str, default: Any) -> Any:
        self._seen.add(name)
        if name in self.data:
            return self.data[name]
        if default is _MISSING:
            raise self.fail(name, "is required but missing")
        return default

    def value(self, name: str, default: Any = _MISSING) -> Any:
        """A setting as TOML gave it, for the caller to check."""
        return self._get(name, default)

    def str(self, name: str, default: Any = _MISSING) -> str:
        value = self._get(name, default)
        if not isinstance(value, str) or (not value and default is _MISSING):
            raise self.fail(name, "expected a non-empty string")
        return value

    def int(self, name: str, default: Any = _MISSING, *, minimum: int | None = None,
            maximum: int | None = None) -> int:
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, "expected an integer")
        if minimum is not None and value < minimum:
            raise self.fail(name, f"expected an integer >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise self.fail(name, f"expected an integer <= {maximum}, got {value}")
        return value

    def float(self, name: str, default: Any = _MISSING, *, minimum: float = 0.0) -> float:
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
            raise self.fail(name, f"expected a number >= {minimum}")
        return float(value)

    def bool(self, name: str, default: Any = _MISSING) -> bool:
        value = self._get(name, default)
        if not isinstance(value, bool):
            raise self.fail(name, "expected true or false")
        return value

    def str_list(self, name: str, default: Any = _MISSING, *, non_empty: bool = True) -> list[str]:
        value = self._get(name, default)
        if (not isinstance(value, list) or not all(isinstance(v, str) and v for v in value)
                or (non_empty and not value)):
            raise self.fail(name, "expected a list of non-empty strings"
                            + (" with at least one entry" if non_empty else ""))
        return list(value)

    def file(self, name: str, default: Any = _MISSING) -> Path:
        """A path to an existing, readable file; relative paths are relative to the config file."""
        raw = self.str(name, default)
        path = Path(raw)
        if not path.is_absolute():
            path = Path(self.path).parent / path
        if not path.is_file():
            raise self.fail(name, f"expected a readable file, but {str(path)!r} does not exist")
        return path

    def listen(self, name: str, default: Any = _MISSING) -> tuple[str, int]:
        raw = self.str(name, default)
        host, sep, port = raw.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise self.fail(name, f"expected HOST:PORT, got {raw!r}")
        return host.strip("[]"), int(port)

    def table(self, name: str, default: Any = _MISSING) -> "Section":
        value = self._get(name, default)
        if not isinstance(value, dict):
            raise self.fail(name, "expected a table")
        return Section(self.path, value, f"{self.key(name)}.")

    def tables(self, name: str, *, non_empty: bool = True) -> list["Section"]:
        value = self._get(name, [] if not non_empty else _MISSING)
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value) or (
                non_empty and not value):
            raise self.fail(name, "expected an array of tables ([[...]])"
                            + (" with at least one entry" if non_empty else ""))
        return [Section(self.path, v, f"{self.key(name)}[{i}].") for i, v in enumerate(value)]

    def done(self) -> None:
        unknown = sorted(set(self.data) - self._seen)
        if unknown:
            raise self.fail(unknown[0], "is not a known setting (misspelt?)")


def load_toml(path: str | Path) -> Section:
    """Parse a TOML file into a root :class:`Section`.

    Raises:
        ConfigError: the file is missing or not valid TOML (with line and column).
    """
    path = str(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML ({exc})") from None
    return Section(path, data)


def read_secret(path: Path) -> bytes:
    """The content of a secret file, without a trailing newline."""
    return path.read_bytes().rstrip(b"\r\n")


def networks(s: Section, name: str, default: Any = _MISSING) -> tuple:
    """A list of networks ("10.0.0.0/8", "127.0.0.1")."""
    nets = []
    for i, raw in enumerate(s.str_list(name, default, non_empty=default is _MISSING)):
        try:
            nets.append(ipaddress.ip_network(raw, strict=False))
        except ValueError:
            raise ConfigError(s.path, s.key(f"{name}[{i}]"),
                              f"expected a network like 10.0.0.0/8, got {raw!r}") from None
    return tuple(nets)


def read_aes_key(s: Section, name: str) -> bytes:
    path = s.file(name)
    key = read_secret(path)
    try:
        raw = bytes.fromhex(key.decode())
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise s.fail(name, "expected a file holding 64 hex digits (a 256-bit key)")
    return raw
