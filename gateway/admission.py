"""Admission: what the gateway decides about a new connection before it does anything, as pure
functions of values (no sockets, no clock; the one piece of state is :class:`OutageTickets`).

The first websocket message is either a ticket — bare, as text or binary, or as the control
message ``Offer`` (``{"ticket": T, "resumable": true}``) — or ``Resume`` (``{"resume": TOKEN,
"offset": N}``) to reattach a dropped session, or, from a page's RDP client, an RDCleanPath
request whose token is the ticket (:class:`RdpOffer`), alone or after ``ResumableRdp``
(``{"resumable": true}``), which makes it resumable. Anything else is malformed. A ticket
for an RDP desktop is taken only in an RDCleanPath request, and one for another desktop only
outside it (``PROTOCOL``). A ticket's target must
lie inside ``allowed_targets`` (an address: names are never resolved), and a browser's Origin must
be one of ``allowed_origins``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Sequence

from wire import rdcleanpath
from wire.closes import Close
from wire.resume import Offer, ResumableRdp, Resume, decode
from wire.serving import Network
from wire.ticket import Claims, Target

from .errors import Refused
from .rdp import is_connection_request


@dataclass(frozen=True)
class RdpOffer:
    """A page's RDP client's first message: an RDCleanPath request carrying the ticket."""
    ticket: str
    resumable: bool = False


# What a page's RDP client is told in RDCleanPath when the gateway refuses (it shows the status).
HTTP_STATUS = {4400: 400, 4401: 401, 4403: 403, 4408: 408, 4409: 409, 4415: 400, 4429: 429,
               4502: 502, 4503: 503}


def http_status(close: Close) -> int:
    return HTTP_STATUS.get(close.code, 500)


def first_message(data: str | bytes) -> Offer | Resume | RdpOffer | ResumableRdp:
    """What a first message asks for (after :class:`~wire.resume.ResumableRdp`, read the second
    with :func:`resumable_rdp`).

    Raises:
        Refused: MALFORMED for anything that is neither a ticket nor a resume request.
    """
    if isinstance(data, bytes) and rdcleanpath.looks_like_request(data):
        try:
            request = rdcleanpath.decode_request(data)
        except rdcleanpath.Malformed:
            raise Refused(Close.MALFORMED) from None
        if not is_connection_request(request.x224):
            raise Refused(Close.MALFORMED)
        return RdpOffer(request.token)
    if isinstance(data, bytes):
        try:
            data = data.decode("ascii")
        except UnicodeDecodeError:
            raise Refused(Close.MALFORMED) from None
    if not data.startswith("{"):
        return Offer(data)
    message = decode(data)
    if not isinstance(message, (Offer, Resume, ResumableRdp)):
        raise Refused(Close.MALFORMED)
    return message


def resumable_rdp(data: str | bytes) -> RdpOffer:
    """The second message of a client that announced :class:`~wire.resume.ResumableRdp`: its
    RDCleanPath request, for a resumable session.

    Raises:
        Refused: MALFORMED for anything else.
    """
    offer = first_message(data)
    if not isinstance(offer, RdpOffer):
        raise Refused(Close.MALFORMED)
    return replace(offer, resumable=True)


def protocol_matches(offer: Offer | RdpOffer, target: Target) -> bool:
    """Whether the client that offered the ticket is one its desktop takes."""
    return (target.protocol == "rdp") == isinstance(offer, RdpOffer)


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
