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
REPORT_TIMEOUT = 5.0     # seconds the broker has to answer a report (a redemption: as long as
                         # the gateway's handshake_timeout, given by the gateway)


class BrokerClient:
    """Redeems tickets with the brokers and reports to them. With several broker URLs, a call
    goes to the broker that answered last, and to the next one when a broker cannot be reached
    or answers that it cannot serve now (5xx): any broker of a fleet serves any call. A call
    whose answer was lost on the way (a timeout after it was sent) is not repeated elsewhere —
    a redemption might have been recorded — but refused (fail closed)."""

    def __init__(self, base_urls: tuple[str, ...] | str, token: bytes,
                 ca_file: Path | None = None, *,
                 redeem_timeout: float = REPORT_TIMEOUT) -> None:
        self.base_urls = (base_urls,) if isinstance(base_urls, str) else tuple(base_urls)
        # a broker that is alive and working gets as long as the viewer's handshake allows:
        # a redemption refused for slowness comes back as one more boot to do
        self._redeem_timeout = aiohttp.ClientTimeout(total=redeem_timeout)
        self._headers = {"Authorization": f"Bearer {token.decode()}"}
        self._ca_file = ca_file
        self._http: aiohttp.ClientSession | None = None
        self._current = 0
        self._logons = _Reports(self, reports.CONNECTED, reports.Logons, reports.MAX_BATCH,
                                LOGON_BATCH)
        self._disconnects = _Reports(self, reports.DISCONNECT, reports.Disconnects,
                                     reports.MAX_DISCONNECTS)
        self._redemptions: list[tuple[reports.Redemption, asyncio.Future]] = []
        self._redeemer: asyncio.Task | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(ssl=ssl.create_default_context(
            cafile=str(self._ca_file))) if self._ca_file else None
        self._http = aiohttp.ClientSession(
            headers=self._headers, timeout=aiohttp.ClientTimeout(total=REPORT_TIMEOUT),
            connector=connector)

    async def close(self) -> None:
        for task in (self._logons.sender, self._disconnects.sender, self._redeemer):
            if task is not None:
                task.cancel()
        if self._http is not None:
            await self._http.close()

    async def _post(self, path: str, body: dict) -> int:
        """POST to the brokers in turn; the first answer's status.

        Raises:
            BrokerUnavailable: no broker answered.
        """
        return (await self._exchange(path, body))[0]

    async def _exchange(self, path: str, body: dict,
                        timeout: aiohttp.ClientTimeout | None = None) -> tuple[int, object]:
        """POST to the brokers in turn; the first answer's status and JSON body (None if none).

        Raises:
            BrokerUnavailable: no broker answered.
        """
        failure = "no broker"
        for shift in range(len(self.base_urls)):
            index = (self._current + shift) % len(self.base_urls)
            try:
                async with self._http.post(self.base_urls[index] + path, json=body,
                                           **({"timeout": timeout} if timeout else {})) as r:
                    status = r.status
                    try:
                        answer = await r.json() if status == 200 else None
                    except (ValueError, aiohttp.ContentTypeError):
                        answer = None
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
            return status, answer
        raise BrokerUnavailable(failure)

    async def redeem(self, claims: Claims) -> None:
        """Record the ticket as used and the session as connected, at a broker: with the other
        redemptions waiting at that moment, in one request (see :meth:`_send_redemptions`).

        Raises:
            TicketReplayed: the broker has seen this ticket before (or its session is gone).
            BrokerUnavailable: no clear answer from any broker.
        """
        answer = asyncio.get_running_loop().create_future()
        self._redemptions.append((reports.Redemption.of(claims), answer))
        if self._redeemer is None or self._redeemer.done():
            self._redeemer = asyncio.ensure_future(self._send_redemptions())
        result = await answer
        if result != reports.REDEEMED:
            raise TicketReplayed(f"the broker says: {result}")

    async def _send_redemptions(self) -> None:
        """Group commit: the first redemption goes at once (no wait when it is quiet); those
        that arrive while a request is on its way go together in the next one — a boot storm
        costs a few requests and transactions per round trip instead of one per ticket."""
        while self._redemptions:
            batch = self._redemptions[:reports.MAX_REDEMPTIONS]
            del self._redemptions[:reports.MAX_REDEMPTIONS]
            try:
                status, answer = await self._exchange(reports.REDEEM, reports.Redemptions(
                    tuple(r for r, _ in batch)).to_json(), self._redeem_timeout)
                results = answer.get("results") if isinstance(answer, dict) else None
                if status != 200 or not isinstance(results, list) or len(results) != len(batch):
                    raise BrokerUnavailable(f"broker answered {status}")
            except BrokerUnavailable as exc:
                for _, waiting in batch:
                    if not waiting.done():
                        waiting.set_exception(BrokerUnavailable(str(exc)))
                continue
            for (_, waiting), result in zip(batch, results):
                if not waiting.done():
                    waiting.set_result(result)

    def connected(self, claims: Claims, redeem_seconds: float, desktop_seconds: float) -> None:
        """The gateway's part of a logon, for the session's logon record: sent with the others
        of the next :data:`LOGON_BATCH` seconds; lost if no broker answers (it is a measurement,
        not a fact anything depends on)."""
        self._logons.add(reports.Connected(claims.tenant, claims.session, redeem_seconds,
                                           desktop_seconds))

    async def alive(self, sessions: list[reports.Held]) -> list[tuple[str, str]] | None:
        """Tell a broker the sessions this gateway holds: it counts those proven as connected.
        Those it has ended, (tenant, session), to be closed here; or None when no broker took
        the report."""
        try:
            status, body = await self._exchange(reports.ALIVE,
                                                reports.Alive(tuple(sessions)).to_json())
        except BrokerUnavailable as exc:
            logger.warning("alive report failed: %s", exc)
            return None
        if status == 204:
            return []
        try:
            if status == 200:
                return list(reports.Over.from_json(body).sessions)
        except reports.BadReport:
            pass
        logger.warning("broker refused the alive report: %s", status)
        return None

    def disconnected(self, claims: Claims, counters: Counters, reason: EndReason,
                     clipboard: dict[str, int] | None = None) -> None:
        """A viewer of the session left: sent at once, or with the others that end while a
        report is on its way (one request; the broker's lease ends a session whose report was
        lost)."""
        self._disconnects.add(reports.Disconnect(claims.tenant, claims.session, counters.up,
                                                 counters.down, reason, claims.user, clipboard,
                                                 claims.ticket_id))


class _Reports:
    """Reports that need no answer, sent in groups: the first after ``delay`` (0: at once), and
    those that arrive while a request is on its way together in the next."""

    def __init__(self, client: BrokerClient, path: str, batch, most: int,
                 delay: float = 0.0) -> None:
        self.client, self.path, self.batch, self.most, self.delay = (client, path, batch, most,
                                                                     delay)
        self.waiting: list = []
        self.sender: asyncio.Task | None = None

    def add(self, report) -> None:
        self.waiting.append(report)
        if self.sender is None or self.sender.done():
            self.sender = asyncio.ensure_future(self._send())

    async def _send(self) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        while self.waiting:
            group = self.waiting[:self.most]
            del self.waiting[:self.most]
            try:
                status = await self.client._post(self.path, self.batch(tuple(group)).to_json())
            except BrokerUnavailable as exc:
                logger.warning("%d reports to %s not delivered: %s", len(group), self.path, exc)
                continue
            if status != 204:
                logger.warning("broker refused %d reports to %s: %s", len(group), self.path,
                               status)
