"""Telling the gateways to close a session that was logged off (their ``/control/close``), or
to show its user a notice (``/control/notice``), authenticated with the report token. A gateway that does not answer is logged, never waited on:
the broker has ended the session already, and a gateway that restarts holds nothing of it."""

from __future__ import annotations

import asyncio
import logging

import aiohttp

logger = logging.getLogger("pforte.admin")

GATEWAY_TIMEOUT = 5.0   # seconds a gateway has to confirm it closed a session


class GatewayControl:
    def __init__(self, urls: tuple[str, ...], report_token: bytes) -> None:
        self.urls = urls
        self._headers = {"Authorization": f"Bearer {report_token.decode()}"}
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=GATEWAY_TIMEOUT),
                                           headers=self._headers)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def close_session(self, session_id: str) -> None:
        for url in self.urls:
            try:
                async with self._http.post(f"{url}/control/close",
                                           json={"session": session_id}) as r:
                    if r.status != 204:
                        logger.warning("gateway %s refused to close session %s: %s", url,
                                       session_id, r.status)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                logger.warning("gateway %s unreachable to close session %s: %s", url, session_id,
                               type(exc).__name__)

    async def notify(self, session_id: str, text: str, deadline: int = 0) -> bool:
        """Show a notice inside the session (the page's overlay, the thin client's message);
        whether any gateway reached a connection of it."""
        reached = 0
        for url in self.urls:
            try:
                async with self._http.post(f"{url}/control/notice", json={
                        "session": session_id, "text": text, "deadline": deadline}) as r:
                    if r.status == 200:
                        reached += (await r.json()).get("reached", 0)
                    else:
                        logger.warning("gateway %s refused a notice for session %s: %s", url,
                                       session_id, r.status)
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                logger.warning("gateway %s unreachable for a notice to session %s: %s", url,
                               session_id, type(exc).__name__)
        return reached > 0
