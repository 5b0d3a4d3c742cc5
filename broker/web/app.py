"""HTTP: the portal (HTML forms) and the JSON API under ``/api/v1``, thin over :class:`Broker`.

Errors are translated in one place (:func:`_errors`): API clients get ``{"error", "message"}``
with the HTTP status of the error class; portal pages re-render with the message in the user's
language. Unexpected exceptions are logged with a request id that the user sees as a reference;
their text never leaves the process.

A portal login is a random token in an HttpOnly, SameSite=Strict cookie (or, for non-browser
clients, an ``Authorization: Bearer`` header), ``Secure`` whenever the portal is reached over
HTTPS. State-changing requests that rely on the cookie must carry the login's CSRF token.

Behind a reverse proxy the client's address and scheme come from ``X-Forwarded-For`` and
``X-Forwarded-Proto`` only when the peer is one of ``trusted_proxies`` (:func:`_client`); every
response, redirects and errors included, carries the security headers (:func:`_security_headers`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import secrets
from pathlib import Path
from typing import Awaitable, Callable

from aiohttp import web

from wire import serving
from wire.closes import EndReason

from ..errors import BadRequest, BrokerError, LoginRequired, NotEntitled
from ..service import Broker, printable
from ..store import Login
from . import pages
from .openapi import OPENAPI
from .i18n import TEXTS, choose_language

logger = logging.getLogger("pforte.web")

COOKIE = "pforte_login"
KIOSK_COOKIE = "pforte_kiosk"  # a kiosk browser (/login?kiosk=1): straight into the only desktop
STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_NOVNC_DIR = Path(__file__).resolve().parents[2] / "node_modules" / "@novnc" / "novnc"
MAX_BODY = 64 * 1024
BODY_TIMEOUT = 10.0   # seconds to receive a request body
HTTP_ERRORS = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
               408: "timeout", 413: "too_large"}   # aiohttp's own refusals, as API error codes

BROKER_KEY = web.AppKey("broker", Broker)
REQUEST_ID = web.RequestKey("request_id", str)
SOURCE = web.RequestKey("source", str)      # the client's address (see _client)
SECURE = web.RequestKey("secure", bool)     # reached over HTTPS (directly or at a trusted proxy)
HSTS = "max-age=31536000"                    # a year; sent only on HTTPS responses

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _lang(request: web.Request) -> tuple[str, dict[str, str]]:
    lang = choose_language(request.headers.get("Accept-Language"))
    return lang, TEXTS[lang]


def _message(request: web.Request, exc: BrokerError) -> str:
    _, t = _lang(request)
    code = exc.code if exc.code in t else "error"
    return t[code].format(ref=request.get(REQUEST_ID, "-"))


def _source(request: web.Request) -> str:
    return request[SOURCE]


@web.middleware
async def _client(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Who is asking, and over what: the peer, or what a trusted proxy says of its client."""
    trusted = request.app[BROKER_KEY].config.trusted_proxies
    request[SOURCE] = serving.client_address(request.remote,
                                             request.headers.get("X-Forwarded-For"), trusted)
    proto = request.headers.get("X-Forwarded-Proto", "")
    request[SECURE] = request.secure or (serving.is_trusted(request.remote, trusted) and
                                         proto.split(",")[-1].strip().lower() == "https")
    return await handler(request)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[REQUEST_ID] = secrets.token_hex(6)
    try:
        response = await handler(request)
    except BrokerError as exc:
        if request.path.startswith("/api/"):
            return web.json_response({"error": exc.code, "message": _message(request, exc)},
                                     status=exc.status)
        if isinstance(exc, LoginRequired):
            raise web.HTTPSeeOther("/login") from None
        lang, t = _lang(request)
        return web.Response(text=pages.login_page(lang, t, error=_message(request, exc)),
                            content_type="text/html", status=exc.status)
    except web.HTTPException as exc:
        if exc.status >= 400 and request.path.startswith("/api/"):  # API clients get JSON
            return web.json_response({"error": HTTP_ERRORS.get(exc.status, "bad_request"),
                                      "message": exc.reason}, status=exc.status)
        raise
    except Exception:
        logger.exception("request %s %s failed (ref %s)", request.method, request.path,
                         request[REQUEST_ID])
        message = _message(request, BrokerError())
        if request.path.startswith("/api/"):
            return web.json_response({"error": "error", "message": message}, status=500)
        return web.Response(text=message, status=500)
    return response


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """An ``on_response_prepare`` hook: every response (pages, API, redirects, 401, 404, static
    files) gets the same security headers; HTTPS responses also HSTS."""
    broker = request.app[BROKER_KEY]
    gateway_origin = "/".join(broker.config.gateway_url.split("/", 3)[:3])
    headers = response.headers
    headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        f"connect-src 'self' {gateway_origin}; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'self'")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    if request.get(SECURE, request.secure):
        headers.setdefault("Strict-Transport-Security", HSTS)
    if not request.path.startswith(("/static/", "/novnc/")):
        headers.setdefault("Cache-Control", "no-store")


