"""The JSON API under ``/api/v1`` for users, thin clients and gateways (the admin API is its own
sub-application, :mod:`broker.web.admin_api`)."""

from __future__ import annotations

import dataclasses
import ipaddress

from aiohttp import web

from wire import reports, serving
from wire.api import DEVICE_HEADER, RECONNECT_PASS_HEADER
from wire.events import printable

from ..errors import BadRequest, NoDesktop, NotEntitled, StoreUnavailable
from .common import BROKER_KEY, COOKIE, field, json_body, login_of, set_cookie, source_of, token_of
from .openapi import OPENAPI

routes = web.RouteTableDef()


@routes.post("/api/v1/login")
async def api_login(request: web.Request) -> web.StreamResponse:
    data = await json_body(request)
    broker = request.config_dict[BROKER_KEY]
    token, login = await broker.logins.password_login(
        field(data, "username"), field(data, "password"), source=source_of(request),
        portal_host=request.host)
    enrolled = await broker.second_factor.is_enrolled(login)
    response = web.json_response({"token": token, "csrf": login.csrf,
                                  "next": "mfa" if enrolled else "enrol"})
    set_cookie(request, response, token)
    return response


@routes.get("/api/v1/mfa/enrolment")
async def api_enrolment(request: web.Request) -> web.StreamResponse:
    _, login = await login_of(request, need_mfa=False)
    broker = request.config_dict[BROKER_KEY]
    if not broker.logins.has_a_use(login):
        raise NoDesktop()
    enrolment = await broker.second_factor.enrolment(login)
    return web.json_response({"secret": enrolment.secret, "uri": enrolment.uri,
                              "qr_svg": enrolment.qr_svg})


@routes.post("/api/v1/mfa")
async def api_mfa(request: web.Request) -> web.StreamResponse:
    data = await json_body(request)
    token, login = await login_of(request, need_mfa=False, state_changing=True)
    codes = await request.config_dict[BROKER_KEY].second_factor.check(
        token, login, field(data, "code"), source=source_of(request))
    if codes:
        return web.json_response({"recovery_codes": codes})
    return web.Response(status=204)


@routes.get("/api/v1/pools")
async def api_pools(request: web.Request) -> web.StreamResponse:
    _, login = await login_of(request)
    pools = request.config_dict[BROKER_KEY].connections.entitled_pools(login)
    return web.json_response({"pools": [{"id": p.id, "name": p.name} for p in pools]})


@routes.post("/api/v1/pools/{pool}/connect")
async def api_connect(request: web.Request) -> web.StreamResponse:
    """A ticket to the user's desktop in the pool, and a reconnect pass (``X-Pforte-Reconnect-
    Pass`` on the next call) that brings her back to it while the database is down."""
    broker = request.config_dict[BROKER_KEY]
    source = source_of(request)
    pool = request.match_info["pool"]
    device = None
    try:
        token, login = await login_of(request, state_changing=True)
        if (credential := request.headers.get(DEVICE_HEADER)) is not None:
            # a thin client says which it is: a revoked one is refused, the audit names it
            device = await broker.devices.device(credential, source=source)
            if device.tenant != login.tenant:
                raise NotEntitled(pool)
            source = f"{source} device {device.id}"
        conn = await broker.connections.connect(
            login, pool, source=source, device=device.name if device is not None else None)
        sealed = broker.connections.reconnect_pass(token, login, conn)
    except StoreUnavailable:
        sealed = request.headers.get(RECONNECT_PASS_HEADER)
        if not sealed:
            raise
        token, from_cookie = token_of(request)
        conn = broker.connections.reconnect_in_outage(
            token, sealed, pool, source=source,
            csrf=request.headers.get("X-CSRF-Token", "") if from_cookie else None)
    return web.json_response({"ticket": conn.ticket, "gateway_url": conn.gateway_url,
                              "protocol": conn.protocol,
                              "session": conn.session_id, "expires_at": conn.expires_at,
                              "reconnect_pass": sealed,
                              "reconnect_pass_renew_after": broker.connections.pass_renew_after})


@routes.post("/api/v1/pools/{pool}/reconnect-pass")
async def api_renew_reconnect_pass(request: web.Request) -> web.StreamResponse:
    """A fresh reconnect pass while the user is connected to her desktop in the pool (the
    page and the thin client ask every ``reconnect_pass_renew_after`` seconds)."""
    broker = request.config_dict[BROKER_KEY]
    token, login = await login_of(request, state_changing=True)
    sealed = await broker.connections.renew_pass(token, login, request.match_info["pool"])
    return web.json_response({"reconnect_pass": sealed,
                              "reconnect_pass_renew_after": broker.connections.pass_renew_after})


@routes.post("/api/v1/pools/{pool}/connection-file")
async def api_connection_file(request: web.Request) -> web.StreamResponse:
    _, login = await login_of(request, state_changing=True)
    data = await json_body(request)
    viewer, port = data.get("viewer"), data.get("port")
    if viewer is not None and not isinstance(viewer, str):
        raise BadRequest("viewer")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise BadRequest("port")
    name, media_type, content = await request.config_dict[BROKER_KEY].devices.connection_file(
        login, request.match_info["pool"], viewer=viewer, port=port,
        device_credential=request.headers.get(DEVICE_HEADER), source=source_of(request))
    return web.json_response({"file_name": name, "media_type": media_type, "content": content})


