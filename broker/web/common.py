"""What the broker's web modules share: who is asking and over what (behind trusted proxies),
the one place errors become answers, security headers on every response, logins from cookie or
bearer token with their CSRF check, and request bodies read within limits.

Errors are translated in one place (:func:`errors_middleware`): API clients get ``{"error",
"message"}`` with the HTTP status of the error class; portal pages re-render with the message in
the user's language. Unexpected exceptions are logged with a request id that the user sees as a
reference; their text never leaves the process.

A portal login is a random token in an HttpOnly, SameSite=Strict cookie (or, for non-browser
clients, an ``Authorization: Bearer`` header), ``Secure`` whenever the portal is reached over
HTTPS. State-changing requests that rely on the cookie must carry the login's CSRF token.

Behind a reverse proxy the client's address and scheme come from ``X-Forwarded-For`` and
``X-Forwarded-Proto`` only when the peer is one of ``trusted_proxies`` (:func:`client_middleware`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
from typing import Awaitable, Callable

from aiohttp import web

from wire import serving

from ..errors import BadRequest, BrokerError, LoginRequired, Overloaded
from ..logins import check_csrf
from ..service import Broker
from ..store import Login
from . import pages
from .i18n import TEXTS, choose_language

logger = logging.getLogger("pforte.web")

COOKIE = "pforte_login"
KIOSK_COOKIE = "pforte_kiosk"  # a kiosk browser (/login?kiosk=1): straight into the only desktop
MAX_BODY = 64 * 1024
BODY_TIMEOUT = 10.0   # seconds to receive a request body
HTTP_ERRORS = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
               408: "timeout", 413: "too_large"}   # aiohttp's own refusals, as API error codes

BROKER_KEY = web.AppKey("broker", Broker)
REQUEST_ID = web.RequestKey("request_id", str)
SOURCE = web.RequestKey("source", str)      # the client's address (see client_middleware)
SECURE = web.RequestKey("secure", bool)     # reached over HTTPS (directly or at a trusted proxy)
HSTS = "max-age=31536000"                    # a year; sent only on HTTPS responses
# never shed: the gateways' reports (a redemption is the last, cheap step of a boot that already
# cost), health checks (a balancer would take a busy broker out), metrics, files, administrators
UNSHED = ("/api/v1/gateway/", "/api/v1/admin/", "/healthz", "/metrics", "/static/", "/novnc/",
          "/rdp/")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]



def language(request: web.Request) -> tuple[str, dict[str, str]]:
    lang = choose_language(request.headers.get("Accept-Language"))
    return lang, TEXTS[lang]


def message_for(request: web.Request, exc: BrokerError) -> str:
    _, t = language(request)
    code = exc.code if exc.code in t else "error"
    return t[code].format(ref=request.get(REQUEST_ID, "-"))


def source_of(request: web.Request) -> str:
    return request[SOURCE]


@web.middleware
async def client_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Who is asking, and over what: the peer, or what a trusted proxy says of its client."""
    trusted = request.config_dict[BROKER_KEY].config.trusted_proxies
    request[SOURCE] = serving.client_address(
        request.remote, request.headers.getall("X-Forwarded-For", ()), trusted)
    request[SECURE] = request.secure or serving.forwarded_proto(
        request.remote, request.headers.getall("X-Forwarded-Proto", ()), trusted) == "https"
    return await handler(request)


