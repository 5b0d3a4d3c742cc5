"""Admission: what the gateway decides about a new connection before it does anything, as pure
functions of values (no sockets, no clock; the one piece of state is :class:`OutageTickets`).

The first websocket message is either a ticket — bare, as text or binary, or as the control
message ``Offer`` (``{"ticket": T, "resumable": true}``) — or ``Resume`` (``{"resume": TOKEN,
"offset": N}``) to reattach a dropped session. Anything else is malformed. A ticket's target must
lie inside ``allowed_targets`` (an address: names are never resolved), and a browser's Origin must
be one of ``allowed_origins``.
"""

from __future__ import annotations

import ipaddress
from typing import Sequence

from wire.closes import Close
from wire.resume import Offer, Resume, decode
from wire.serving import Network
from wire.ticket import Claims, Target

from .errors import Refused


def first_message(data: str | bytes) -> Offer | Resume:
    """What a first message asks for.

    Raises:
        Refused: MALFORMED for anything that is neither a ticket nor a resume request.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("ascii")
        except UnicodeDecodeError:
            raise Refused(Close.MALFORMED) from None
    if not data.startswith("{"):
        return Offer(data)
    message = decode(data)
    if not isinstance(message, (Offer, Resume)):
        raise Refused(Close.MALFORMED)
    return message


def target_allowed(target: Target, allowed: Sequence[Network]) -> bool:
    try:
        address = ipaddress.ip_address(target.host)
    except ValueError:
        return False  # names are not resolved: the broker puts addresses into tickets
    return any(address in net for net in allowed)


def origin_allowed(origin: str | None, allowed: Sequence[str]) -> bool:
    """Browsers always send Origin; native clients (tunnel, agent) send none."""
    return origin is None or not allowed or origin in allowed


class OutageTickets:
    """Tickets a broker minted from a reconnect pass while its database was down (the ``outage``
    claim): when no broker can record the redemption, this gateway admits each of them once, by
    its own memory, until the ticket expires."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}   # ticket id -> expires_at

    def admit_once(self, claims: Claims, now: float) -> bool:
        if not claims.outage:
            return False
        self._seen = {t: until for t, until in self._seen.items() if until > now}
        if claims.ticket_id in self._seen:
            return False
        self._seen[claims.ticket_id] = claims.expires_at
        return True
