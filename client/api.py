"""The broker's JSON API as every client calls it (boot agent, local tunnel, ``pforte connect``,
``pforte admin``): one HTTP client, one way to tell the broker's answers apart.

The broker refuses with an HTTP status and ``{"error": code, "message": text}`` (the text in the
language asked for). Here every refusal becomes one of two exceptions:

* :class:`Refused` — the broker said no, and asking again will not help (a wrong code, a revoked
  device, not entitled, not found);
* :class:`Unavailable` — no answer, a server error, or "busy / too many attempts" (503, 429): the
  same request may succeed later.
"""

from __future__ import annotations

import asyncio
import ssl

import aiohttp

from wire.api import DEVICE_HEADER, RECONNECT_PASS_HEADER

DEFAULT_TIMEOUT = 30.0   # seconds for one call


class ApiError(Exception):
    """A call the broker did not answer with success.

    Attributes:
        status: the HTTP status (None: no answer at all).
        code: the broker's error code ("unreachable" without an answer; "refused" when the
            answer carried none).
        message: the broker's text for people; without an answer, the kind of failure.
    """

    def __init__(self, status: int | None, code: str, message: str,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.retry_after = retry_after   # seconds the broker asked us to wait, if it did


class Refused(ApiError):
    """The broker said no; retrying will not change that."""


class Unavailable(ApiError):
    """No answer, or busy for now: try again later."""


def refusal(status: int | None, body: object, fallback: str,
            retry_after: str | None = None) -> ApiError:
    """The exception an answer means (the one place that maps statuses); ``retry_after`` is
    the answer's ``Retry-After`` header (seconds), if any."""
    body = body if isinstance(body, dict) else {}
    code = body.get("error") if isinstance(body.get("error"), str) else "refused"
    message = body.get("message") if isinstance(body.get("message"), str) else fallback
    if status is None or status >= 500 or status == 429:
        wait = float(retry_after) if retry_after and retry_after.isdigit() else None
        return Unavailable(status, code if status else "unreachable", message, wait)
    return Refused(status, code, message)


class BrokerApi:
    """Calls to one broker. Open with a shared :class:`aiohttp.ClientSession` or let it make one
    (then :meth:`close` it)."""

    def __init__(self, base_url: str, *, token: str | None = None, device: str | None = None,
                 language: str | None = None, http: aiohttp.ClientSession | None = None,
                 timeout: float = DEFAULT_TIMEOUT, ca_file: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.ca_file = ca_file      # the CA of an internal certificate (PEM), else the system's
        self.token = token          # a portal login's or an admin token
        self.device = device        # a thin client's device credential
        self.language = language
        self._http = http
        self._own_http = http is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._passes: dict[str, str] = {}   # pool -> the broker's last reconnect pass

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            connector = aiohttp.TCPConnector(ssl=ssl.create_default_context(
                cafile=self.ca_file)) if self.ca_file else None
            self._http = aiohttp.ClientSession(timeout=self._timeout, connector=connector)
        return self._http

    async def connect(self, pool: str) -> dict:
        """A ticket to the user's desktop in ``pool`` (``ticket``, ``gateway_url``, ...). The
        broker's reconnect pass is kept and shown next time, so that the same desktop can be
        reached again while the broker's database is down.

        Raises:
            Refused, Unavailable.
        """
        held = self._passes.get(pool)
        answer = await self.call("POST", f"/pools/{pool}/connect",
                                 headers={RECONNECT_PASS_HEADER: held} if held else None)
        if isinstance(answer.get("reconnect_pass"), str):
            self._passes[pool] = answer["reconnect_pass"]
        return answer

    def held_pass(self, pool: str) -> str | None:
        """The reconnect pass held for ``pool`` (shown with the next connect)."""
        return self._passes.get(pool)

    async def renew_pass(self, pool: str) -> None:
        """Swap the pass held for ``pool`` for a fresh one (while connected to its desktop).

        Raises:
            Refused (not_connected: no connected desktop there), Unavailable.
        """
        answer = await self.call("POST", f"/pools/{pool}/reconnect-pass")
        if isinstance(answer.get("reconnect_pass"), str):
            self._passes[pool] = answer["reconnect_pass"]

    async def call(self, method: str, path: str, body: dict | None = None, *,
                   token: str | None = None, device: str | None = None,
                   headers: dict[str, str] | None = None) -> dict:
        """``method path`` under ``/api/v1``; the answer's JSON object ({} for none). ``token``
        and ``device`` override the client's for this call.

        Raises:
            Refused, Unavailable.
        """
        bearer, device = token or self.token, device or self.device
        headers = {**({"Authorization": f"Bearer {bearer}"} if bearer else {}),
                   **({DEVICE_HEADER: device} if device else {}),
                   **({"Accept-Language": self.language} if self.language else {}),
                   **(headers or {})}
        try:
            async with self.http.request(method, f"{self.base_url}/api/v1{path}", json=body,
                                         headers=headers) as r:
                try:
                    data = await r.json(content_type=None) if r.content_length != 0 else {}
                except ValueError:
                    data = {}
                if r.status >= 400:
                    raise refusal(r.status, data, f"the broker answered {r.status}",
                                  r.headers.get("Retry-After"))
                return data if isinstance(data, dict) else {}
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise refusal(None, None, type(exc).__name__) from None

    async def text(self, path: str) -> str:
        """``GET path`` under ``/api/v1`` answered with text (a CSV export).

        Raises:
            Refused, Unavailable.
        """
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            async with self.http.get(f"{self.base_url}/api/v1{path}", headers=headers) as r:
                if r.status >= 400:
                    try:
                        data = await r.json(content_type=None)
                    except ValueError:
                        data = {}
                    raise refusal(r.status, data, f"the broker answered {r.status}")
                return await r.text()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise refusal(None, None, type(exc).__name__) from None

    async def close(self) -> None:
        if self._own_http and self._http is not None:
            await self._http.close()
            self._http = None