class Shedding:
    """At most ``limit`` users' requests in work at once in this process, the next ``queued``
    waiting for a place in arrival order; one more is refused before any work is done
    (:class:`~broker.errors.Overloaded`: 503 with ``Retry-After``), and one whose client has
    gone by its turn is not started. Overload then costs users time, not failed boots: what
    waits is answered in turn, what is refused is asked again later, and the gateways'
    redemptions (never shed or queued) are answered in time."""

    def __init__(self, limit: int, queued: int) -> None:
        self.limit, self.queued = limit, queued
        self.in_flight = 0
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(UNSHED):
            return await handler(request)
        if self.in_flight < self.limit:
            self.in_flight += 1
        elif len(self._waiting) < self.queued:
            turn = asyncio.get_running_loop().create_future()
            self._waiting.append(turn)
            try:
                await turn                              # a finishing request hands its place on
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._release()                     # the place was ours: pass it on
                raise
        else:
            raise Overloaded()
        try:
            if request.transport is None or request.transport.is_closing():
                raise web.HTTPServiceUnavailable(text="the client has gone\n")
            return await handler(request)
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self.in_flight -= 1


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[REQUEST_ID] = secrets.token_hex(6)
    try:
        response = await handler(request)
    except BrokerError as exc:
        retry = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        if request.path.startswith("/api/"):
            return web.json_response({"error": exc.code, "message": message_for(request, exc)},
                                     status=exc.status, headers=retry)
        if isinstance(exc, LoginRequired):
            raise web.HTTPSeeOther("/login") from None
        lang, t = language(request)
        return web.Response(text=pages.login_page(lang, t, error=message_for(request, exc)),
                            content_type="text/html", status=exc.status, headers=retry)
    except web.HTTPException as exc:
        if exc.status >= 400 and request.path.startswith("/api/"):  # API clients get JSON
            return web.json_response({"error": HTTP_ERRORS.get(exc.status, "bad_request"),
                                      "message": exc.reason}, status=exc.status)
        raise
    except Exception:
        logger.exception("request %s %s failed (ref %s)", request.method, request.path,
                         request[REQUEST_ID])
        message = message_for(request, BrokerError())
        if request.path.startswith("/api/"):
            return web.json_response({"error": "error", "message": message}, status=500)
        return web.Response(text=message, status=500)
    return response


def content_security_policy(request: web.Request, *, webassembly: bool = False) -> str:
    """The pages' policy: everything from the portal itself, websockets also to the gateway.
    ``webassembly``: the page may compile WebAssembly (never JS eval), from the ``data:`` URL
    that IronRDP's module carries it in (the RDP desktop page)."""
    broker = request.config_dict[BROKER_KEY]
    gateway_origin = "/".join(broker.config.gateway_url.split("/", 3)[:3])
    scripts, fetched = ("'self' 'wasm-unsafe-eval'", " data:") if webassembly else ("'self'", "")
    return ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            f"script-src {scripts}; connect-src 'self' {gateway_origin}{fetched}; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """An ``on_response_prepare`` hook: every response (pages, API, redirects, 401, 404, static
    files) gets the same security headers; HTTPS responses also HSTS."""
    headers = response.headers
    headers.setdefault("Content-Security-Policy", content_security_policy(request))
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    if request.get(SECURE, request.secure):
        headers.setdefault("Strict-Transport-Security", HSTS)
    if not request.path.startswith(("/static/", "/novnc/", "/rdp/")):
        headers.setdefault("Cache-Control", "no-store")


def token_of(request: web.Request) -> tuple[str | None, bool]:
    """The login token and whether it came from the cookie (which then needs a CSRF token)."""
    token = serving.bearer(request)
    if token is not None:
        return token, False
    return request.cookies.get(COOKIE), True


async def login_of(request: web.Request, *, need_mfa: bool = True, csrf: str | None = None,
                 state_changing: bool = False) -> tuple[str, Login]:
    token, from_cookie = token_of(request)
    login = await request.config_dict[BROKER_KEY].logins.login_for(token, need_mfa=need_mfa)
    if state_changing and from_cookie:
        check_csrf(csrf if csrf is not None else request.headers.get("X-CSRF-Token"),
                   login.csrf)
    return token, login


def set_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/",
                        secure=request.get(SECURE, request.secure),
                        max_age=request.config_dict[BROKER_KEY].config.login_lifetime)


async def _body(read: Awaitable):
    """A request body, read within BODY_TIMEOUT (a client that sends it a byte at a time does
    not hold a connection for long)."""
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            return await read
    except TimeoutError:
        raise web.HTTPRequestTimeout(text="request body too slow\n") from None


async def form_body(request: web.Request) -> dict[str, str]:
    data = await _body(request.post())
    return {k: _text(k, v) for k, v in data.items() if isinstance(v, str)}


async def json_body(request: web.Request) -> dict:
    try:
        data = await _body(request.json())
    except (ValueError, RecursionError):
        raise BadRequest("body is not JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("body is not a JSON object")
    return data


def _text(name: str, value: str) -> str:
    """Text that is UTF-8 (JSON may carry lone surrogates, "\\ud800", which are not)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{name} is not text") from None
    return value


def field(data: dict, name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise BadRequest(f"{name} missing")
    return _text(name, value)

