"""The gateway process, as aiohttp glue: routes, the websocket handshake, ticket redemption, the
desktop connection, the relay, resumes, idle sweep, alive reports and the drain.

Theory of operation
-------------------
1. A client opens ``/ws`` (no subprotocol) and sends the ticket as its first message, never in the
   URL. It has ``handshake_timeout`` seconds to do so (:mod:`gateway.admission` reads it). The
   gateway owns that connection from its first byte (:mod:`gateway.viewer`); every other path is
   aiohttp's (health, readiness, metrics, the broker's control calls).
2. The ticket is verified (signature, lifetime, audience), its target checked against
   ``allowed_targets``, then redeemed with the broker, which records the ticket id atomically: a
   ticket is good once across all gateways. An unreachable broker refuses the connection (fail closed).
3. The gateway opens TCP to the ticket's target, and for VNC completes the desktop's RFB handshake
   with the ticket's sealed secret (:mod:`wire.rfb`) before greeting the viewer.
4. Bytes are relayed (:mod:`gateway.relay`) until either side ends; a resumable session whose
   websocket broke is held for ``resume_grace`` seconds (:mod:`gateway.sessions` has the states).
   The broker is told the session ended, with byte counts and an :class:`EndReason`. From the
   greeting on, a session is two protocols calling each other: the task that admitted it has
   ended, and the session's end arrives as a callback (:meth:`Gateway._relay_ended`).

Every close goes through :func:`close_with` with a member of :class:`wire.closes.Close` (code and
reason); exception text never reaches the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from dataclasses import dataclass
from typing import Callable

from aiohttp import web
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from wire import reports, rfb, serving, ticket
from wire.closes import Close, EndReason
from wire.config import load_toml
from wire.errors import DesktopError, TicketError
from wire.resume import (CannotResume, Notice, Offer, ReplayBuffer, Resume, Resumed, ResumeToken,
                         decode, encode)

from . import admission
from .broker_client import BrokerClient
from .clipboard import ClipboardGuard, StreamNotUnderstood
from .config import GatewayConfig, gateway_config
from .errors import BrokerUnavailable, GatewayError, Refused, TargetNotAllowed
from .metrics import Metrics
from .relay import Counters, DesktopLink
from .sessions import RelaySession, SessionTable, State
from .viewer import CLOSE_WAIT, Doorway, Kind, Upgrade, ViewerLink
from .workers import Workers, carry, remove_socket_directory, socket_directory

logger = logging.getLogger("pforte.gateway")

HEARTBEAT = 20.0         # seconds: a viewer silent this long is pinged; one that does not
                         # answer within another half is dropped
ALIVE_INTERVAL = 30.0    # seconds between reports of the sessions this gateway holds
UNRECORDED_INTERVAL = 1.0  # ... while a session admitted with an outage ticket is unrecorded
IDLE_SWEEP = 1.0         # seconds between checks for idle sessions


class ViewerBytes:
    """The viewer's websocket as an RFB byte link: writes collect until the next read (or
    :meth:`flush`) sends them as one binary message; reads take binary messages, keeping what is
    left over in ``pending``."""

    def __init__(self, viewer: ViewerLink) -> None:
        self.viewer = viewer
        self.pending = bytearray()
        self._out = bytearray()

    def write(self, data: bytes) -> None:
        self._out += data

    def flush(self) -> None:
        if self._out:
            data, self._out = bytes(self._out), bytearray()
            self.viewer.send_binary(data)

    async def read_exactly(self, n: int) -> bytes:
        self.flush()
        while len(self.pending) < n:
            msg = await self.viewer.receive()
            if msg.kind is not Kind.BINARY:
                raise ConnectionError("viewer left during the RFB handshake")
            self.pending += msg.data
        data = bytes(self.pending[:n])
        del self.pending[:n]
        return data


def close_with(viewer: ViewerLink, close: Close) -> None:
    viewer.close(close.code, close.reason)



async def _one_request_per_connection(_request: web.Request,
                                      response: web.StreamResponse) -> None:
    """aiohttp's connections end after one response: a client that would send a websocket
    request next on a kept-alive connection opens a new one, which the doorway reads."""
    response.force_close()
    response.headers["Connection"] = "close"


@dataclass(frozen=True)
class _Redeemed:
    """A first message that was a ticket, now redeemed."""
    claims: ticket.Claims
    resumable: bool
    redeem_seconds: float = 0.0     # verify and redeem: the gateway's part of the logon
    outage_ticket: str | None = None  # admitted by the gateway's memory: no broker recorded
                                      # it; the ticket is the proof shown in the alive report


@dataclass(frozen=True)
class _Carry:
    """A first message that asks to reattach a session a sibling worker holds."""
    worker: int
    resume: Resume


@dataclass(frozen=True)
class _Reattach:
    """A first message that asks to reattach a held session."""
    session: RelaySession
    offset: int


class Gateway:
    """Holds the configuration, keys, session table and counters; :meth:`app` builds the
    application."""

    def __init__(self, config: GatewayConfig, broker: BrokerClient | None = None,
                 workers: Workers | None = None) -> None:
        self.config = config
        self.workers = workers
        self.public_key = load_pem_public_key(config.ticket_public_key)
        self.broker = broker or BrokerClient(config.broker_urls, config.report_token,
                                             config.broker_ca_file,
                                             redeem_timeout=config.handshake_timeout)
        self.metrics = Metrics()
        self.draining = False
        self.table = SessionTable()
        self.outage_tickets = admission.OutageTickets()
        # held sessions admitted with an outage ticket that no broker has heard of: their ticket
        self._unrecorded: dict[tuple[str, str], str] = {}
        self._report_now = asyncio.Event()
        self._timers: list[asyncio.Task] = []
        self._handshakes: set[asyncio.Task] = set()

    def site(self, host: str, port: int, ssl_context=None, unix_path=None) -> serving.Site:
        """This gateway's port: ``/ws`` read by :class:`gateway.viewer.Doorway`, the rest by
        :meth:`app`."""
        return serving.Site(self.app(), host, port, ssl_context, self.config.http_idle_timeout,
                            unix_path, front=self.doorway)

    def doorway(self, http: Callable[[], asyncio.Protocol]) -> Callable[[], Doorway]:
        """The protocol factory of the gateway's listener, given aiohttp's."""
        return lambda: Doorway(http, self._take, self._opened, self.config.http_idle_timeout,
                               self.config.max_message)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self.handle_health)
        app.router.add_get("/readyz", self.handle_ready)
        app.router.add_get("/metrics", self.handle_metrics)
        app.router.add_post("/control/close", self.handle_close)
        app.router.add_post("/control/notice", self.handle_notice)
        app.on_startup.append(self._start)
        app.on_response_prepare.append(serving.name_the_server)
        app.on_response_prepare.append(serving.plain_security_headers)
        app.on_response_prepare.append(_one_request_per_connection)
        app.on_cleanup.append(self._stop)
        app[serving.DRAIN] = self.drain  # on SIGTERM, before aiohttp closes the connections
        return app

    async def _start(self, _app: web.Application) -> None:
        await self.broker.start()
        self._timers = [asyncio.create_task(timer()) for timer in
                        (self._report_alive, self._sweep_idle, self._beat)]

    async def _stop(self, _app: web.Application) -> None:
        for task in self._timers:
            task.cancel()
        await self.broker.close()

    def held_sessions(self) -> list[reports.Held]:
        """Every session this gateway holds, attached or awaiting a resume, with its proof."""
        return [reports.Held(tenant, session, ticket_id,
                             self._unrecorded.get((tenant, session)))
                for tenant, session, ticket_id in self.table.held()]

    async def _report_alive(self) -> None:
        """The broker counts a connected session as gone when no gateway vouches for it, and a
        session admitted while no broker could record it (an outage ticket) as pending: every
        :data:`ALIVE_INTERVAL` seconds, and every :data:`UNRECORDED_INTERVAL` while such an
        admission is unrecorded, the broker hears of every session held here, each with its
        proof (a redeemed ticket's id, or the outage ticket itself). Those it has ended hold no
        seat: they are closed."""
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                async with asyncio.timeout(UNRECORDED_INTERVAL if self._unrecorded
                                           else ALIVE_INTERVAL):
                    await self._report_now.wait()
            self._report_now.clear()
            held = self.held_sessions()
            over = await self.broker.alive(held) if held else []
            if over is None:
                continue
            for reported in held:                   # recorded now (or ended meanwhile)
                self._unrecorded.pop((reported.tenant, reported.session), None)
            for tenant, session_id in over:
                logger.warning("the broker has ended session %s of %s: closed here", session_id,
                               tenant)
                self._log_off(session_id, tenant)

    async def handle_health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "sessions": self.metrics.sessions_open})

    async def handle_ready(self, request: web.Request) -> web.Response:
        """Load balancers send new sessions only while this says ready."""
        if self.draining:
            return web.json_response({"status": "draining"}, status=503)
        return web.json_response({"status": "ready"})

    async def handle_metrics(self, request: web.Request) -> web.Response:
        self.metrics.sessions_detached = len(self.table.detached())
        return web.Response(text=self.metrics.prometheus(), content_type="text/plain")

    async def handle_close(self, request: web.Request) -> web.Response:
        """The broker logged a session off: close its connections here (and any held for resume)."""
        if not serving.bearer_is(request, self.config.report_token):
            raise web.HTTPUnauthorized(text="token missing or wrong\n")
        try:
            session_id = (await request.json())["session"]
        except (ValueError, KeyError, TypeError):
            raise web.HTTPBadRequest(text="expected {\"session\": ID}\n") from None
        self._log_off(session_id)
        return web.Response(status=204)

    def _log_off(self, session_id: str, tenant: str | None = None) -> None:
        """Close a session's connections here (and any held for a resume): it is over."""
        for session in self.table.with_id(session_id):
            if tenant is not None and session.claims.tenant != tenant:
                continue
            session.ended_by = EndReason.LOGGED_OFF  # not held for a resume
            if session.ws is not None:
                close_with(session.ws, Close.LOGOFF)
            else:
                self._end(session, EndReason.LOGGED_OFF)

    async def handle_notice(self, request: web.Request) -> web.Response:
        """The broker has a notice for a session's user (a drain, an admin's message): send it on
        the session's stream, where the client reads control messages (resumable streams: the
        portal's page, the thin client's tunnel), and again after a resume. Answers how many
        connections it reached."""
        if not serving.bearer_is(request, self.config.report_token):
            raise web.HTTPUnauthorized(text="token missing or wrong\n")
        try:
            body = await request.json()
            notice = Notice(body["text"], body.get("deadline", 0))
        except (ValueError, KeyError, TypeError):
            notice = None
        if notice is None or decode(encode(notice)) != notice:
            raise web.HTTPBadRequest(text='expected {"session": ID, "text": TEXT, "deadline": '
                                          'UNIX_SECONDS}\n')
        reached = 0
        for session in self.table.with_id(body.get("session")):
            if session.token is None:
                continue  # a plain stream: its viewer would take a text frame for an error
            session.notice = encode(notice)
            if session.ws is not None and not session.ws.closed:
                session.ws.send_text(session.notice)  # dropped just now: sent after its resume
                reached += 1
        return web.json_response({"reached": reached})

    def client_address(self, upgrade: Upgrade) -> str:
        """The client's address; X-Forwarded-For counts only when the peer is a trusted proxy (or
        a sibling worker carrying a resume, over its private socket)."""
        forwarded = upgrade.headers.get("x-forwarded-for")   # every line, joined in order
        if self.workers is not None and upgrade.via_unix:
            return forwarded or "-"
        return serving.client_address(upgrade.peer, [forwarded] if forwarded else [],
                                      self.config.trusted_proxies)

    def _take(self, upgrade: Upgrade) -> tuple[int, str] | None:
        """Whether to answer a websocket request 101: None, or the refusal's status and text."""
        if not admission.origin_allowed(upgrade.headers.get("origin"),
                                        self.config.allowed_origins):
            self.metrics.refused("origin")
            return 403, "origin not allowed\n"
        return None

    def _opened(self, viewer: ViewerLink, upgrade: Upgrade) -> None:
        """A websocket is open: count it (until its connection is gone) and admit it."""
        source = self.client_address(upgrade)
        self.table.opened(viewer, source)
        viewer.on_lost = lambda: self.table.closed(viewer, source)
        task = asyncio.ensure_future(self._handshake(viewer, upgrade, source, time.perf_counter()))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, viewer: ViewerLink, upgrade: Upgrade, source: str,
                         started: float) -> None:
        """From the first message to the relay: admit, then serve, reattach or carry."""
        try:
            try:
                admitted = await self._admit(viewer, source)
            except (GatewayError, TicketError) as exc:
                self.metrics.refused(exc.close.word)
                logger.info("refused connection from %s: %s", source, exc.close.word)
                close_with(viewer, exc.close)
                return
            if isinstance(admitted, _Carry):
                await carry(viewer, upgrade, source, self.workers.sockets[admitted.worker],
                            admitted.resume, self.config.max_message)
            elif isinstance(admitted, _Reattach):
                self._reattach(viewer, admitted.session, admitted.offset)
            else:
                await self._serve(viewer, admitted, started)
        except Exception:  # a bug must still end in a close code, never a dropped socket
            logger.exception("serving a connection from %s failed", source)
            self.metrics.refused(Close.INTERNAL.word)
            close_with(viewer, Close.INTERNAL)

    async def _admit(self, viewer: ViewerLink,
                     source: str) -> _Redeemed | _Reattach | _Carry:
        """Read and check the first message: the claims of a redeemed ticket (and whether the
        client asked for a resumable session), or a held session to reattach and the client's
        offset in it.

        Raises:
            Refused, TicketError, TargetNotAllowed, BrokerUnavailable.
        """
        if self.draining:
            raise Refused(Close.DRAINING)
        if (self.table.open_count > self.config.max_sessions
                or self.table.from_source(source) > self.config.max_per_source):
            raise Refused(Close.BUSY)
        try:
            async with asyncio.timeout(self.config.handshake_timeout):
                msg = await viewer.receive()
        except asyncio.TimeoutError:
            raise Refused(Close.TIMEOUT) from None
        if msg.kind not in (Kind.TEXT, Kind.BINARY):
            raise Refused(Close.MALFORMED)
        received = time.perf_counter()
        first = admission.first_message(msg.data)
        if not isinstance(first, Offer):
            if self.workers and (holder := self.workers.holder(first.token)) is not None:
                return _Carry(holder, first)
            session = self.table.resumable(first.token)
            if session is None or session.state is State.ENDED:
                raise Refused(Close.RESUME)
            return _Reattach(session, first.offset)
        claims = ticket.verify(self.public_key, first.ticket, now=time.time(),
                               audience=self.config.audience)
        if not admission.target_allowed(claims.target, self.config.allowed_targets):
            raise TargetNotAllowed(claims.target.host)
        try:
            await self.broker.redeem(claims)
        except BrokerUnavailable:
            if not self.outage_tickets.admit_once(claims, time.time()):
                raise
            logger.warning("no broker recorded ticket %s: admitted once as an outage ticket "
                           "(session %s of %s@%s)", claims.ticket_id, claims.session, claims.user,
                           claims.tenant)
            return _Redeemed(claims, first.resumable, time.perf_counter() - received,
                             outage_ticket=first.ticket)
        return _Redeemed(claims, first.resumable, time.perf_counter() - received)

    async def _serve(self, ws: ViewerLink, admitted: _Redeemed, started: float) -> None:
        claims, resumable = admitted.claims, admitted.resumable
        self.metrics.sessions_open += 1
        self.metrics.sessions_total += 1
        reaching = time.perf_counter()
        try:
            link = await self._reach_desktop(claims)
        except (OSError, asyncio.TimeoutError, DesktopError, TicketError) as exc:
            logger.warning("session %s: desktop %s:%s unavailable: %s", claims.session,
                           claims.target.host, claims.target.port, type(exc).__name__)
            self.metrics.refused(Close.DESKTOP.word)
            close_with(ws, Close.DESKTOP)
            self._ended(claims, Counters(), EndReason.DESKTOP_UNAVAILABLE)
            self.broker.disconnected(claims, Counters(), EndReason.DESKTOP_UNAVAILABLE)
            return
        link.guard = ClipboardGuard.for_policy(claims.clipboard, self.metrics.clipboard)
        desktop_seconds = time.perf_counter() - reaching
        session = RelaySession(claims, link, ws,
                               token=self._new_token() if resumable else None)
        self.table.begin(ws, session)
        if admitted.outage_ticket:              # the broker hears of it as soon as it can
            self._unrecorded[(claims.tenant, claims.session)] = admitted.outage_ticket
            self._report_now.set()
        try:
            if resumable:
                link.replay = ReplayBuffer()
                ws.send_text(encode(ResumeToken(session.token, self.config.name)))
            if claims.target.protocol == "vnc":
                await self._greet_viewer(ws, link)
        except asyncio.TimeoutError:
            self.metrics.refused(Close.TIMEOUT.word)
            ws.close(Close.TIMEOUT.code, "viewer did not complete the handshake")
            self._end(session, EndReason.VIEWER_TIMEOUT)
            return
        except OSError:  # the viewer left, or spoke no RFB 3.7+
            ws.close(1002, "viewer did not complete the handshake")
            self._end(session, EndReason.VIEWER_LEFT)
            return
        except StreamNotUnderstood as exc:  # sent along with its ClientInit
            logger.warning("session %s: %s (viewer: %s)", claims.session, Close.POLICY.reason, exc)
            self.metrics.refused(Close.POLICY.word)
            close_with(ws, Close.POLICY)
            self._end(session, EndReason.POLICY)
            return
        self.metrics.handshake(time.perf_counter() - started)
        self.broker.connected(claims, admitted.redeem_seconds, desktop_seconds)
        logger.debug("session %s of %s@%s connected to %s:%s%s", claims.session, claims.user,
                    claims.tenant, claims.target.host, claims.target.port,
                    " (resumable)" if resumable else "")
        self._relay(ws, session)

    def _new_token(self) -> str:
        return self.workers.new_token() if self.workers else secrets.token_urlsafe(32)

    async def _greet_viewer(self, ws: ViewerLink, link: DesktopLink) -> None:
        """The viewer's half of the RFB handshake (security type None), counted in the stream."""
        viewer = ViewerBytes(ws)
        async with asyncio.timeout(self.config.handshake_timeout):
            greeting = await rfb.greet_viewer(viewer)
        viewer.flush()
        link.counters.up += greeting.received
        if link.replay is not None:
            link.replay.append(greeting.sent)
        if viewer.pending:  # the viewer's ClientInit, sent along: forward it
            link.to_desktop(bytes(viewer.pending))
            link.counters.up += len(viewer.pending)

    async def _reach_desktop(self, claims: ticket.Claims) -> DesktopLink:
        """Connect to the desktop and, for VNC, authenticate to it as the gateway.

        Each attempt has ``connect_timeout`` seconds; one that runs out is made again on a new
        connection, up to ``connect_attempts`` in all. (A desktop whose listen queue overflowed
        under a burst of logons can leave a connection open that never greets — TigerVNC
        listens with a queue of 5.) A refusal by the desktop is final.

        Raises:
            OSError, asyncio.TimeoutError, ConnectionError: the desktop was not reached.
            DesktopError, TicketError: the desktop refused, or the ticket's secret is unusable.
        """
        secret = (ticket.open_secret(self.config.credential_key, claims)
                  if claims.target.protocol == "vnc" else None)
        attempt = 1
        while True:
            try:
                return await self._connect_desktop(claims, secret)
            except (OSError, asyncio.TimeoutError) as exc:  # ConnectionError is an OSError
                if attempt == self.config.connect_attempts:
                    raise
                attempt += 1
                logger.info("session %s: desktop %s:%s did not answer (%s), attempt %d of %d",
                            claims.session, claims.target.host, claims.target.port,
                            type(exc).__name__, attempt, self.config.connect_attempts)

    async def _connect_desktop(self, claims: ticket.Claims, secret: bytes | None) -> DesktopLink:
        """One attempt of :meth:`_reach_desktop`; the connection is closed if it fails."""
        link: DesktopLink | None = None
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                _, link = await asyncio.get_running_loop().create_connection(
                    lambda: DesktopLink(self.config.max_buffered, self.config.replay_limit),
                    claims.target.host, claims.target.port)
                if claims.target.protocol == "vnc":
                    await rfb.authenticate_desktop(link, secret)
            return link
        except BaseException:
            if link is not None:
                link.close()
            raise

    def _relay(self, viewer: ViewerLink, session: RelaySession) -> None:
        """Relay while this websocket lasts (:meth:`_relay_ended` follows)."""
        session.link.attach(viewer, lambda v, reason: self._relay_ended(session, v, reason))

    def _relay_ended(self, session: RelaySession, viewer: ViewerLink, reason: EndReason) -> None:
        """The relay on ``viewer`` ended: end the session, or hold it for a resume."""
        if session.ws is not viewer:
            return  # superseded: a resumed connection carries the session on
        reason = session.ended_by or reason
        if (reason is EndReason.CLIENT_LOST and session.token is not None
                and not self.draining):
            self.table.drop(session, self.config.resume_grace, self._grace_over)
            logger.info("session %s dropped; held %.0f s for a resume", session.claims.session,
                        self.config.resume_grace)
            return
        if reason is EndReason.POLICY:
            logger.warning("session %s: %s (%s)", session.claims.session, Close.POLICY.reason,
                           session.link.violation)
            self.metrics.refused(Close.POLICY.word)
            close_with(viewer, Close.POLICY)
        else:
            viewer.close()
        self._end(session, reason)

    def _reattach(self, viewer: ViewerLink, session: RelaySession, offset: int) -> None:
        try:
            replay = session.link.replay.since(offset)
        except CannotResume:
            self.metrics.refused(Close.RESUME.word)
            close_with(viewer, Close.RESUME)
            if session.ws is not None:
                session.ended_by = EndReason.RESUME_IMPOSSIBLE
                close_with(session.ws, Close.RESUME)
            else:
                self._end(session, EndReason.RESUME_IMPOSSIBLE)
            return
        old = self.table.reattach(session, viewer)
        if old is not None:
            # The old connection has not noticed the drop yet (a dead Wi-Fi can take a while):
            # the new one takes over, the old one is closed.
            close_with(old, Close.SUPERSEDED)
        viewer.send_text(encode(Resumed(session.link.counters.up)))
        for chunk in replay:
            viewer.send_binary(chunk)
        if session.notice is not None:
            viewer.send_text(session.notice)
        self.metrics.resumes += 1
        logger.info("session %s resumed", session.claims.session)
        self._relay(viewer, session)

    def _grace_over(self, session: RelaySession) -> None:
        self._end(session, EndReason.NOT_RESUMED)

    def _end(self, session: RelaySession, reason: EndReason) -> None:
        """The session is over: close the desktop connection and tell the broker (once)."""
        if not self.table.end(session):
            return
        session.link.close()
        self._ended(session.claims, session.link.counters, reason)
        guard = session.link.guard
        self.broker.disconnected(session.claims, session.link.counters, reason,
                                 guard.counts if guard is not None else None)

    def _ended(self, claims: ticket.Claims, counters: Counters, reason: EndReason) -> None:
        self.metrics.sessions_open -= 1
        self.metrics.bytes_up += counters.up
        self.metrics.bytes_down += counters.down
        logger.info("session %s ended (%s): %d bytes up, %d down", claims.session, reason.value,
                    counters.up, counters.down)

    def _idle_limit(self, session: RelaySession) -> float:
        """Seconds without traffic after which the session ends (0: never): the gateway's own
        ``idle_timeout`` or the pool's policy from the ticket, whichever is shorter."""
        limits = [x for x in (self.config.idle_timeout, session.claims.idle_after) if x > 0]
        return min(limits) if limits else 0.0

    async def _sweep_idle(self) -> None:
        """End sessions that moved no byte either way for their idle limit."""
        last: dict[RelaySession, tuple[int, float]] = {}
        while True:
            await asyncio.sleep(IDLE_SWEEP)
            now = time.monotonic()
            seen = {}
            for ws, session in self.table.attached():
                if not (limit := self._idle_limit(session)):
                    continue
                moved = session.link.counters.up + session.link.counters.down
                before, since = last.get(session, (-1, now))
                since = since if moved == before else now
                seen[session] = (moved, since)
                if now - since >= limit:
                    session.ended_by = EndReason.IDLE
                    close_with(ws, Close.IDLE)
            last = seen

    async def _beat(self) -> None:
        """Every viewer's liveness, by one timer (:meth:`gateway.viewer.ViewerLink.beat`)."""
        while True:
            await asyncio.sleep(HEARTBEAT / 2)
            for viewer in self.table.websockets():
                viewer.beat()

    async def drain(self) -> None:
        """Stop taking sessions; give open ones ``drain_timeout`` seconds, then close them.

        Readiness turns 503 at once, so a load balancer sends new sessions to other gateways.
        """
        self.draining = True
        deadline = time.monotonic() + self.config.drain_timeout
        if self.table.open_count:
            logger.info("draining: %d sessions open, waiting up to %.0f s", self.table.open_count,
                        self.config.drain_timeout)
        while self.table.open_count and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for viewer in self.table.websockets():
            close_with(viewer, Close.SHUTDOWN)
        for session in self.table.detached():
            self._end(session, EndReason.SHUTDOWN)
        deadline = time.monotonic() + CLOSE_WAIT  # the viewers answer the close, or are cut off
        while self.table.open_count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


def run(config_path: str, *, use_uvloop: bool = True, workers: int = 1) -> None:
    """Run a gateway from a config file's ``[gateway]`` table until SIGINT/SIGTERM.

    With ``workers`` > 1, that many processes share the port (SO_REUSEPORT) so that the gateway
    uses every core; each keeps its own metrics, and carries resumes on to the worker holding the
    session (:mod:`gateway.workers`).
    """
    config = gateway_config(load_toml(config_path))
    host, port = config.listen

    ssl_context = serving.tls_context(config.tls_cert, config.tls_key)
    directory, sockets = socket_directory(workers) if workers > 1 else (None, ())

    def one(index: int = 0) -> None:
        place = Workers(index, sockets) if sockets else None

        async def main() -> None:
            gateway = Gateway(config, workers=place)
            await serving.serve([gateway.site(host, port, ssl_context,
                                              place.sockets[index] if place else None)],
                                reuse_port=workers > 1,
                                on_started=lambda bound: logger.info(
                                    "gateway (pid %d) listening on %s:%s", os.getpid(), *bound[0]))
        serving.run(main, use_uvloop=use_uvloop)

    if directory is not None:
        try:
            serving.run_workers(workers, one)
        finally:
            remove_socket_directory(directory)
    else:
        one()
