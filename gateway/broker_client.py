"""The gateway's calls to the broker (:mod:`wire.reports`): redeem a ticket (fail closed: no clear
answer refuses the connection), report a session's end, vouch for the sessions it holds."""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from wire import reports
from wire.closes import EndReason
from wire.errors import TicketReplayed
from wire.ticket import Claims

from .errors import BrokerUnavailable
from .relay import Counters

logger = logging.getLogger("pforte.gateway")

REPORT_TIMEOUT = 5.0     # seconds the broker has to answer a redemption or a report


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

    async def redeem(self, claims: Claims) -> None:
        """Record the ticket as used and the session as connected.

        Raises:
            TicketReplayed: the broker has seen this ticket before.
            BrokerUnavailable: no clear answer from the broker.
        """
        body = reports.Redemption.of(claims).to_json()
        try:
            async with self._http.post(self.base_url + reports.REDEEM, json=body) as r:
                status = r.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise BrokerUnavailable(type(exc).__name__) from None
        if status == 409:
            raise TicketReplayed("broker has seen this ticket")
        if status != 204:
            raise BrokerUnavailable(f"broker answered {status}")

    async def alive(self, sessions: list[tuple[str, str]]) -> None:
        """Renew the broker's lease on the sessions this gateway holds: (tenant, session)."""
        body = reports.Alive(tuple(sessions)).to_json()
        try:
            async with self._http.post(self.base_url + reports.ALIVE, json=body) as r:
                if r.status != 204:
                    logger.warning("broker refused the alive report: %s", r.status)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            logger.warning("alive report failed: %s", type(exc).__name__)

    async def disconnected(self, claims: Claims, counters: Counters,
                           reason: EndReason) -> None:
        body = reports.Disconnect(claims.tenant, claims.session, counters.up, counters.down,
                                  reason).to_json()
        try:
            async with self._http.post(self.base_url + reports.DISCONNECT, json=body) as r:
                if r.status != 204:
                    logger.warning("broker refused disconnect report for session %s: %s",
                                   claims.session, r.status)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            logger.warning("disconnect report for session %s failed: %s", claims.session,
                           type(exc).__name__)
