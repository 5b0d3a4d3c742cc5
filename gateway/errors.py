"""Errors of the gateway package (the ticket and desktop errors it shares live in ``wire.errors``).

Hierarchy::

    GatewayError               a connection is refused; ``close`` says how
    ├── TargetNotAllowed       the ticket names a target outside ``allowed_targets``
    ├── BrokerUnavailable      the broker did not record the redemption
    └── Refused                any other refusal (busy, draining, no ticket in time, ...)

The websocket handler in ``server`` turns each (and every ``wire.errors.TicketError`` and
``DesktopError``) into its close code in exactly one place; exception text never reaches a client.
"""

from __future__ import annotations

from wire.closes import Close


class GatewayError(Exception):
    close = Close.INTERNAL


class TargetNotAllowed(GatewayError):
    close = Close.TARGET


class BrokerUnavailable(GatewayError):
    close = Close.BROKER


class Refused(GatewayError):
    def __init__(self, close: Close) -> None:
        super().__init__(close.word)
        self.close = close