@routes.post("/api/v1/logout")
async def api_logout(request: web.Request) -> web.StreamResponse:
    broker = request.config_dict[BROKER_KEY]
    try:
        token, _ = await login_of(request, need_mfa=False, state_changing=True)
    except StoreUnavailable:      # the login cannot be looked up: its passes die here anyway
        token, from_cookie = token_of(request)
        if token and not from_cookie:   # (a cookie's request could come from another site)
            broker.connections.forget_passes(token)
        raise
    await broker.logins.logout(token)
    response = web.Response(status=204)
    response.del_cookie(COOKIE, path="/")
    return response


@routes.post("/api/v1/devices/enrol")
async def api_device_enrol(request: web.Request) -> web.StreamResponse:
    data = await json_body(request)
    device, credential = await request.config_dict[BROKER_KEY].devices.enrol(
        field(data, "code"), printable(field(data, "name")[:100]), source=source_of(request))
    return web.json_response({"device_id": device.id, "credential": credential,
                              "tenant": device.tenant})


@routes.get("/api/v1/devices/profile")
async def api_device_profile(request: web.Request) -> web.StreamResponse:
    token, _ = token_of(request)
    devices = request.config_dict[BROKER_KEY].devices
    device = await devices.device(token, source=source_of(request))
    return web.json_response({"device_id": device.id, "tenant": device.tenant,
                              "site": device.site, "device_class": device.device_class,
                              "profile": dataclasses.asdict(devices.profile(device))})


def _gateway_authorised(request: web.Request) -> None:
    if not serving.bearer_is(request, request.config_dict[BROKER_KEY].config.report_token):
        raise web.HTTPUnauthorized(text="gateway token missing or wrong\n")


async def _report(request: web.Request, kind):
    """A gateway's report of ``kind`` (see :mod:`wire.reports`), authenticated and checked."""
    _gateway_authorised(request)
    try:
        return kind.from_json(await json_body(request))
    except reports.BadReport as exc:
        raise BadRequest(str(exc)) from None


async def _batch_or_one(request: web.Request, key: str, batch, one) -> tuple[list, bool]:
    """A gateway's batch of reports (``{key: [...]}``), or one alone as gateways of version 0.2
    send it during a rolling upgrade: the reports, and whether it was one alone."""
    _gateway_authorised(request)
    body = await json_body(request)
    alone = key not in body
    try:
        found = (one.from_json(body),) if alone else getattr(batch.from_json(body), key)
    except reports.BadReport as exc:
        raise BadRequest(str(exc)) from None
    return list(found), alone


@routes.post(reports.REDEEM)
async def api_gateway_redeem(request: web.Request) -> web.StreamResponse:
    """Redemptions; one alone is answered as a 0.2 gateway expects: 204, or 409 when refused."""
    batch, alone = await _batch_or_one(request, "redemptions", reports.Redemptions,
                                       reports.Redemption)
    results = await request.config_dict[BROKER_KEY].reports.redeem(batch)
    if alone:
        return web.Response(status=204 if results[0] == reports.REDEEMED else 409)
    return web.json_response({"results": results})


@routes.post(reports.DISCONNECT)
async def api_gateway_disconnect(request: web.Request) -> web.StreamResponse:
    batch, _ = await _batch_or_one(request, "disconnects", reports.Disconnects,
                                   reports.Disconnect)
    await request.config_dict[BROKER_KEY].reports.disconnected(batch)
    return web.Response(status=204)


@routes.post(reports.CONNECTED)
async def api_gateway_connected(request: web.Request) -> web.StreamResponse:
    logons = await _report(request, reports.Logons)
    await request.config_dict[BROKER_KEY].reports.connected(list(logons.connected))
    return web.Response(status=204)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.StreamResponse:
    """The broker's Prometheus metrics (logon phases), for scrapers in ``metrics_networks``."""
    broker = request.config_dict[BROKER_KEY]
    try:
        address = ipaddress.ip_address(source_of(request))
    except ValueError:
        address = None
    if address is None or not any(address in net for net in broker.config.metrics_networks):
        raise web.HTTPForbidden(text="metrics are for the configured scrapers only\n")
    return web.Response(text=broker.logons.prometheus(), content_type="text/plain")


@routes.post(reports.ALIVE)
async def api_gateway_alive(request: web.Request) -> web.StreamResponse:
    """204, or the sessions named that are over here (:class:`wire.reports.Over`); the
    gateway's proof of each is checked (``GatewayReports.alive``)."""
    alive = await _report(request, reports.Alive)
    over = await request.config_dict[BROKER_KEY].reports.alive(list(alive.sessions))
    if not over:
        return web.Response(status=204)
    return web.json_response(reports.Over(tuple(over)).to_json())


@routes.get("/healthz")
async def health(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


@routes.get("/api/v1/openapi.json")
async def openapi_document(request: web.Request) -> web.StreamResponse:
    return web.json_response(OPENAPI)