def _token(request: web.Request) -> tuple[str | None, bool]:
    """The login token and whether it came from the cookie (which then needs a CSRF token)."""
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[7:], False
    return request.cookies.get(COOKIE), True


async def _login(request: web.Request, *, need_mfa: bool = True, csrf: str | None = None,
                 state_changing: bool = False) -> tuple[str, Login]:
    token, from_cookie = _token(request)
    login = await request.app[BROKER_KEY].login_for(token, need_mfa=need_mfa)
    if state_changing and from_cookie:
        sent = csrf if csrf is not None else request.headers.get("X-CSRF-Token", "")
        if not hmac.compare_digest(sent.encode(), login.csrf.encode()):
            raise BadRequest("CSRF token missing or wrong")
    return token, login


def _set_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/",
                        secure=request.get(SECURE, request.secure),
                        max_age=request.app[BROKER_KEY].config.login_lifetime)


async def _body(read: Awaitable):
    """A request body, read within BODY_TIMEOUT (a client that sends it a byte at a time does
    not hold a connection for long)."""
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            return await read
    except TimeoutError:
        raise web.HTTPRequestTimeout(text="request body too slow\n") from None


async def _form(request: web.Request) -> dict[str, str]:
    data = await _body(request.post())
    return {k: _text(k, v) for k, v in data.items() if isinstance(v, str)}


async def _json(request: web.Request) -> dict:
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


