"""Errors that cross package boundaries.

Hierarchy::

    WireError
    ├── ConfigError            a config file is wrong (file, key, what was expected)
    ├── TicketError            a ticket is refused; ``close`` says how the gateway answers
    │   ├── TicketMalformed    not a ticket at all
    │   ├── TicketForged       signature does not verify (forged or tampered), or its sealed
    │   │                      secret does not open
    │   ├── TicketExpired      outside its lifetime
    │   ├── TicketWrongAudience minted for another gateway
    │   └── TicketReplayed     already redeemed
    └── DesktopError           the desktop refused or failed the RFB handshake
"""

from __future__ import annotations

from .closes import Close


class WireError(Exception):
    """Base of the errors in this package."""


class ConfigError(WireError):
    """A configuration file is wrong.

    Attributes:
        path: the file.
        key: dotted key inside the file ("" for the file as a whole).
        expected: what was expected there, in words.
    """

    def __init__(self, path: str, key: str, expected: str) -> None:
        self.path = path
        self.key = key
        self.expected = expected
        where = f"{path}: {key}" if key else path
        super().__init__(f"{where}: {expected}")


class TicketError(WireError):
    close = Close.FORGED


class TicketMalformed(TicketError):
    close = Close.MALFORMED


class TicketForged(TicketError):
    close = Close.FORGED


class TicketExpired(TicketError):
    close = Close.EXPIRED


class TicketWrongAudience(TicketError):
    close = Close.AUDIENCE


class TicketReplayed(TicketError):
    close = Close.REPLAYED


class DesktopError(WireError):
    """The desktop could not be reached or refused the handshake."""
    close = Close.DESKTOP
