"""``pforte connect``: a loopback port that carries a native viewer's TCP stream through the
gateway, so native clients pass the same gateway, tickets and audit as browsers.

Each connection to the local port asks the broker for a fresh ticket (with the user's login
token) and opens a resumable gateway stream (``client.stream``): a network drop is bridged
without the viewer noticing. An RDP desktop's viewer is carried by RDCleanPath
(``client.rdp_stream``, resumable alike): the tunnel takes the viewer's TLS, the gateway the
host's. The port listens on loopback only.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

import aiohttp

from .api import ApiError, BrokerApi
from .rdp_stream import RdpStream, loopback_tls
from .stream import GatewayStream, StreamClosed
from wire.closes import ENDED_ON_PURPOSE
from wire.resume import Notice

logger = logging.getLogger("pforte.tunnel")

READ_SIZE = 64 * 1024


async def _pump_up(reader: asyncio.StreamReader, stream: GatewayStream) -> None:
    while data := await reader.read(READ_SIZE):
        await stream.send(data)


async def _pump_down(stream: GatewayStream, writer: asyncio.StreamWriter) -> int | None:
    """Gateway → viewer until the stream ends; the gateway's close code (None: no close)."""
    try:
        while True:
            writer.write(await stream.recv())
            await writer.drain()
    except StreamClosed as exc:
        logger.info("gateway closed the stream: %s %s", exc.code, exc.reason)
        return exc.code


class Tunnel:
    """The loopback port; :attr:`dropped` says whether the last viewer connection ended because
    the desktop could not be reached or the stream broke (rather than by the viewer or on
    purpose: logoff, idle timeout)."""

    def __init__(self, broker_url: str, token: str, pool: str, *,
                 resume_within: float = 60.0, device_credential: str | None = None,
                 on_notice: Callable[[Notice], None] | None = None) -> None:
        self.broker_url = broker_url.rstrip("/")
        self.token = token
        self.pool = pool
        self.device_credential = device_credential  # a thin client's: named in the audit
        self.resume_within = resume_within
        self.on_notice = on_notice            # a notice for the user arrived on the stream
        self.dropped = False
        self._active = 0                      # viewer connections being served
        self._settled = asyncio.Event()       # set while none is
        self._settled.set()
        self.http: aiohttp.ClientSession | None = None
        self.api: BrokerApi | None = None
        self.server: asyncio.Server | None = None
        self.port = 0                         # where it listens, once started
        self._tls = None                      # an RDP viewer's TLS on loopback, made once

    async def ticket(self) -> dict:
        """A fresh ticket for one viewer connection.

        Raises:
            ApiError: the broker refused or did not answer.
        """
        return await self.api.connect(self.pool)

    async def settled(self) -> None:
        """Wait until no viewer connection is being served (then :attr:`dropped` is final)."""
        await self._settled.wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._active += 1
        self._settled.clear()
        try:
            await self._serve(reader, writer)
        finally:
            self._active -= 1
            if not self._active:
                self._settled.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.dropped = False
        try:
            conn = await self.ticket()
            if conn.get("protocol") == "rdp":
                self._tls = self._tls or loopback_tls()
                stream = RdpStream(self.http, conn["gateway_url"], conn["ticket"],
                                   resume_within=self.resume_within, on_notice=self.on_notice)
                await stream.open(reader, writer, self._tls)
            else:
                stream = GatewayStream(self.http, conn["gateway_url"], conn["ticket"],
                                       resume_within=self.resume_within,
                                       on_notice=self.on_notice)
                await stream.open()
        except (ApiError, StreamClosed, aiohttp.ClientError, OSError,
                asyncio.IncompleteReadError) as exc:
            logger.warning("could not open the desktop: %s", exc)
            self.dropped = True
            writer.close()
            return
        up = asyncio.ensure_future(_pump_up(reader, stream))
        down = asyncio.ensure_future(_pump_down(stream, writer))
        renewing = asyncio.ensure_future(self._renew_pass(conn.get("reconnect_pass_renew_after")))
        await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        self.dropped = down.done() and not down.cancelled() and \
            down.exception() is None and down.result() not in ENDED_ON_PURPOSE
        for task in (up, down, renewing):
            task.cancel()
        await asyncio.gather(up, down, renewing, return_exceptions=True)
        await stream.close()
        writer.close()

    async def _renew_pass(self, every: object) -> None:
        """While the stream is up, swap the reconnect pass for a fresh one now and then (a pass
        lives a few minutes; a refusal or silence keeps the one held)."""
        if isinstance(every, bool) or not isinstance(every, int) or every <= 0:
            return
        while True:
            await asyncio.sleep(every)
            try:
                await self.api.renew_pass(self.pool)
            except ApiError as exc:
                logger.info("reconnect pass not renewed: %s", exc)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen (on loopback); the port."""
        self.http = aiohttp.ClientSession()
        self.api = BrokerApi(self.broker_url, token=self.token, device=self.device_credential,
                             http=self.http)
        self.server = await asyncio.start_server(self._handle, host, port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        if self.http is not None:
            await self.http.close()


async def run(broker_url: str, token: str, pool: str, port: int,
              on_ready: Callable[[int], Awaitable[None] | None], *,
              device_credential: str | None = None) -> None:
    tunnel = Tunnel(broker_url, token, pool, device_credential=device_credential)
    bound = await tunnel.start(port=port)
    try:
        result = on_ready(bound)
        if asyncio.iscoroutine(result):
            await result
        await asyncio.Event().wait()
    finally:
        await tunnel.close()
