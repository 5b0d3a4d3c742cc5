"""The admin API, a sub-application under ``/api/v1/admin``: hosts, drains, sessions, logoff,
users' second factors, thin clients, dedicated desktops and the audit log, per tenant.

Admins authenticate with ``Authorization: Bearer`` and either an API token (``pforte admin-token``;
bound to one tenant, or to all for operators) or the token of a portal login (password and TOTP)
whose directory groups include the tenant's ``admin_group`` — or, in the console (``/admin``), with
the portal login's cookie, where every state-changing request carries the login's CSRF token. :func:`authenticate` (this
application's middleware) checks that for every request before a handler runs: a tenant's admins
see and touch only that tenant; for any other tenant the answer is the same "not an
administrator" as for a tenant that does not exist.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json

from aiohttp import web

from ..admin import pool_name
from ..config import TenantConfig
from ..devices import DEFAULT_CODE_HOURS
from ..errors import BadRequest, LoginRequired, NotAdmin
from ..host_states import Action
from ..logins import AdminLogin, AdminPrincipal, ApiToken, check_csrf
from ..service import Broker
from ..store import OPERATOR
from ..usage import month_of
from .common import BROKER_KEY, Handler, json_body, source_of, token_of

MAX_AUDIT = 1000
PRINCIPAL = web.RequestKey("principal", AdminPrincipal)
TENANT = web.RequestKey("tenant", TenantConfig)

routes = web.RouteTableDef()


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Who the admin is, and for routes naming a tenant, that they may act in it.

    Raises:
        LoginRequired: no bearer token, or an unknown one.
        NotAdmin: no admin right for the tenant named (or no such tenant).
    """
    broker = request.config_dict[BROKER_KEY]
    token, from_cookie = token_of(request)
    if token is None:
        raise LoginRequired("admin API needs a bearer token or a portal login")
    principal = await broker.logins.admin_principal(token)
    if from_cookie and request.method not in ("GET", "HEAD"):
        if not isinstance(principal, AdminLogin):
            raise BadRequest("CSRF token missing or wrong")
        check_csrf(request.headers.get("X-CSRF-Token"), principal.login.csrf)
    request[PRINCIPAL] = principal
    if "tenant" in request.match_info:
        tenant = broker.config.tenant(request.match_info["tenant"])
        if tenant is None or not principal.may(tenant):
            raise NotAdmin("no admin right for this tenant")
        request[TENANT] = tenant
    return await handler(request)


def _acting(request: web.Request) -> dict:
    """The keyword arguments every audited action takes: who, from where."""
    return {"actor": request[PRINCIPAL].actor, "source": source_of(request)}


def _broker(request: web.Request) -> Broker:
    return request.config_dict[BROKER_KEY]


