"""The gateway's calls to the broker (:mod:`wire.reports`): redeem a ticket (fail closed: no clear
answer refuses the connection), report a session's end, vouch for the sessions it holds."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

import aiohttp

from wire import reports
from wire.closes import EndReason
from wire.errors import TicketReplayed
from wire.ticket import Claims

from .errors import BrokerUnavailable
from .relay import Counters

logger = logging.getLogger("pforte.gateway")

LOGON_BATCH = 0.5        # seconds logon reports are collected before they are sent together
REPORT_TIMEOUT = 5.0     # seconds the broker has to answer a redemption or a report


class BrokerClient:
    """Redeems tickets with the brokers and reports to them. With several broker URLs, a call
    goes to the broker that answered last, and to the next one when a broker cannot be reached
    or answers that it cannot serve now (5xx): any broker of a fleet serves any call. A call
    whose answer was lost on the way (a timeout after it was sent) is not repeated elsewhere —
    a redemption might have been recorded — but refused (fail closed)."""

    def __init__(self, base_urls: tuple[str, ...] | str, token: bytes,
                 ca_file: Path | None = None) -> None:
        self.base_urls = (base_urls,) if isinstance(base_urls, str) else tuple(base_urls)
        self._headers = {"Authorization": f"Bearer {token.decode()}"}
        self._ca_file = ca_file
        self._http: aiohttp.ClientSession | None = None
        self._current = 0
        self._logons: list[reports.Connected] = []       # logon reports waiting to be sent
        self._logon_sender: asyncio.Task | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(ssl=ssl.create_default_context(
            cafile=str(self._ca_file))) if self._ca_file else None
        self._http = aiohttp.ClientSession(
            headers=self._headers, timeout=aiohttp.ClientTimeout(total=REPORT_TIMEOUT),
            connector=connector)

    async def close(self) -> None:
        if self._logon_sender is not None:
            self._logon_sender.cancel()
        if self._http is not None:
            await self._http.close()

    async def _post(self, path: str, body: dict) -> int:
        """POST to the brokers in turn; the first answer's status.

        Raises:
            BrokerUnavailable: no broker answered.
        """
        failure = "no broker"
        for shift in range(len(self.base_urls)):
            index = (self._current + shift) % len(self.base_urls)
            try:
                async with self._http.post(self.base_urls[index] + path, json=body) as r:
                    status = r.status
            except aiohttp.ClientConnectionError as exc:
                if isinstance(exc, aiohttp.ServerTimeoutError):
                    raise BrokerUnavailable(type(exc).__name__) from None
                failure = type(exc).__name__
                continue
            except asyncio.TimeoutError:
                raise BrokerUnavailable("timeout") from None
            if status >= 500:
                failure = f"broker answered {status}"
                continue
            self._current = index
            return status
        raise BrokerUnavailable(failure)

    async def redeem(self, claims: Claims) -> None:
        """Record the ticket as used and the session as connected.

        Raises:
            TicketReplayed: the broker has seen this ticket before.
            BrokerUnavailable: no clear answer from any broker.
        """
        status = await self._post(reports.REDEEM, reports.Redemption.of(claims).to_json())
        if status == 409:
            raise TicketReplayed("broker has seen this ticket")
        if status != 204:
            raise BrokerUnavailable(f"broker answered {status}")

    def connected(self, claims: Claims, redeem_seconds: float, desktop_seconds: float) -> None:
        """The gateway's part of a logon, for the session's logon record: queued, and sent with
        the others of the next :data:`LOGON_BATCH` seconds; lost if no broker answers (it is a
        measurement, not a fact anything depends on)."""
        self._logons.append(reports.Connected(claims.tenant, claims.session, redeem_seconds,
                                              desktop_seconds))
        if self._logon_sender is None or self._logon_sender.done():
            self._logon_sender = asyncio.ensure_future(self._send_logons())

    async def _send_logons(self) -> None:
        await asyncio.sleep(LOGON_BATCH)
        batch, self._logons = self._logons[:reports.MAX_BATCH], self._logons[reports.MAX_BATCH:]
        try:
            status = await self._post(reports.CONNECTED, reports.Logons(tuple(batch)).to_json())
        except BrokerUnavailable as exc:
            logger.info("%d logon reports not delivered: %s", len(batch), exc)
            status = 204
        if status != 204:
            logger.warning("broker refused %d logon reports: %s", len(batch), status)
        if self._logons:
            self._logon_sender = asyncio.ensure_future(self._send_logons())

    async def alive(self, sessions: list[tuple[str, str]]) -> None:
        """Renew the broker's lease on the sessions this gateway holds: (tenant, session)."""
        try:
            status = await self._post(reports.ALIVE, reports.Alive(tuple(sessions)).to_json())
        except BrokerUnavailable as exc:
            logger.warning("alive report failed: %s", exc)
            return
        if status != 204:
            logger.warning("broker refused the alive report: %s", status)

    async def disconnected(self, claims: Claims, counters: Counters, reason: EndReason,
                           clipboard: dict[str, int] | None = None) -> None:
        body = reports.Disconnect(claims.tenant, claims.session, counters.up, counters.down,
                                  reason, claims.user, clipboard).to_json()
        try:
            status = await self._post(reports.DISCONNECT, body)
        except BrokerUnavailable as exc:
            logger.warning("disconnect report for session %s failed: %s", claims.session, exc)
            return
        if status != 204:
            logger.warning("broker refused disconnect report for session %s: %s",
                           claims.session, status)
