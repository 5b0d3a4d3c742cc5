"""The gateway process: websocket handshake, ticket redemption, desktop connection, relay.

Theory of operation
-------------------
1. A client opens ``/ws`` (no subprotocol) and sends the ticket as its first message, never in the
   URL. It has ``handshake_timeout`` seconds to do so.
2. The ticket is verified (signature, lifetime, audience), its target checked against
   ``allowed_targets``, then redeemed with the broker, which records the ticket id atomically: a
   ticket is good once across all gateways. An unreachable broker refuses the connection (fail closed).
3. The gateway opens TCP to the ticket's target, and for VNC completes the desktop's RFB handshake
   with the ticket's sealed secret (``gateway.rfb``) before greeting the viewer.
4. Bytes are relayed (``gateway.relay``) until either side ends; the broker is told the session
   disconnected, with byte counts.

Every close goes through :func:`close_with` with a member of :class:`wire.closes.Close` (code and
reason); exception text never reaches the client.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import os
import secrets
import time
from dataclasses import dataclass, field

import aiohttp
from aiohttp import WSMsgType, web
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from wire import rfb, serving, ticket
from wire.closes import Close, EndReason
from wire.config import load_toml
from wire.errors import DesktopError, TicketError, TicketReplayed

from .config import GatewayConfig, gateway_config
from .errors import BrokerUnavailable, GatewayError, Refused, TargetNotAllowed
from .relay import Counters, DesktopLink, relay
from wire.resume import CannotResume, ReplayBuffer, control, parse_control

logger = logging.getLogger("pforte.gateway")

HEARTBEAT = 20.0         # seconds between websocket pings; a dead client is noticed within 2x
REPORT_TIMEOUT = 5.0     # seconds the broker has to answer a redemption or a report
ALIVE_INTERVAL = 30.0    # seconds between reports of the sessions this gateway holds
IDLE_SWEEP = 1.0         # seconds between checks for idle sessions
WRITER_LIMIT = 256 * 1024

HANDSHAKE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class Metrics:
    sessions_open: int = 0
    sessions_total: int = 0
    sessions_detached: int = 0
    resumes: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    handshake_counts: list[int] = field(default_factory=lambda: [0] * len(HANDSHAKE_BUCKETS))
    handshake_sum: float = 0.0
    handshake_total: int = 0

    def refused(self, reason: str) -> None:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1

    def handshake(self, seconds: float) -> None:
        self.handshake_total += 1
        self.handshake_sum += seconds
        for i, bound in enumerate(HANDSHAKE_BUCKETS):
            if seconds <= bound:
                self.handshake_counts[i] += 1

    def prometheus(self) -> str:
        lines = [
            "# TYPE pforte_gateway_sessions_open gauge",
            f"pforte_gateway_sessions_open {self.sessions_open}",
            "# TYPE pforte_gateway_sessions_total counter",
            f"pforte_gateway_sessions_total {self.sessions_total}",
            "# TYPE pforte_gateway_sessions_detached gauge",
            f"pforte_gateway_sessions_detached {self.sessions_detached}",
            "# TYPE pforte_gateway_resumes_total counter",
            f"pforte_gateway_resumes_total {self.resumes}",
            "# TYPE pforte_gateway_bytes_total counter",
            f'pforte_gateway_bytes_total{{direction="up"}} {self.bytes_up}',
            f'pforte_gateway_bytes_total{{direction="down"}} {self.bytes_down}',
            "# TYPE pforte_gateway_refusals_total counter",
        ]
        lines += [f'pforte_gateway_refusals_total{{reason="{r}"}} {n}'
                  for r, n in sorted(self.refusals.items())]
        lines.append("# TYPE pforte_gateway_handshake_seconds histogram")
        # each bucket already counts every handshake at or below its bound (cumulative)
        lines += [f'pforte_gateway_handshake_seconds_bucket{{le="{bound}"}} {n}'
                  for bound, n in zip(HANDSHAKE_BUCKETS, self.handshake_counts)]
        lines += [f'pforte_gateway_handshake_seconds_bucket{{le="+Inf"}} {self.handshake_total}',
                  f"pforte_gateway_handshake_seconds_sum {self.handshake_sum:.6f}",
                  f"pforte_gateway_handshake_seconds_count {self.handshake_total}"]
        return "\n".join(lines) + "\n"


class BrokerClient:
    """Redeems tickets with the broker and reports disconnects."""

    def __init__(self, base_url: str, token: bytes) -> None:
        self.base_url = base_url
        self._headers = {"Authorization": f"Bearer {token.decode()}"}
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(
            headers=self._headers, timeout=aiohttp.ClientTimeout(total=REPORT_TIMEOUT))

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def redeem(self, claims: ticket.Claims) -> None:
        """Record the ticket as used and the session as connected.

        Raises:
            TicketReplayed: the broker has seen this ticket before.
            BrokerUnavailable: no clear answer from the broker.
        """
        body = {"ticket_id": claims.ticket_id, "expires_at": claims.expires_at,
                "tenant": claims.tenant, "user": claims.user, "session": claims.session}
        try:
            async with self._http.post(f"{self.base_url}/api/v1/gateway/redeem", json=body) as r:
                status = r.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise BrokerUnavailable(type(exc).__name__) from None
        if status == 409:
            raise TicketReplayed("broker has seen this ticket")
        if status != 204:
            raise BrokerUnavailable(f"broker answered {status}")

    async def alive(self, sessions: list[tuple[str, str]]) -> None:
        """Renew the broker's lease on the sessions this gateway holds: (tenant, session)."""
        body = {"sessions": [{"tenant": t, "session": s} for t, s in sessions]}
        try:
            async with self._http.post(f"{self.base_url}/api/v1/gateway/alive", json=body) as r:
                if r.status != 204:
                    logger.warning("broker refused the alive report: %s", r.status)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            logger.warning("alive report failed: %s", type(exc).__name__)

    async def disconnected(self, claims: ticket.Claims, counters: Counters,
                           reason: EndReason) -> None:
        body = {"tenant": claims.tenant, "session": claims.session, "bytes_up": counters.up,
                "bytes_down": counters.down, "reason": reason.value}
        try:
            async with self._http.post(f"{self.base_url}/api/v1/gateway/disconnect", json=body) as r:
                if r.status != 204:
                    logger.warning("broker refused disconnect report for session %s: %s",
                                   claims.session, r.status)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            logger.warning("disconnect report for session %s failed: %s", claims.session,
                           type(exc).__name__)