@routes.get("/tenants")
async def tenants(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    return web.json_response({"tenants": [{"id": t.id, "name": t.name}
                                          for t in _broker(request).config.tenants
                                          if principal.may(t)]})


@routes.get("/tenants/{tenant}/hosts")
async def hosts(request: web.Request) -> web.Response:
    return web.json_response({"hosts": await _broker(request).admin.host_overview(
        request[TENANT])})


@routes.get("/tenants/{tenant}/sessions")
async def sessions(request: web.Request) -> web.Response:
    return web.json_response({"sessions": await _broker(request).admin.session_overview(
        request[TENANT])})


@routes.post("/tenants/{tenant}/hosts/{host}/actions/{action}")
async def host_action(request: web.Request) -> web.Response:
    try:
        action = Action(request.match_info["action"])
    except ValueError:
        raise BadRequest("unknown action") from None
    body = await json_body(request) if request.can_read_body else {}
    deadline = body.get("deadline_seconds")
    if deadline is not None and (isinstance(deadline, bool) or not isinstance(
            deadline, (int, float)) or deadline < 0):
        raise BadRequest("deadline_seconds must be a number >= 0")
    message = body.get("message", "")
    logoff = body.get("logoff", True)
    if not isinstance(message, str) or len(message) > 500 or not isinstance(logoff, bool):
        raise BadRequest("message must be text (at most 500 characters), logoff true or false")
    host = await _broker(request).admin.act(
        request[TENANT], request.match_info["host"], action, deadline_seconds=deadline,
        message=message, logoff=logoff, **_acting(request))
    return web.json_response({"host": host})


@routes.post("/tokens/revoke")
async def revoke_tokens(request: web.Request) -> web.Response:
    """Revoke admin API tokens by name: ``{"name": N, "tenant": T}`` (an admin of T), or
    ``"tenant": null`` for operators' tokens (operators only)."""
    body = await json_body(request)
    name, tenant_id = body.get("name"), body.get("tenant")
    if not isinstance(name, str) or not name or not (tenant_id is None
                                                     or isinstance(tenant_id, str)):
        raise BadRequest('expected {"name": NAME, "tenant": TENANT or null}')
    principal = request[PRINCIPAL]
    if tenant_id is None:
        if not (isinstance(principal, ApiToken) and principal.scope == OPERATOR):
            raise NotAdmin("only operators revoke operators' tokens")
    else:
        tenant = _broker(request).config.tenant(tenant_id)
        if tenant is None or not principal.may(tenant):
            raise NotAdmin("no admin right for this tenant")
    revoked = await _broker(request).admin.revoke_tokens(tenant_id or OPERATOR, name,
                                                         **_acting(request))
    return web.json_response({"revoked": revoked})


@routes.post("/tenants/{tenant}/sessions/{session}/logoff")
async def logoff(request: web.Request) -> web.Response:
    session = await _broker(request).admin.logoff(request[TENANT], request.match_info["session"],
                                                  **_acting(request))
    return web.json_response({"session": {"id": session.id, "user": session.login,
                                          "host": session.host, "state": session.state.value}})


@routes.post("/tenants/{tenant}/sessions/{session}/message")
async def message(request: web.Request) -> web.Response:
    text = (await json_body(request)).get("text")
    if not isinstance(text, str) or not 0 < len(text.strip()) <= 500:
        raise BadRequest("text must be text of 1 to 500 characters")
    reached = await _broker(request).admin.message(request[TENANT], request.match_info["session"],
                                                   text, **_acting(request))
    return web.json_response({"reached": reached})


@routes.get("/tenants/{tenant}/pools/{pool}/assignments")
async def dedicated(request: web.Request) -> web.Response:
    return web.json_response({"assignments": await _broker(request).admin.assignments(
        request[TENANT], request.match_info["pool"])})


@routes.post("/tenants/{tenant}/pools/{pool}/assignments")
async def dedicate(request: web.Request) -> web.Response:
    body = await json_body(request)
    user, host = body.get("user"), body.get("host")
    if not isinstance(user, str) or not user or not isinstance(host, str):
        raise BadRequest("expected {user, host}")
    user = await _broker(request).admin.dedicate(request[TENANT], request.match_info["pool"],
                                                 user, host, **_acting(request))
    return web.json_response({"user": user, "host": host})


@routes.post("/tenants/{tenant}/users/{user}/mfa-reset")
async def reset_mfa(request: web.Request) -> web.Response:
    user = await _broker(request).admin.reset_mfa(request[TENANT], request.match_info["user"],
                                                  **_acting(request))
    return web.json_response({"user": user, "mfa": "reset"})


@routes.post("/tenants/{tenant}/enrolment-codes")
async def enrolment_code(request: web.Request) -> web.Response:
    body = await json_body(request)
    site, device_class = body.get("site"), body.get("device_class")
    hours = body.get("valid_hours", DEFAULT_CODE_HOURS)
    if not isinstance(site, str) or not isinstance(device_class, str) or isinstance(
            hours, bool) or not isinstance(hours, (int, float)) or not 0 < hours <= 24 * 30:
        raise BadRequest("expected {site, device_class, valid_hours (0..720)}")
    code, expires = await _broker(request).devices.create_code(
        request[TENANT], site, device_class, hours=hours, **_acting(request))
    return web.json_response({"code": code, "expires": expires})


@routes.get("/tenants/{tenant}/devices")
async def devices(request: web.Request) -> web.Response:
    found = await _broker(request).devices.of_tenant(request[TENANT])
    return web.json_response({"devices": [
        {"id": d.id, "name": d.name, "site": d.site, "device_class": d.device_class,
         "created": d.created, "last_seen": d.last_seen, "revoked": d.revoked} for d in found]})


@routes.post("/tenants/{tenant}/devices/{device}/{action}")
async def device_action(request: web.Request) -> web.Response:
    device_id, action = request.match_info["device"], request.match_info["action"]
    devices = _broker(request).devices
    if action == "revoke":
        await devices.revoke(request[TENANT], device_id, **_acting(request))
    elif action == "move":
        body = await json_body(request)
        site, device_class = body.get("site"), body.get("device_class")
        if not all(v is None or isinstance(v, str) for v in (site, device_class)):
            raise BadRequest("site and device_class must be text")
        await devices.move(request[TENANT], device_id, site=site, device_class=device_class,
                           **_acting(request))
    else:
        raise BadRequest("unknown action")
    return web.json_response({"device": device_id, "action": action})


@routes.get("/tenants/{tenant}/audit")
async def audit(request: web.Request) -> web.Response:
    text = request.query.get("limit", "100")
    if not (text.isascii() and text.isdigit()) or int(text) < 1:  # "-1" would mean "no limit"
        raise BadRequest("limit must be a whole number of at least 1")
    search = request.query.get("q", "")
    if len(search) > 200:
        raise BadRequest("q: at most 200 characters")
    return web.json_response({"audit": await _broker(request).audit.entries(
        request[TENANT].id, min(int(text), MAX_AUDIT), search)})


@routes.get("/tenants/{tenant}/maintenance")
async def maintenance(request: web.Request) -> web.Response:
    """The maintenance windows' next occurrences and the calendars' days, 60 days ahead."""
    return web.json_response(await _broker(request).windows.plan(request[TENANT]))


USAGE_COLUMNS = ("tenant", "pool", "month", "sessions", "desktop_hours")


def _usage_answer(request: web.Request, month: str, rows: list[tuple[str, object]]
                  ) -> web.Response:
    """The usage rows as JSON, or as CSV (``?format=csv``) for the billing spreadsheet: with
    ``&locale=de`` as German office spreadsheets open it directly (semicolons, decimal commas,
    UTF-8 with a byte order mark), otherwise comma-separated with decimal points."""
    if request.query.get("format") == "csv":
        locale = request.query.get("locale", "en")
        if locale not in ("de", "en"):
            raise BadRequest("locale: de or en")
        german = locale == "de"
        out = io.StringIO()
        if german:
            out.write("\ufeff")            # how Excel and LibreOffice know it is UTF-8
        writer = csv.writer(out, delimiter=";" if german else ",", lineterminator="\r\n")
        writer.writerow(USAGE_COLUMNS)
        for tenant_id, u in rows:
            hours = f"{u.desktop_hours:.2f}"
            writer.writerow((tenant_id, u.pool, month, u.sessions,
                             hours.replace(".", ",") if german else hours))
        return web.Response(text=out.getvalue(), content_type="text/csv", charset="utf-8",
                            headers={"Content-Disposition":
                                     f'attachment; filename="pforte-usage-{month}.csv"'})
    tenant_of = _broker(request).config.tenant
    return web.json_response({"month": month, "usage": [
        {"tenant": tenant_id, "pool": u.pool, "pool_name": pool_name(tenant_of(tenant_id), u.pool),
         "sessions": u.sessions, "desktop_hours": u.desktop_hours} for tenant_id, u in rows]})


@routes.get("/tenants/{tenant}/usage")
async def usage(request: web.Request) -> web.Response:
    """Desktop-hours and sessions per pool in ``?month=YYYY-MM`` (default: this month)."""
    tenant = request[TENANT]
    month, found = await _broker(request).admin.usage(tenant, request.query.get("month"))
    return _usage_answer(request, month, [(tenant.id, u) for u in found])


@routes.get("/usage")
async def usage_of_all(request: web.Request) -> web.Response:
    """The same for every tenant the caller administers (an operator: all, for billing)."""
    broker, principal = _broker(request), request[PRINCIPAL]
    rows = []
    month = request.query.get("month") or month_of(broker.clock(), broker.config.time_zone)
    for tenant in broker.config.tenants:
        if principal.may(tenant):
            month, found = await broker.admin.usage(tenant, month)
            rows += [(tenant.id, u) for u in found]
    return _usage_answer(request, month, rows)


HEARTBEAT = 15.0   # seconds: a comment on a quiet event stream keeps proxies from closing it
GROUPS_RECHECK = 60.0  # seconds between asking the directory whether a watching admin still is one
STREAMS = web.AppKey("streams", set)


@routes.get("/tenants/{tenant}/events")
async def events(request: web.Request) -> web.StreamResponse:
    """The tenant's hosts and sessions as server-sent events: one ``overview`` event now, and
    another whenever they change (the console's live view: one stream per open console).

    The watcher is checked again at every wake-up and heartbeat (and the directory asked every
    :data:`GROUPS_RECHECK` seconds): once the login is signed out or expired, the API token
    revoked, or the user no longer in the admin group, the stream sends ``event: ended`` and
    ends."""
    broker, tenant = _broker(request), request[TENANT]
    token = token_of(request)[0]
    loop = asyncio.get_running_loop()
    groups_checked = loop.time()
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    streams = request.app[STREAMS]
    task = asyncio.current_task()
    streams.add(task)
    sent, version, quiet = b"", broker.changes.version, 0.0
    try:
        while True:
            ask_directory = loop.time() - groups_checked >= GROUPS_RECHECK
            if not await broker.logins.still_admin(token, tenant, ask_directory=ask_directory):
                await response.write(b"event: ended\ndata: {\"reason\":\"login_required\"}\n\n")
                break
            if ask_directory:
                groups_checked = loop.time()
            overview = {"hosts": await broker.admin.host_overview(tenant),
                        "sessions": await broker.admin.session_overview(tenant)}
            data = json.dumps(overview, separators=(",", ":")).encode()
            digest = hashlib.sha256(data).digest()
            if digest != sent:
                await response.write(b"event: overview\ndata: " + data + b"\n\n")
                sent, quiet = digest, 0.0
            elif quiet >= HEARTBEAT:
                await response.write(b": still here\n\n")
                quiet = 0.0
            started = asyncio.get_running_loop().time()
            version = await broker.changes.after(version)
            quiet += asyncio.get_running_loop().time() - started
    except ConnectionError:
        pass    # the console closed
    finally:
        streams.discard(task)
    return response


def create() -> web.Application:
    """The admin API as a sub-application (mounted under ``/api/v1/admin/``)."""
    app = web.Application(middlewares=[authenticate])
    app.add_routes(routes)
    app[STREAMS] = set()

    async def end_streams(app: web.Application) -> None:   # stopping: consoles reconnect
        for task in list(app[STREAMS]):
            task.cancel()
    app.on_shutdown.append(end_streams)
    return app
