"""A connection's way from its first message to the relay.

1. **Admission.** The client sends its ticket as the first message within ``handshake_timeout``
   seconds (never in the URL), or a resume token (:mod:`gateway.admission` reads it). A draining
   or full gateway refuses before reading.
2. **Redemption.** The ticket is verified (signature, lifetime, audience), its target checked
   against ``allowed_targets``, then redeemed with the broker, which records the ticket id
   atomically: a ticket is good once across all gateways. An unreachable broker refuses the
   connection (fail closed) — except an outage ticket, admitted once by this gateway's memory
   (its session carries the ticket as proof until a broker recorded it).
3. **The desktop.** Reached and, per protocol, authenticated (:mod:`gateway.desktops`); the
   session begins in the :class:`~gateway.session_table.SessionTable`; a resumable one gets its
   token; the viewer is greeted.
4. **The relay** takes over (:mod:`gateway.relaying`). A resume token instead reattaches a held
   session here, or is carried to the sibling worker that holds it (:mod:`gateway.workers`).

Every refusal is a member of :class:`wire.closes.Close`; exception text never reaches the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from wire import events, rdcleanpath, ticket
from wire.closes import Close, EndReason
from wire.errors import DesktopError, TicketError
from wire.resume import Offer, ReplayBuffer, ResumableRdp, Resume, ResumeToken, encode

from . import admission
from .broker_client import BrokerClient
from .clipboard import StreamNotUnderstood
from .config import GatewayConfig
from .desktops import reach_desktop, side_for
from .errors import BrokerUnavailable, GatewayError, Refused, TargetNotAllowed
from .metrics import Metrics
from .relay import Counters
from .relaying import Relaying
from .session_table import RelaySession, SessionTable, State
from .doorway import Upgrade
from .viewer import Ended, ViewerLink
from .workers import Workers, carry

logger = logging.getLogger("pforte.gateway")


@dataclass(frozen=True)
class Redeemed:
    """A first message that was a ticket, now redeemed."""
    claims: ticket.Claims
    resumable: bool
    redeem_seconds: float = 0.0     # verify and redeem: the gateway's part of the logon
    outage_ticket: str | None = None  # admitted by the gateway's memory: no broker recorded it


@dataclass(frozen=True)
class Carry:
    """A first message that asks to reattach a session a sibling worker holds."""
    worker: int
    resume: Resume


@dataclass(frozen=True)
class Reattach:
    """A first message that asks to reattach a held session."""
    session: RelaySession
    offset: int


class Handshake:
    """Admits connections and brings each to its relay."""

    def __init__(self, config: GatewayConfig, public_key: Ed25519PublicKey,
                 broker: BrokerClient, table: SessionTable, metrics: Metrics,
                 relaying: Relaying, workers: Workers | None, report_soon: asyncio.Event,
                 draining: Callable[[], bool]) -> None:
        self.config = config
        self.public_key = public_key
        self.broker = broker
        self.table = table
        self.metrics = metrics
        self.relaying = relaying
        self.workers = workers
        self.report_soon = report_soon    # set: the brokers hear of an outage admission now
        self.draining = draining          # a draining gateway admits no one
        self.outage_tickets = admission.OutageTickets()

    async def run(self, viewer: ViewerLink, upgrade: Upgrade, source: str,
                  started: float) -> None:
        """From the first message to the relay: admit, then serve, reattach or carry."""
        try:
            try:
                admitted = await self._admit(viewer, source)
            except (GatewayError, TicketError) as exc:
                self.metrics.refused(exc.close.word)
                events.log(logger, "connection.refused", source=source, reason=exc.close.word)
                viewer.close_with(exc.close)
                return
            if isinstance(admitted, Carry):
                await carry(viewer, upgrade, source, self.workers.sockets[admitted.worker],
                            admitted.resume, self.config.max_message)
            elif isinstance(admitted, Reattach):
                self.relaying.reattach(viewer, admitted.session, admitted.offset)
            else:
                await self._serve(viewer, admitted, started, source)
        except Exception:  # a bug must still end in a close code, never a dropped socket
            logger.exception("serving a connection from %s failed", source)
            self.metrics.refused(Close.INTERNAL.word)
            viewer.close_with(Close.INTERNAL)

    async def _admit(self, viewer: ViewerLink, source: str) -> Redeemed | Reattach | Carry:
        """Read and check the first message: the claims of a redeemed ticket (and whether the
        client asked for a resumable session), or a held session to reattach and the client's
        offset in it.

        Raises:
            Refused, TicketError, TargetNotAllowed, BrokerUnavailable.
        """
        if self.draining():
            raise Refused(Close.DRAINING)
        if (self.table.open_count > self.config.max_sessions
                or self.table.from_source(source) > self.config.max_per_source):
            raise Refused(Close.BUSY)
        async with self._within_handshake():
            first = admission.first_message(await self._message(viewer))
            if isinstance(first, ResumableRdp):  # its RDCleanPath request follows
                first = admission.resumable_rdp(await self._message(viewer))
        received = time.perf_counter()
        if isinstance(first, admission.RdpOffer):
            try:
                return await self._redeem(first, received)
            except (GatewayError, TicketError) as exc:   # the page's client shows the status
                viewer.send_binary(rdcleanpath.encode_error(admission.http_status(exc.close)))
                raise
        if not isinstance(first, Offer):
            if self.workers and (holder := self.workers.holder(first.token)) is not None:
                return Carry(holder, first)
            session = self.table.resumable(first.token)
            if session is None or session.state is State.ENDED:
                raise Refused(Close.RESUME)
            return Reattach(session, first.offset)
        return await self._redeem(first, received)

    @contextlib.asynccontextmanager
    async def _within_handshake(self):
        """Raises Refused (TIMEOUT) when the client's first messages take too long."""
        try:
            async with asyncio.timeout(self.config.handshake_timeout):
                yield
        except asyncio.TimeoutError:
            raise Refused(Close.TIMEOUT) from None

    @staticmethod
    async def _message(viewer: ViewerLink) -> str | bytes:
        """Raises Refused (MALFORMED) when the client left instead."""
        msg = await viewer.receive()
        if isinstance(msg, Ended):
            raise Refused(Close.MALFORMED)
        return msg.data

    async def _redeem(self, offer: Offer | admission.RdpOffer, received: float) -> Redeemed:
        """Verify the offered ticket and record its single use with the broker.

        Raises:
            TicketError, TargetNotAllowed, Refused (PROTOCOL), BrokerUnavailable.
        """
        claims = ticket.verify(self.public_key, offer.ticket, now=time.time(),
                               audience=self.config.audience)
        if not admission.target_allowed(claims.target, self.config.allowed_targets):
            raise TargetNotAllowed(claims.target.host)
        if not admission.protocol_matches(offer, claims.target):
            raise Refused(Close.PROTOCOL)
        try:
            await self.broker.redeem(claims)
        except BrokerUnavailable:
            if not self.outage_tickets.admit_once(claims, time.time()):
                raise
            logger.warning("no broker recorded ticket %s: admitted once as an outage ticket "
                           "(session %s of %s@%s)", claims.ticket_id, claims.session, claims.user,
                           claims.tenant)
            return Redeemed(claims, offer.resumable, time.perf_counter() - received,
                            outage_ticket=offer.ticket)
        return Redeemed(claims, offer.resumable, time.perf_counter() - received)

    async def _serve(self, viewer: ViewerLink, admitted: Redeemed, started: float,
                     source: str) -> None:
        """Reach the desktop, begin the session, greet the viewer, and hand it to the relay."""
        claims = admitted.claims
        self.metrics.sessions_open += 1
        self.metrics.sessions_total += 1
        reaching = time.perf_counter()
        try:
            link = await reach_desktop(claims, self.config, self.metrics.clipboard)
        except (OSError, asyncio.TimeoutError, DesktopError, TicketError) as exc:
            logger.warning("session %s: desktop %s:%s unavailable: %s%s", claims.session,
                           claims.target.host, claims.target.port, type(exc).__name__,
                           f" ({str(exc)!r})" if isinstance(exc, DesktopError) else "")
            self.metrics.refused(Close.DESKTOP.word)
            if claims.target.protocol == "rdp":
                viewer.send_binary(rdcleanpath.encode_error(admission.http_status(Close.DESKTOP)))
            viewer.close_with(Close.DESKTOP)
            self.relaying.ended(claims, Counters(), EndReason.DESKTOP_UNAVAILABLE)
            return
        desktop_seconds = time.perf_counter() - reaching
        session = RelaySession(claims, link, viewer, outage_ticket=admitted.outage_ticket,
                               token=self._new_token() if admitted.resumable else None)
        self.table.begin(viewer, session)
        if admitted.outage_ticket:              # the broker hears of it as soon as it can
            self.report_soon.set()
        refusal = await self._greet(viewer, session)
        if refusal is not None:
            close, reason = refusal
            viewer.close_with(close)
            self.relaying.end(session, reason)
            return
        self.metrics.handshake(time.perf_counter() - started)
        self.broker.connected(claims, admitted.redeem_seconds, desktop_seconds)
        events.log(logger, "session.start", session=claims.session, tenant=claims.tenant,
                   user=claims.user, source=source, host=claims.target.host,
                   port=claims.target.port, protocol=claims.target.protocol,
                   resumable=session.token is not None)
        self.relaying.relay(viewer, session)

    async def _greet(self, viewer: ViewerLink,
                     session: RelaySession) -> tuple[Close, EndReason] | None:
        """The resume token (resumable sessions) and the viewer's half of the desktop's
        handshake; None, or how the session ends when the viewer does not complete it."""
        link = session.link
        try:
            if session.token is not None:
                link.replay = ReplayBuffer()
                viewer.send_text(encode(ResumeToken(session.token, self.config.name)))
            await side_for(session.claims.target.protocol).greet_viewer(
                viewer, link, self.config.handshake_timeout)
        except asyncio.TimeoutError:
            self.metrics.refused(Close.VIEWER_TIMEOUT.word)
            return Close.VIEWER_TIMEOUT, EndReason.VIEWER_TIMEOUT
        except OSError:  # the viewer left, or spoke no RFB 3.7+
            return Close.VIEWER_PROTOCOL, EndReason.VIEWER_LEFT
        except StreamNotUnderstood as exc:  # sent along with its ClientInit
            logger.warning("session %s: %s (viewer: %s)", session.claims.session,
                           Close.POLICY.reason, exc)
            self.metrics.refused(Close.POLICY.word)
            return Close.POLICY, EndReason.POLICY
        return None

    def _new_token(self) -> str:
        return self.workers.new_token() if self.workers else secrets.token_urlsafe(32)
