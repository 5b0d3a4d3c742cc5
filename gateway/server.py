"""The gateway process: its port, routes, the broker's control calls, the timers (alive reports,
idle sweep, heartbeat) and the drain. It builds the parts a connection walks through and is not
walked back into:

* :mod:`gateway.viewer` owns the client's connection from its first byte (``/ws``; every other
  path is aiohttp's: health, readiness, metrics, the broker's control calls);
* :mod:`gateway.handshake` takes a websocket from its first message to the relay (admission,
  redemption, the desktop's side from :mod:`gateway.desktops`, greeting the viewer);
* :mod:`gateway.relaying` takes a session from its relay on to its end (resumes included);
* :mod:`gateway.session_table` holds every session's state.

Every close the gateway decides is a member of :class:`wire.closes.Close`
(``ViewerLink.close_with``); exception text never reaches the client. The websocket protocol's
own errors (1002, 1007, 1008, 1009) are :class:`~gateway.viewer.ViewerLink`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Callable

from aiohttp import web
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from wire import reports, serving
from wire.closes import Close, EndReason
from wire.config import load_toml
from wire.resume import Notice, decode, encode

from . import admission
from .broker_client import BrokerClient
from .config import GatewayConfig, gateway_config
from .handshake import Handshake
from .metrics import Metrics
from .relaying import Relaying
from .session_table import RelaySession, SessionTable
from .doorway import Doorway, Upgrade
from .viewer import CLOSE_WAIT, ViewerLink
from .workers import Workers, remove_socket_directory, socket_directory

logger = logging.getLogger("pforte.gateway")

HEARTBEAT = 20.0         # seconds: a viewer silent this long is pinged; one that does not
                         # answer within another half is dropped
ALIVE_INTERVAL = 30.0    # seconds between reports of the sessions this gateway holds
UNRECORDED_INTERVAL = 1.0  # ... while a session admitted with an outage ticket is unrecorded
IDLE_SWEEP = 1.0         # seconds between checks for idle sessions


async def _one_request_per_connection(_request: web.Request,
                                      response: web.StreamResponse) -> None:
    """aiohttp's connections end after one response: a client that would send a websocket
    request next on a kept-alive connection opens a new one, which the doorway reads."""
    response.force_close()
    response.headers["Connection"] = "close"


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
        self._report_now = asyncio.Event()
        self.relaying = Relaying(config, self.table, self.metrics, self.broker,
                                 draining=lambda: self.draining)
        self.handshake = Handshake(config, self.public_key, self.broker, self.table,
                                   self.metrics, self.relaying, workers, self._report_now,
                                   draining=lambda: self.draining)
        self._timers: list[asyncio.Task] = []
        self._handshakes: set[asyncio.Task] = set()

    def site(self, host: str, port: int, ssl_context=None, unix_path=None) -> serving.Site:
        """This gateway's port: ``/ws`` read by :class:`gateway.doorway.Doorway`, the rest by
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
        return [reports.Held(*held) for held in self.table.held()]

    async def _report_alive(self) -> None:
        """The broker counts a connected session as gone when no gateway vouches for it, and a
        session admitted while no broker could record it (an outage ticket) as pending: every
        :data:`ALIVE_INTERVAL` seconds, and every :data:`UNRECORDED_INTERVAL` while such an
        admission is unrecorded, the broker hears of every session held here, each with its
        proof (a redeemed ticket's id, or the outage ticket itself). Those it has ended hold no
        seat: they are closed."""
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                async with asyncio.timeout(UNRECORDED_INTERVAL if self.table.unrecorded()
                                           else ALIVE_INTERVAL):
                    await self._report_now.wait()
            self._report_now.clear()
            held = self.held_sessions()
            over = await self.broker.alive(held) if held else []
            if over is None:
                continue
            self.table.recorded({(h.tenant, h.session) for h in held})
            for tenant, session_id in over:
                logger.warning("the broker has ended session %s of %s: closed here", session_id,
                               tenant)
                self.relaying.log_off(session_id, tenant)

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
        self.relaying.log_off(session_id)
        return web.Response(status=204)

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
        task = asyncio.ensure_future(self.handshake.run(viewer, upgrade, source,
                                                        time.perf_counter()))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

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
                    self.relaying.close_and_end(session, EndReason.IDLE, Close.IDLE)
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
            viewer.close_with(Close.SHUTDOWN)
        for session in self.table.detached():
            self.relaying.end(session, EndReason.SHUTDOWN)
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
