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

Refusals are translated into a websocket close code and a short reason in one place
(:data:`CLOSE_CODES`); exception text never reaches the client.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import time
from dataclasses import dataclass, field

import aiohttp
from aiohttp import WSMsgType, web
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from . import rfb, runtime, ticket
from .config import GatewayConfig, gateway_config, load_toml
from .errors import DesktopError, GatewayError, TargetNotAllowed, TicketError, TicketReplayed
from .relay import Counters, DesktopLink, relay

logger = logging.getLogger("pforte.gateway")

HEARTBEAT = 20.0         # seconds between websocket pings; a dead client is noticed within 2x
REPORT_TIMEOUT = 5.0     # seconds the broker has to answer a redemption or a report
WRITER_LIMIT = 256 * 1024

# One place that turns a refusal into what the client sees: (close code, short reason).
CLOSE_CODES: dict[str, tuple[int, str]] = {
    "malformed": (4400, "ticket malformed"),
    "forged": (4401, "ticket invalid"),
    "expired": (4401, "ticket expired"),
    "audience": (4401, "ticket not for this gateway"),
    "replayed": (4409, "ticket already used"),
    "target": (4403, "target not allowed"),
    "timeout": (4408, "no ticket in time"),
    "broker": (4503, "broker unavailable"),
    "desktop": (4502, "desktop unavailable"),
}


@dataclass
class Metrics:
    sessions_open: int = 0
    sessions_total: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    refusals: dict[str, int] = field(default_factory=dict)

    def refused(self, reason: str) -> None:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1

    def prometheus(self) -> str:
        lines = [
            "# TYPE pforte_gateway_sessions_open gauge",
            f"pforte_gateway_sessions_open {self.sessions_open}",
            "# TYPE pforte_gateway_sessions_total counter",
            f"pforte_gateway_sessions_total {self.sessions_total}",
            "# TYPE pforte_gateway_bytes_total counter",
            f'pforte_gateway_bytes_total{{direction="up"}} {self.bytes_up}',
            f'pforte_gateway_bytes_total{{direction="down"}} {self.bytes_down}',
            "# TYPE pforte_gateway_refusals_total counter",
        ]
        lines += [f'pforte_gateway_refusals_total{{reason="{r}"}} {n}'
                  for r, n in sorted(self.refusals.items())]
        return "\n".join(lines) + "\n"


class BrokerUnavailable(GatewayError):
    reason = "broker"


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

    async def disconnected(self, claims: ticket.Claims, counters: Counters, reason: str) -> None:
        body = {"tenant": claims.tenant, "session": claims.session, "bytes_up": counters.up,
                "bytes_down": counters.down, "reason": reason}
        try:
            async with self._http.post(f"{self.base_url}/api/v1/gateway/disconnect", json=body) as r:
                if r.status != 204:
                    logger.warning("broker refused disconnect report for session %s: %s",
                                   claims.session, r.status)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            logger.warning("disconnect report for session %s failed: %s", claims.session,
                           type(exc).__name__)


