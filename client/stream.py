"""A client of the gateway's stream, with transparent resume (the Python twin of the portal's
``pforte-channel.js``). Used by native tools (the local tunnel) and the tests.

``send`` and ``recv`` carry the stream; a dropped websocket is reattached within the gateway's grace
period without losing or repeating a byte (see :mod:`wire.resume`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import aiohttp

from wire.resume import (Ack, AckClock, Notice, Offer, ReplayBuffer, Resume, Resumed, ResumeToken,
                         decode, encode, resume_url)

logger = logging.getLogger("pforte.client")

RETRY_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)   # seconds between reattach attempts, last repeats


class StreamClosed(ConnectionError):
    """The stream ended: closed by either side, refused, or not resumable in time."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class GatewayStream:
    """One desktop stream through the gateway.

    Call :meth:`open` first; then :meth:`send` / :meth:`recv`; :meth:`close` ends the session.
    """

    def __init__(self, http: aiohttp.ClientSession, url: str, ticket: str, *,
                 resumable: bool = True, resume_within: float = 60.0,
                 on_notice: Callable[[Notice], None] | None = None, **ws_options) -> None:
        self.http = http
        self.url = url
        self._ticket = ticket
        self.resumable = resumable
        self.resume_within = resume_within
        self.ws_options = {"max_msg_size": 0, "heartbeat": 20.0, **ws_options}
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.token: str | None = None
        self.resume_url = url                 # where the holding gateway is found again
        self.clock = AckClock()                 # bytes received, and when to acknowledge
        self.sent = ReplayBuffer()
        self.resumes = 0
        self.on_notice = on_notice              # a notice for the user, from the gateway

    async def open(self) -> None:
        """Connect and present the ticket.

        Raises:
            StreamClosed: the gateway refused (its close code and reason).
        """
        self.ws = await self.http.ws_connect(self.url, **self.ws_options)
        if not self.resumable:
            await self.ws.send_str(self._ticket)
            return
        await self.ws.send_str(encode(Offer(self._ticket, resumable=True)))
        msg = await self.ws.receive()
        answer = decode(msg.data) if msg.type is aiohttp.WSMsgType.TEXT else None
        if not isinstance(answer, ResumeToken):
            raise StreamClosed(self.ws.close_code, msg.extra or "no resume token")
        self.token = answer.token
        self.resume_url = resume_url(self.url, answer.gateway)

    async def send(self, data: bytes) -> None:
        data = bytes(data)
        if self.resumable:
            self.sent.append(data)
        try:
            await self.ws.send_bytes(data)
        except ConnectionError:
            if not self.resumable:
                raise
            # the bytes are in the replay buffer: the next recv() reattaches and resends them

    async def recv(self) -> bytes:
        """The next piece of the stream.

        Raises:
            StreamClosed: the stream ended.
        """
        while True:
            msg = await self.ws.receive()
            if msg.type is aiohttp.WSMsgType.BINARY:
                ack = self.clock.count(len(msg.data))
                if self.resumable and ack is not None:
                    await self._quietly(self.ws.send_str(encode(ack)))
                return msg.data
            if msg.type is aiohttp.WSMsgType.TEXT:
                control = decode(msg.data)
                if isinstance(control, Ack):
                    self.sent.ack(control.offset)
                elif isinstance(control, Notice) and self.on_notice is not None:
                    self.on_notice(control)
                continue
            if msg.type is aiohttp.WSMsgType.CLOSE or not self.resumable or self.token is None:
                raise StreamClosed(self.ws.close_code, msg.extra or "closed")
            await self._reattach()

    async def _quietly(self, coro) -> None:
        try:
            await coro
        except ConnectionError:
            pass

    async def _reattach(self) -> None:
        """Reconnect within ``resume_within`` seconds, or raise StreamClosed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.resume_within
        attempt = 0
        while loop.time() < deadline:
            try:
                ws = await self.http.ws_connect(self.resume_url, **self.ws_options)
            except (aiohttp.ClientError, OSError):
                await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
                attempt += 1
                continue
            await ws.send_str(encode(Resume(self.token, self.clock.received)))
            msg = await ws.receive()
            resumed = decode(msg.data) if msg.type is aiohttp.WSMsgType.TEXT else None
            if not isinstance(resumed, Resumed):
                raise StreamClosed(ws.close_code, msg.extra or "session cannot be resumed")
            self.ws = ws
            self.resumes += 1
            self.sent.ack(resumed.offset)
            for chunk in self.sent.since(resumed.offset):
                await ws.send_bytes(chunk)
            logger.info("stream resumed after a drop (attempt %d)", attempt + 1)
            return
        raise StreamClosed(None, "not resumed in time")

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
