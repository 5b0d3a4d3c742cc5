"""The admin API under ``/api/v1/admin``: hosts, drains, sessions, logoff and audit, per tenant.

Admins authenticate with ``Authorization: Bearer`` and either an API token (``pforte admin-token``;
bound to one tenant, or to all for operators) or the token of a portal login (password and TOTP)
whose directory groups include the tenant's ``admin_group``. A tenant's admins see and touch only
that tenant; for any other tenant the answer is the same "not an administrator" as for a tenant
that does not exist.
"""

from __future__ import annotations

from aiohttp import web

from ..config import TenantConfig
from ..devices import DEFAULT_CODE_HOURS
from ..errors import BadRequest, LoginRequired, NotAdmin, NotFound
from ..host_states import Action
from ..store import OPERATOR
from .app import BROKER_KEY, _json, _source

MAX_AUDIT = 1000


async def _admin(request: web.Request, tenant_id: str | None = None) -> tuple[TenantConfig, str]:
    """The tenant (named in the path unless given) and the acting admin.

    Raises:
        LoginRequired: no bearer token.
        NotAdmin: the token gives no admin right for this tenant.
    """
    broker = request.app[BROKER_KEY]
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer "):
        raise LoginRequired("admin API needs a bearer token")
    token = auth[7:]
    tenant = broker.config.tenant(tenant_id or request.match_info["tenant"])
    scope = await broker.store.admin_token(token)
    if scope is not None:
        if tenant is not None and scope[0] in (OPERATOR, tenant.id):
            return tenant, f"token:{scope[1]}"
        raise NotAdmin("token not for this tenant")
    login = await broker.login_for(token)
    if (tenant is not None and login.tenant == tenant.id and tenant.admin_group
            and tenant.admin_group.lower() in login.groups):
        return tenant, login.login
    raise NotAdmin("not in the admin group")


async def tenants(request: web.Request) -> web.Response:
    broker = request.app[BROKER_KEY]
    visible = []
    for tenant in broker.config.tenants:
        try:
            await _admin(request, tenant.id)
        except NotAdmin:
            continue
        visible.append({"id": tenant.id, "name": tenant.name})
    return web.json_response({"tenants": visible})


async def hosts(request: web.Request) -> web.Response:
    tenant, _ = await _admin(request)
    return web.json_response({"hosts": await request.app[BROKER_KEY].admin.host_overview(tenant)})


async def sessions(request: web.Request) -> web.Response:
    tenant, _ = await _admin(request)
    return web.json_response(
        {"sessions": await request.app[BROKER_KEY].admin.session_overview(tenant)})


async def host_action(request: web.Request) -> web.Response:
    tenant, actor = await _admin(request)
    try:
        action = Action(request.match_info["action"])
    except ValueError:
        raise BadRequest("unknown action") from None
    body = await _json(request) if request.can_read_body else {}
    deadline = body.get("deadline_seconds")
    if deadline is not None and (isinstance(deadline, bool) or not isinstance(
            deadline, (int, float)) or deadline < 0):
        raise BadRequest("deadline_seconds must be a number >= 0")
    message = body.get("message", "")
    logoff = body.get("logoff", True)
    if not isinstance(message, str) or len(message) > 500 or not isinstance(logoff, bool):
        raise BadRequest("message must be text (at most 500 characters), logoff true or false")
    host = await request.app[BROKER_KEY].admin.act(
        tenant, request.match_info["host"], action, actor=actor, source=_source(request),
        deadline_seconds=deadline, message=message, logoff=logoff)
    return web.json_response({"host": host})


async def logoff(request: web.Request) -> web.Response:
    tenant, actor = await _admin(request)
    session = await request.app[BROKER_KEY].admin.logoff(
        tenant, request.match_info["session"], actor=actor, source=_source(request))
    return web.json_response({"session": {"id": session.id, "user": session.login,
                                          "host": session.host, "state": session.state.value}})


async def dedicated(request: web.Request) -> web.Response:
    tenant, _ = await _admin(request)
    pool = request.match_info["pool"]
    return web.json_response({"assignments": await request.app[BROKER_KEY].store.dedicated_hosts(
        tenant.id, pool)})