class Gateway:
    """Holds the configuration, keys and counters; :meth:`app` builds the aiohttp application."""

    def __init__(self, config: GatewayConfig, broker: BrokerClient | None = None) -> None:
        self.config = config
        self.public_key = load_pem_public_key(config.ticket_public_key)
        self.broker = broker or BrokerClient(config.broker_url, config.report_token)
        self.metrics = Metrics()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/ws", self.handle_ws)
        app.router.add_get("/healthz", self.handle_health)
        app.router.add_get("/metrics", self.handle_metrics)
        app.on_startup.append(lambda _app: self.broker.start())
        app.on_cleanup.append(lambda _app: self.broker.close())
        return app

    async def handle_health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "sessions": self.metrics.sessions_open})

    async def handle_metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.metrics.prometheus(), content_type="text/plain")

    def _target_allowed(self, target: ticket.Target) -> bool:
        try:
            address = ipaddress.ip_address(target.host)
        except ValueError:
            return False  # names are not resolved: the broker puts addresses into tickets
        return any(address in net for net in self.config.allowed_targets)

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        # Browsers always send Origin; native clients (tunnel, agent) send none.
        origin = request.headers.get("Origin")
        if origin is not None and self.config.allowed_origins and (
                origin not in self.config.allowed_origins):
            self.metrics.refused("origin")
            raise web.HTTPForbidden(text="origin not allowed\n")
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=self.config.max_message,
                                   writer_limit=WRITER_LIMIT)
        await ws.prepare(request)
        try:
            claims = await self._admit(ws)
        except GatewayError as exc:
            reason = getattr(exc, "reason", "desktop")
            self.metrics.refused(reason)
            logger.info("refused connection from %s: %s", request.remote, reason)
            code, text = CLOSE_CODES[reason]
            await ws.close(code=code, message=text.encode())
            return ws
        await self._serve(ws, request, claims)
        return ws

    async def _admit(self, ws: web.WebSocketResponse) -> ticket.Claims:
        try:
            msg = await asyncio.wait_for(ws.receive(), self.config.handshake_timeout)
        except asyncio.TimeoutError:
            raise _Refusal("timeout") from None
        if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            raise _Refusal("malformed")
        claims = ticket.verify(self.public_key, msg.data, now=time.time(),
                               audience=self.config.audience)
        if not self._target_allowed(claims.target):
            raise TargetNotAllowed(claims.target.host)
        await self.broker.redeem(claims)
        return claims

    async def _serve(self, ws: web.WebSocketResponse, request: web.Request,
                     claims: ticket.Claims) -> None:
        loop = asyncio.get_running_loop()
        link: DesktopLink | None = None
        reason = "desktop unavailable"
        self.metrics.sessions_open += 1
        self.metrics.sessions_total += 1
        try:
            _, link = await asyncio.wait_for(loop.create_connection(
                lambda: DesktopLink(self.config.max_buffered), claims.target.host,
                claims.target.port), self.config.connect_timeout)
            if claims.target.protocol == "vnc":
                secret = ticket.open_secret(self.config.credential_key, claims)
                await rfb.authenticate_desktop(link, secret)
                leftover = await rfb.greet_viewer(ws)
                if leftover:
                    link.write(leftover)
            logger.info("session %s of %s@%s connected to %s:%s", claims.session, claims.user,
                        claims.tenant, claims.target.host, claims.target.port)
            reason = await relay(ws, request, link)
        except (OSError, asyncio.TimeoutError, DesktopError, ConnectionError, TicketError) as exc:
            logger.warning("session %s: desktop %s:%s unavailable: %s", claims.session,
                           claims.target.host, claims.target.port, type(exc).__name__)
            self.metrics.refused("desktop")
            code, text = CLOSE_CODES["desktop"]
            await ws.close(code=code, message=text.encode())
        finally:
            counters = link.counters if link is not None else Counters()
            if link is not None:
                link.close()
            if not ws.closed:
                await ws.close()
            self.metrics.sessions_open -= 1
            self.metrics.bytes_up += counters.up
            self.metrics.bytes_down += counters.down
            logger.info("session %s ended (%s): %d bytes up, %d down", claims.session, reason,
                        counters.up, counters.down)
            await self.broker.disconnected(claims, counters, reason)


class _Refusal(GatewayError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def run(config_path: str, *, use_uvloop: bool = True, workers: int = 1) -> None:
    """Run a gateway from a config file's ``[gateway]`` table until SIGINT/SIGTERM.

    With ``workers`` > 1, that many processes share the port (SO_REUSEPORT) so that the gateway
    uses every core; each keeps its own metrics.
    """
    config = gateway_config(load_toml(config_path))
    host, port = config.listen

    def one() -> None:
        async def main() -> None:
            await runtime.serve([(Gateway(config).app(), host, port)], reuse_port=workers > 1,
                                on_started=lambda bound: logger.info(
                                    "gateway (pid %d) listening on %s:%s", os.getpid(), *bound[0]))
        runtime.run(main, use_uvloop=use_uvloop)

    if workers > 1:
        runtime.run_workers(workers, one)
    else:
        one()
