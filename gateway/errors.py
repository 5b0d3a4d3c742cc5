"""Errors of the gateway package.

Hierarchy::

    GatewayError
    ├── ConfigError            a config file is wrong (file, key, what was expected)
    ├── TicketError            a ticket is refused; ``reason`` is a short stable word for metrics
    │   ├── TicketMalformed    not a ticket at all
    │   ├── TicketForged       signature does not verify (forged or tampered)
    │   ├── TicketExpired      outside its lifetime
    │   ├── TicketWrongAudience minted for another gateway
    │   ├── TicketReplayed     already redeemed
    │   └── TargetNotAllowed   names a target outside the gateway's allowed networks
    └── DesktopError           the desktop refused or failed the connection

The websocket handler in ``server`` translates each into one close code and a short reason in exactly
one place; exception text never reaches a client.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of all gateway errors."""


class ConfigError(GatewayError):
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


class TicketError(GatewayError):
    reason = "invalid"


class TicketMalformed(TicketError):
    reason = "malformed"


class TicketForged(TicketError):
    reason = "forged"


class TicketExpired(TicketError):
    reason = "expired"


class TicketWrongAudience(TicketError):
    reason = "audience"


class TicketReplayed(TicketError):
    reason = "replayed"


class TargetNotAllowed(TicketError):
    reason = "target"


class DesktopError(GatewayError):
    """The desktop could not be reached or refused the handshake."""