async def dedicate(request: web.Request) -> web.Response:
    tenant, actor = await _admin(request)
    body = await _json(request)
    user, host = body.get("user"), body.get("host")
    if not isinstance(user, str) or not user or not isinstance(host, str):
        raise BadRequest("expected {user, host}")
    user = await request.app[BROKER_KEY].admin.dedicate(
        tenant, request.match_info["pool"], user, host, actor=actor, source=_source(request))
    return web.json_response({"user": user, "host": host})


async def reset_mfa(request: web.Request) -> web.Response:
    tenant, actor = await _admin(request)
    user = request.match_info["user"]
    user = await request.app[BROKER_KEY].admin.reset_mfa(tenant, user, actor=actor,
                                                         source=_source(request))
    return web.json_response({"user": user, "mfa": "reset"})


async def enrolment_code(request: web.Request) -> web.Response:
    tenant, actor = await _admin(request)
    body = await _json(request)
    site, device_class = body.get("site"), body.get("device_class")
    hours = body.get("valid_hours", DEFAULT_CODE_HOURS)
    if not isinstance(site, str) or not isinstance(device_class, str) or isinstance(
            hours, bool) or not isinstance(hours, (int, float)) or not 0 < hours <= 24 * 30:
        raise BadRequest("expected {site, device_class, valid_hours (0..720)}")
    code, expires = await request.app[BROKER_KEY].devices.create_code(
        tenant, site, device_class, hours=hours, actor=actor, source=_source(request))
    return web.json_response({"code": code, "expires": expires})


async def devices(request: web.Request) -> web.Response:
    tenant, _ = await _admin(request)
    found = await request.app[BROKER_KEY].store.devices(tenant.id)
    return web.json_response({"devices": [
        {"id": d.id, "name": d.name, "site": d.site, "device_class": d.device_class,
         "created": d.created, "last_seen": d.last_seen, "revoked": d.revoked} for d in found]})


async def device_action(request: web.Request) -> web.Response:
    tenant, actor = await _admin(request)
    broker = request.app[BROKER_KEY]
    device_id, action = request.match_info["device"], request.match_info["action"]
    if action == "revoke":
        changed = await broker.store.update_device(tenant.id, device_id, revoked=broker.clock())
    elif action == "move":
        body = await _json(request)
        site, device_class = body.get("site"), body.get("device_class")
        if not all(v is None or isinstance(v, str) for v in (site, device_class)):
            raise BadRequest("site and device_class must be text")
        changed = await broker.store.update_device(tenant.id, device_id, site=site,
                                                   device_class=device_class)
    else:
        raise BadRequest("unknown action")
    if not changed:
        raise NotFound(device_id)
    await broker.audit(tenant.id, actor, _source(request), f"device.{action}", "ok",
                       f"device={device_id}")
    return web.json_response({"device": device_id, "action": action})


async def audit(request: web.Request) -> web.Response:
    tenant, _ = await _admin(request)
    text = request.query.get("limit", "100")
    if not (text.isascii() and text.isdigit()) or int(text) < 1:  # "-1" would mean "no limit"
        raise BadRequest("limit must be a whole number of at least 1")
    limit = min(int(text), MAX_AUDIT)
    return web.json_response(
        {"audit": await request.app[BROKER_KEY].store.audit_log(tenant.id, limit)})


def add_routes(app: web.Application) -> None:
    r = app.router
    base = "/api/v1/admin/tenants"
    r.add_get(base, tenants)
    r.add_get(base + "/{tenant}/hosts", hosts)
    r.add_get(base + "/{tenant}/sessions", sessions)
    r.add_post(base + "/{tenant}/hosts/{host}/actions/{action}", host_action)
    r.add_post(base + "/{tenant}/sessions/{session}/logoff", logoff)
    r.add_get(base + "/{tenant}/audit", audit)
    r.add_post(base + "/{tenant}/users/{user}/mfa-reset", reset_mfa)
    r.add_post(base + "/{tenant}/enrolment-codes", enrolment_code)
    r.add_get(base + "/{tenant}/devices", devices)
    r.add_post(base + "/{tenant}/devices/{device}/{action}", device_action)
    r.add_get(base + "/{tenant}/pools/{pool}/assignments", dedicated)
    r.add_post(base + "/{tenant}/pools/{pool}/assignments", dedicate)