@dataclass(eq=False)
class RelaySession:
    """One desktop connection; it outlives a dropped websocket when resumable."""
    claims: ticket.Claims
    link: DesktopLink
    token: str | None = None               # resume token, for resumable sessions
    ws: web.WebSocketResponse | None = None  # the client's current websocket; None while dropped
    grace: asyncio.TimerHandle | None = None
    ended_by: EndReason | None = None      # the gateway ended it (idle, logoff): no resume


@dataclass(frozen=True)
class _Reattach:
    session: RelaySession
    offset: int


class ViewerBytes:
    """The viewer's websocket as an RFB byte link: writes collect until the next read (or
    :meth:`flush`) sends them as one binary message; reads take binary messages, keeping what is
    left over in ``pending``."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.pending = bytearray()
        self._out = bytearray()

    def write(self, data: bytes) -> None:
        self._out += data

    async def flush(self) -> None:
        if self._out:
            data, self._out = bytes(self._out), bytearray()
            await self.ws.send_bytes(data)

    async def read_exactly(self, n: int) -> bytes:
        await self.flush()
        while len(self.pending) < n:
            msg = await self.ws.receive()
            if msg.type is not WSMsgType.BINARY:
                raise ConnectionError("viewer left during the RFB handshake")
            self.pending += msg.data
        data = bytes(self.pending[:n])
        del self.pending[:n]
        return data


async def close_with(ws: web.WebSocketResponse, close: Close) -> None:
    await ws.close(code=close.code, message=close.reason.encode())


class Gateway:
    """Holds the configuration, keys, sessions and counters; :meth:`app` builds the application."""

    def __init__(self, config: GatewayConfig, broker: BrokerClient | None = None) -> None:
        self.config = config
        self.public_key = load_pem_public_key(config.ticket_public_key)
        self.broker = broker or BrokerClient(config.broker_url, config.report_token)
        self.metrics = Metrics()
        self.draining = False
        self._sessions: dict[web.WebSocketResponse, RelaySession | None] = {}  # open websockets
        self._per_source: dict[str, int] = {}
        self._resumable: dict[str, RelaySession] = {}   # by resume token, attached or not
        self._idle_sweeper: asyncio.Task | None = None
        self._alive_reporter: asyncio.Task | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/ws", self.handle_ws)
        app.router.add_get("/healthz", self.handle_health)
        app.router.add_get("/readyz", self.handle_ready)
        app.router.add_get("/metrics", self.handle_metrics)
        app.router.add_post("/control/close", self.handle_close)
        app.on_startup.append(self._start)
        app.on_response_prepare.append(serving.name_the_server)
        app.on_cleanup.append(self._stop)
        app[serving.DRAIN] = self.drain  # on SIGTERM, before aiohttp closes the connections
        return app

    async def _start(self, _app: web.Application) -> None:
        await self.broker.start()
        self._alive_reporter = asyncio.create_task(self._report_alive())
        self._idle_sweeper = asyncio.create_task(self._sweep_idle())

    async def _stop(self, _app: web.Application) -> None:
        for task in (self._idle_sweeper, self._alive_reporter):
            if task is not None:
                task.cancel()
        await self.broker.close()

    def held_sessions(self) -> list[tuple[str, str]]:
        """(tenant, session) of every session this gateway holds, attached or awaiting a resume."""
        held = {(s.claims.tenant, s.claims.session) for s in self._sessions.values() if s}
        held |= {(s.claims.tenant, s.claims.session) for s in self._resumable.values()}
        return sorted(held)

    async def _report_alive(self) -> None:
        """The broker counts a connected session as gone when no gateway vouches for it."""
        while True:
            await asyncio.sleep(ALIVE_INTERVAL)
            held = self.held_sessions()
            if held:
                await self.broker.alive(held)

    async def handle_health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "sessions": self.metrics.sessions_open})

    async def handle_ready(self, request: web.Request) -> web.Response:
        """Load balancers send new sessions only while this says ready."""
        if self.draining:
            return web.json_response({"status": "draining"}, status=503)
        return web.json_response({"status": "ready"})

    async def handle_metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.metrics.prometheus(), content_type="text/plain")

    async def handle_close(self, request: web.Request) -> web.Response:
        """The broker logged a session off: close its connections here (and any held for resume)."""
        expected = b"Bearer " + self.config.report_token
        if not hmac.compare_digest(request.headers.get("Authorization", "").encode(), expected):
            raise web.HTTPUnauthorized(text="token missing or wrong\n")
        try:
            session_id = (await request.json())["session"]
        except (ValueError, KeyError, TypeError):
            raise web.HTTPBadRequest(text="expected {\"session\": ID}\n") from None
        for ws, session in list(self._sessions.items()):
            if session is not None and session.claims.session == session_id:
                session.ended_by = EndReason.LOGGED_OFF  # not held for a resume
                await close_with(ws, Close.LOGOFF)
        for session in [s for s in self._resumable.values()
                        if s.ws is None and s.claims.session == session_id]:
            self._release(session)
            await self._end(session.claims, session.link, EndReason.LOGGED_OFF, session.token)
        return web.Response(status=204)

    def client_address(self, request: web.Request) -> str:
        """The client's address; X-Forwarded-For counts only when the peer is a trusted proxy."""
        return serving.client_address(request.remote, request.headers.get("X-Forwarded-For"),
                                      self.config.trusted_proxies)

    def _target_allowed(self, target: ticket.Target) -> bool:
        try:
            address = ipaddress.ip_address(target.host)
        except ValueError:
            return False  # names are not resolved: the broker puts addresses into tickets
        return any(address in net for net in self.config.allowed_targets)

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        # Browsers always send Origin; native clients (tunnel, agent) send none.
        origin = request.headers.get("Origin")
        if origin is not None and self.config.allowed_origins and (
                origin not in self.config.allowed_origins):
            self.metrics.refused("origin")
            raise web.HTTPForbidden(text="origin not allowed\n")
        source = self.client_address(request)
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=self.config.max_message,
                                   writer_limit=WRITER_LIMIT)
        await ws.prepare(request)
        self._per_source[source] = self._per_source.get(source, 0) + 1
        self._sessions[ws] = None
        try:
            try:
                admitted = await self._admit(ws, source)
            except (GatewayError, TicketError) as exc:
                self.metrics.refused(exc.close.word)
                logger.info("refused connection from %s: %s", source, exc.close.word)
                await close_with(ws, exc.close)
                return ws
            except Exception:  # a bug must still end in a close code, never a dropped socket
                logger.exception("admitting a connection from %s failed", source)
                self.metrics.refused(Close.INTERNAL.word)
                await close_with(ws, Close.INTERNAL)
                return ws
            if isinstance(admitted, _Reattach):
                await self._reattach(ws, request, admitted)
            else:
                claims, resumable = admitted
                await self._serve(ws, request, claims, resumable, started)
        finally:
            del self._sessions[ws]
            self._per_source[source] -= 1
            if not self._per_source[source]:
                del self._per_source[source]
        return ws

    async def _admit(self, ws: web.WebSocketResponse,
                     source: str) -> tuple[ticket.Claims, bool] | _Reattach:
        """Read the first message: a ticket (bare, or ``{"ticket": T, "resumable": true}``), or
        ``{"resume": TOKEN, "offset": N}`` to reattach a dropped session."""
        if self.draining:
            raise Refused(Close.DRAINING)
        if (len(self._sessions) > self.config.max_sessions
                or self._per_source[source] > self.config.max_per_source):
            raise Refused(Close.BUSY)
        try:
            msg = await asyncio.wait_for(ws.receive(), self.config.handshake_timeout)
        except asyncio.TimeoutError:
            raise Refused(Close.TIMEOUT) from None
        if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            raise Refused(Close.MALFORMED)
        first, resumable = msg.data, False
        if msg.type is WSMsgType.TEXT and first.startswith("{"):
            request = parse_control(first)
            if "resume" in request:
                session = self._resumable.get(request["resume"]) if isinstance(
                    request["resume"], str) else None
                offset = request.get("offset")
                if session is None or type(offset) is not int:
                    raise Refused(Close.RESUME)
                return _Reattach(session, offset)
            first, resumable = request.get("ticket", ""), request.get("resumable") is True
        claims = ticket.verify(self.public_key, first, now=time.time(),
                               audience=self.config.audience)
        if not self._target_allowed(claims.target):
            raise TargetNotAllowed(claims.target.host)
        await self.broker.redeem(claims)
        return claims, resumable

    async def _serve(self, ws: web.WebSocketResponse, request: web.Request,
                     claims: ticket.Claims, resumable: bool, started: float) -> None:
        self.metrics.sessions_open += 1
        self.metrics.sessions_total += 1
        try:
            link = await self._reach_desktop(claims)
        except (OSError, asyncio.TimeoutError, DesktopError, TicketError) as exc:
            await self._desktop_failed(ws, claims, exc)
            await self._end(claims, None, EndReason.DESKTOP_UNAVAILABLE)
            return
        session = RelaySession(claims, link)
        try:
            if resumable:
                session.token = secrets.token_urlsafe(32)
                link.replay = ReplayBuffer()
                self._resumable[session.token] = session
                await ws.send_str(control(resume=session.token))
            if claims.target.protocol == "vnc":
                viewer = ViewerBytes(ws)
                greeting = await asyncio.wait_for(rfb.greet_viewer(viewer),
                                                  self.config.handshake_timeout)
                await viewer.flush()
                link.counters.up += greeting.received
                if link.replay is not None:
                    link.replay.append(greeting.sent)
                if viewer.pending:  # the viewer's ClientInit, sent along: forward it
                    link.write(bytes(viewer.pending))
                    link.counters.up += len(viewer.pending)
        except asyncio.TimeoutError:
            self.metrics.refused(Close.TIMEOUT.word)
            await ws.close(code=Close.TIMEOUT.code,
                           message=b"viewer did not complete the handshake")
            await self._end(claims, link, EndReason.VIEWER_TIMEOUT, session.token)
            return
        except OSError:  # the viewer left, or spoke no RFB 3.7+
            await ws.close(code=aiohttp.WSCloseCode.PROTOCOL_ERROR,
                           message=b"viewer did not complete the handshake")
            await self._end(claims, link, EndReason.VIEWER_LEFT, session.token)
            return
        self.metrics.handshake(time.perf_counter() - started)
        logger.info("session %s of %s@%s connected to %s:%s%s", claims.session, claims.user,
                    claims.tenant, claims.target.host, claims.target.port,
                    " (resumable)" if resumable else "")
        await self._attached(ws, request, session)

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

    async def _desktop_failed(self, ws: web.WebSocketResponse, claims: ticket.Claims,
                              exc: BaseException) -> None:
        logger.warning("session %s: desktop %s:%s unavailable: %s", claims.session,
                       claims.target.host, claims.target.port, type(exc).__name__)
        self.metrics.refused(Close.DESKTOP.word)
        await close_with(ws, Close.DESKTOP)

    async def _attached(self, ws: web.WebSocketResponse, request: web.Request,
                        session: RelaySession) -> None:
        """Relay while this websocket lasts; then end the session, or hold it for a resume."""
        self._sessions[ws] = session
        session.ws = ws
        reason = await relay(ws, request, session.link)
        if session.ws is not ws:
            return  # superseded: a resumed connection carries the session on
        reason = session.ended_by or reason
        if (reason is EndReason.CLIENT_LOST and session.token is not None and not self.draining
                and session.ended_by is None):
            session.link.detach()
            session.ws = None
            self.metrics.sessions_detached += 1
            session.grace = asyncio.get_running_loop().call_later(
                self.config.resume_grace, self._grace_over, session)
            logger.info("session %s dropped; held %.0f s for a resume", session.claims.session,
                        self.config.resume_grace)
            return
        if not ws.closed:
            await ws.close()
        await self._end(session.claims, session.link, reason, session.token)

    async def _reattach(self, ws: web.WebSocketResponse, request: web.Request,
                        admitted: _Reattach) -> None:
        session = admitted.session
        old = session.ws
        if old is not None:
            # The old connection has not noticed the drop yet (a dead Wi-Fi can take a while):
            # the new one takes over, the old one is closed.
            session.ws = ws
            session.link.detach()
            asyncio.ensure_future(close_with(old, Close.SUPERSEDED))
        else:
            self._release(session)
        try:
            replay = session.link.replay.since(admitted.offset)
        except CannotResume:
            self.metrics.refused(Close.RESUME.word)
            await close_with(ws, Close.RESUME)
            await self._end(session.claims, session.link, EndReason.RESUME_IMPOSSIBLE,
                            session.token)
            return
        await ws.send_str(control(resumed=session.link.counters.up))
        for chunk in replay:
            await ws.send_bytes(chunk)
        self.metrics.resumes += 1
        logger.info("session %s resumed", session.claims.session)
        await self._attached(ws, request, session)

    def _release(self, session: RelaySession) -> None:
        """A dropped session is being resumed or ended: stop its grace timer."""
        if session.grace is not None:
            session.grace.cancel()
            session.grace = None
            self.metrics.sessions_detached -= 1

    def _grace_over(self, session: RelaySession) -> None:
        self._release(session)
        asyncio.ensure_future(self._end(session.claims, session.link, EndReason.NOT_RESUMED,
                                        session.token))

    async def _end(self, claims: ticket.Claims, link: DesktopLink | None, reason: EndReason,
                   token: str | None = None) -> None:
        """The session is over: close the desktop connection and tell the broker."""
        if token is not None:
            self._resumable.pop(token, None)
        counters = link.counters if link is not None else Counters()
        if link is not None:
            link.close()
        self.metrics.sessions_open -= 1
        self.metrics.bytes_up += counters.up
        self.metrics.bytes_down += counters.down
        logger.info("session %s ended (%s): %d bytes up, %d down", claims.session, reason.value,
                    counters.up, counters.down)
        await self.broker.disconnected(claims, counters, reason)

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
            for ws, session in list(self._sessions.items()):
                if session is None or not (limit := self._idle_limit(session)):
                    continue
                moved = session.link.counters.up + session.link.counters.down
                before, since = last.get(session, (-1, now))
                since = since if moved == before else now
                seen[session] = (moved, since)
                if now - since >= limit:
                    session.ended_by = EndReason.IDLE
                    asyncio.ensure_future(close_with(ws, Close.IDLE))
            last = seen

    async def drain(self) -> None:
        """Stop taking sessions; give open ones ``drain_timeout`` seconds, then close them.

        Readiness turns 503 at once, so a load balancer sends new sessions to other gateways.
        """
        self.draining = True
        deadline = time.monotonic() + self.config.drain_timeout
        if self._sessions:
            logger.info("draining: %d sessions open, waiting up to %.0f s", len(self._sessions),
                        self.config.drain_timeout)
        while self._sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.gather(*(close_with(ws, Close.SHUTDOWN) for ws in list(self._sessions)),
                             return_exceptions=True)
        for session in [s for s in self._resumable.values() if s.ws is None]:
            self._release(session)
            await self._end(session.claims, session.link, EndReason.SHUTDOWN, session.token)


def run(config_path: str, *, use_uvloop: bool = True, workers: int = 1) -> None:
    """Run a gateway from a config file's ``[gateway]`` table until SIGINT/SIGTERM.

    With ``workers`` > 1, that many processes share the port (SO_REUSEPORT) so that the gateway
    uses every core; each keeps its own metrics.
    """
    config = gateway_config(load_toml(config_path))
    host, port = config.listen

    ssl_context = serving.tls_context(config.tls_cert, config.tls_key)

    def one() -> None:
        async def main() -> None:
            await serving.serve([serving.Site(Gateway(config).app(), host, port, ssl_context,
                                              config.http_idle_timeout)],
                                reuse_port=workers > 1,
                                on_started=lambda bound: logger.info(
                                    "gateway (pid %d) listening on %s:%s", os.getpid(), *bound[0]))
        serving.run(main, use_uvloop=use_uvloop)

    if workers > 1:
        serving.run_workers(workers, one)
    else:
        one()