def _field(data: dict, name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise BadRequest(f"{name} missing")
    return _text(name, value)


# -- portal ------------------------------------------------------------------------------------
async def index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/desktops")


async def login_form(request: web.Request) -> web.StreamResponse:
    lang, t = _lang(request)
    response = web.Response(text=pages.login_page(lang, t), content_type="text/html")
    if request.query.get("kiosk") == "1":  # for as long as this browser runs
        response.set_cookie(KIOSK_COOKIE, "1", httponly=True, samesite="Strict", path="/",
                            secure=request.get(SECURE, request.secure))
    return response


async def login_submit(request: web.Request) -> web.StreamResponse:
    lang, t = _lang(request)
    form = await _form(request)
    username = form.get("username", "")
    try:
        token, _ = await request.app[BROKER_KEY].password_login(
            username, form.get("password", ""), source=_source(request), portal_host=request.host)
    except BrokerError as exc:
        return web.Response(text=pages.login_page(lang, t, error=_message(request, exc),
                                                  username=username),
                            content_type="text/html", status=exc.status)
    response = web.HTTPSeeOther("/mfa")
    _set_cookie(request, response, token)
    raise response


async def mfa_form(request: web.Request, *, error: str | None = None,
                   status: int = 200) -> web.StreamResponse:
    lang, t = _lang(request)
    _, login = await _login(request, need_mfa=False)
    broker = request.app[BROKER_KEY]
    if login.mfa_done:
        raise web.HTTPSeeOther("/desktops")
    if await broker.is_enrolled(login):
        body = pages.mfa_page(lang, t, login.csrf, error=error)
    else:
        enrolment = await broker.enrolment(login)
        body = pages.mfa_page(lang, t, login.csrf, error=error, enrol_key=enrolment.secret,
                              qr_svg=enrolment.qr_svg)
    return web.Response(text=body, content_type="text/html", status=status)


async def mfa_submit(request: web.Request) -> web.StreamResponse:
    form = await _form(request)
    token, login = await _login(request, need_mfa=False, csrf=form.get("csrf", ""),
                                state_changing=True)
    try:
        codes = await request.app[BROKER_KEY].second_factor(token, login, form.get("code", ""),
                                                            source=_source(request))
    except LoginRequired:
        raise
    except BrokerError as exc:
        return await mfa_form(request, error=_message(request, exc), status=exc.status)
    if codes:
        lang, t = _lang(request)
        return web.Response(text=pages.recovery_codes_page(lang, t, codes),
                            content_type="text/html")
    raise web.HTTPSeeOther("/desktops")


async def desktops(request: web.Request) -> web.StreamResponse:
    lang, t = _lang(request)
    _, login = await _login(request)
    pools = request.app[BROKER_KEY].entitled_pools(login)
    if len(pools) == 1 and request.cookies.get(KIOSK_COOKIE) == "1":
        raise web.HTTPSeeOther(f"/desktop/{pools[0].id}")
    return web.Response(text=pages.desktops_page(lang, t, login.csrf, login.display_name, pools),
                        content_type="text/html")


async def desktop(request: web.Request) -> web.StreamResponse:
    lang, t = _lang(request)
    _, login = await _login(request)
    pool_id = request.match_info["pool"]
    pools = request.app[BROKER_KEY].entitled_pools(login)
    pool = next((p for p in pools if p.id == pool_id), None)
    if pool is None:
        return web.Response(text=pages.desktops_page(lang, t, login.csrf, login.display_name, pools,
                                                     error=t["not_entitled"]),
                            content_type="text/html", status=403)
    return web.Response(text=pages.desktop_page(lang, t, login.csrf, pool,
                                                kiosk=request.cookies.get(KIOSK_COOKIE) == "1"),
                        content_type="text/html")


async def logout(request: web.Request) -> web.StreamResponse:
    form = await _form(request)
    token, _ = await _login(request, need_mfa=False, csrf=form.get("csrf", ""),
                            state_changing=True)
    await request.app[BROKER_KEY].logout(token)
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


# -- JSON API ----------------------------------------------------------------------------------
async def api_login(request: web.Request) -> web.StreamResponse:
    data = await _json(request)
    broker = request.app[BROKER_KEY]
    token, login = await broker.password_login(
        _field(data, "username"), _field(data, "password"), source=_source(request),
        portal_host=request.host)
    enrolled = await broker.is_enrolled(login)
    response = web.json_response({"token": token, "csrf": login.csrf,
                                  "next": "mfa" if enrolled else "enrol"})
    _set_cookie(request, response, token)
    return response


async def api_enrolment(request: web.Request) -> web.StreamResponse:
    _, login = await _login(request, need_mfa=False)
    enrolment = await request.app[BROKER_KEY].enrolment(login)
    return web.json_response({"secret": enrolment.secret, "uri": enrolment.uri,
                              "qr_svg": enrolment.qr_svg})


async def api_mfa(request: web.Request) -> web.StreamResponse:
    data = await _json(request)
    token, login = await _login(request, need_mfa=False, state_changing=True)
    codes = await request.app[BROKER_KEY].second_factor(token, login, _field(data, "code"),
                                                        source=_source(request))
    if codes:
        return web.json_response({"recovery_codes": codes})
    return web.Response(status=204)


async def api_pools(request: web.Request) -> web.StreamResponse:
    _, login = await _login(request)
    pools = request.app[BROKER_KEY].entitled_pools(login)
    return web.json_response({"pools": [{"id": p.id, "name": p.name} for p in pools]})


async def api_connect(request: web.Request) -> web.StreamResponse:
    _, login = await _login(request, state_changing=True)
    broker = request.app[BROKER_KEY]
    source = _source(request)
    if (credential := request.headers.get("X-Pforte-Device")) is not None:
        # a thin client says which it is: a revoked one is refused, the audit names it
        device = await broker.devices.device(credential, source=source)
        if device.tenant != login.tenant:
            raise NotEntitled(request.match_info["pool"])
        source = f"{source} device {device.id}"
    conn = await broker.connect(login, request.match_info["pool"], source=source)
    return web.json_response({"ticket": conn.ticket, "gateway_url": conn.gateway_url,
                              "session": conn.session_id, "expires_at": conn.expires_at})


async def api_connection_file(request: web.Request) -> web.StreamResponse:
    _, login = await _login(request, state_changing=True)
    data = await _json(request)
    viewer, port = data.get("viewer"), data.get("port")
    if viewer is not None and not isinstance(viewer, str):
        raise BadRequest("viewer")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise BadRequest("port")
    name, media_type, content = await request.app[BROKER_KEY].devices.connection_file(
        login, request.match_info["pool"], viewer=viewer, port=port,
        device_credential=request.headers.get("X-Pforte-Device"), source=_source(request))
    return web.json_response({"file_name": name, "media_type": media_type, "content": content})


async def api_logout(request: web.Request) -> web.StreamResponse:
    token, _ = await _login(request, need_mfa=False, state_changing=True)
    await request.app[BROKER_KEY].logout(token)
    response = web.Response(status=204)
    response.del_cookie(COOKIE, path="/")
    return response


async def api_device_enrol(request: web.Request) -> web.StreamResponse:
    data = await _json(request)
    device, credential = await request.app[BROKER_KEY].devices.enrol(
        _field(data, "code"), printable(_field(data, "name")[:100]), source=_source(request))
    return web.json_response({"device_id": device.id, "credential": credential,
                              "tenant": device.tenant})


async def api_device_profile(request: web.Request) -> web.StreamResponse:
    token, _ = _token(request)
    devices = request.app[BROKER_KEY].devices
    device = await devices.device(token, source=_source(request))
    return web.json_response({"device_id": device.id, "tenant": device.tenant,
                              "site": device.site, "device_class": device.device_class,
                              "profile": dataclasses.asdict(devices.profile(device))})


def _gateway_authorised(request: web.Request) -> None:
    expected = b"Bearer " + request.app[BROKER_KEY].config.report_token
    if not hmac.compare_digest(request.headers.get("Authorization", "").encode(), expected):
        raise web.HTTPUnauthorized(text="gateway token missing or wrong\n")


async def api_gateway_redeem(request: web.Request) -> web.StreamResponse:
    _gateway_authorised(request)
    data = await _json(request)
    expires = data.get("expires_at")
    if type(expires) is not int:
        raise BadRequest("expires_at missing")
    ok = await request.app[BROKER_KEY].redeem(
        _field(data, "ticket_id"), expires, _field(data, "tenant"), _field(data, "user"),
        _field(data, "session"))
    return web.Response(status=204 if ok else 409)


async def api_gateway_disconnect(request: web.Request) -> web.StreamResponse:
    _gateway_authorised(request)
    data = await _json(request)
    await request.app[BROKER_KEY].disconnected(_field(data, "tenant"), _field(data, "session"),
                                               EndReason.parse(data.get("reason")))
    return web.Response(status=204)


async def api_gateway_alive(request: web.Request) -> web.StreamResponse:
    _gateway_authorised(request)
    data = await _json(request)
    sessions = data.get("sessions")
    if not isinstance(sessions, list) or not all(
            isinstance(s, dict) and isinstance(s.get("tenant"), str)
            and isinstance(s.get("session"), str) for s in sessions):
        raise BadRequest("sessions must be a list of {tenant, session}")
    await request.app[BROKER_KEY].store.touch_sessions(
        [(s["tenant"], s["session"]) for s in sessions], now=request.app[BROKER_KEY].clock())
    return web.Response(status=204)


async def health(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


async def openapi_document(request: web.Request) -> web.StreamResponse:
    return web.json_response(OPENAPI)


def create_app(broker: Broker, *, novnc_dir: Path = DEFAULT_NOVNC_DIR) -> web.Application:
    """The broker's aiohttp application; starting it starts the broker, cleanup closes it."""
    app = web.Application(middlewares=[_client, _errors], client_max_size=MAX_BODY)
    app[BROKER_KEY] = broker
    app.on_response_prepare.append(_security_headers)
    app.on_response_prepare.append(serving.name_the_server)
    r = app.router
    r.add_get("/", index)
    r.add_get("/login", login_form)
    r.add_post("/login", login_submit)
    r.add_get("/mfa", mfa_form)
    r.add_post("/mfa", mfa_submit)
    r.add_get("/desktops", desktops)
    r.add_get("/desktop/{pool}", desktop)
    r.add_post("/logout", logout)
    r.add_post("/api/v1/login", api_login)
    r.add_get("/api/v1/mfa/enrolment", api_enrolment)
    r.add_post("/api/v1/mfa", api_mfa)
    r.add_get("/api/v1/pools", api_pools)
    r.add_post("/api/v1/pools/{pool}/connect", api_connect)
    r.add_post("/api/v1/pools/{pool}/connection-file", api_connection_file)
    r.add_post("/api/v1/logout", api_logout)
    r.add_post("/api/v1/devices/enrol", api_device_enrol)
    r.add_get("/api/v1/devices/profile", api_device_profile)
    r.add_post("/api/v1/gateway/redeem", api_gateway_redeem)
    r.add_post("/api/v1/gateway/disconnect", api_gateway_disconnect)
    r.add_post("/api/v1/gateway/alive", api_gateway_alive)
    r.add_get("/healthz", health)
    r.add_get("/api/v1/openapi.json", openapi_document)
    from . import admin_api  # it builds on this module's helpers
    admin_api.add_routes(app)
    r.add_static("/static/", STATIC_DIR)
    if novnc_dir.is_dir():
        r.add_static("/novnc/", novnc_dir)
    else:
        logger.warning("noVNC not found at %s: the desktop page will not work "
                       "(run the setup, which installs it with npm)", novnc_dir)
    app.on_startup.append(lambda _app: broker.start())
    app.on_cleanup.append(lambda _app: broker.close())
    return app
