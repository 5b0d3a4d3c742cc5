"""The portal: HTML pages for signing in (password, then one-time code or enrolment), the
desktop list and the desktop page, German and English."""

from __future__ import annotations

from aiohttp import web

from ..errors import BrokerError, LoginRequired
from . import pages
from .common import (BROKER_KEY, COOKIE, KIOSK_COOKIE, SECURE, content_security_policy,
                     form_body, language, login_of,
                     message_for, set_cookie, source_of)

routes = web.RouteTableDef()


@routes.get("/")
async def index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/desktops")


@routes.get("/login")
async def login_form(request: web.Request) -> web.StreamResponse:
    lang, t = language(request)
    response = web.Response(text=pages.login_page(lang, t), content_type="text/html")
    if request.query.get("kiosk") == "1":  # for as long as this browser runs
        response.set_cookie(KIOSK_COOKIE, "1", httponly=True, samesite="Strict", path="/",
                            secure=request.get(SECURE, request.secure))
    return response


@routes.post("/login")
async def login_submit(request: web.Request) -> web.StreamResponse:
    lang, t = language(request)
    form = await form_body(request)
    username = form.get("username", "")
    try:
        token, _ = await request.config_dict[BROKER_KEY].logins.password_login(
            username, form.get("password", ""), source=source_of(request), portal_host=request.host)
    except BrokerError as exc:
        return web.Response(text=pages.login_page(lang, t, error=message_for(request, exc),
                                                  username=username),
                            content_type="text/html", status=exc.status)
    response = web.HTTPSeeOther("/mfa")
    set_cookie(request, response, token)
    raise response


@routes.get("/mfa")
async def mfa_form(request: web.Request, *, error: str | None = None,
                   status: int = 200) -> web.StreamResponse:
    lang, t = language(request)
    _, login = await login_of(request, need_mfa=False)
    broker = request.config_dict[BROKER_KEY]
    if login.mfa_done:
        raise web.HTTPSeeOther("/desktops")
    if await broker.second_factor.is_enrolled(login):
        body = pages.mfa_page(lang, t, login.csrf, error=error)
    elif not broker.logins.has_a_use(login):     # told now, not after enrolling a factor
        body = pages.desktops_page(lang, t, login.csrf, login.display_name, [], console=False)
    else:
        enrolment = await broker.second_factor.enrolment(login)
        body = pages.mfa_page(lang, t, login.csrf, error=error, enrol_key=enrolment.secret,
                              qr_svg=enrolment.qr_svg)
    return web.Response(text=body, content_type="text/html", status=status)


@routes.post("/mfa")
async def mfa_submit(request: web.Request) -> web.StreamResponse:
    form = await form_body(request)
    token, login = await login_of(request, need_mfa=False, csrf=form.get("csrf", ""),
                                state_changing=True)
    try:
        codes = await request.config_dict[BROKER_KEY].second_factor.check(
            token, login, form.get("code", ""), source=source_of(request))
    except LoginRequired:
        raise
    except BrokerError as exc:
        return await mfa_form(request, error=message_for(request, exc), status=exc.status)
    if codes:
        lang, t = language(request)
        return web.Response(text=pages.recovery_codes_page(lang, t, codes),
                            content_type="text/html")
    raise web.HTTPSeeOther("/desktops")


@routes.get("/desktops")
async def desktops(request: web.Request) -> web.StreamResponse:
    lang, t = language(request)
    _, login = await login_of(request)
    pools = request.config_dict[BROKER_KEY].connections.entitled_pools(login)
    if len(pools) == 1 and request.cookies.get(KIOSK_COOKIE) == "1":
        raise web.HTTPSeeOther(f"/desktop/{pools[0].id}")
    return web.Response(text=pages.desktops_page(
        lang, t, login.csrf, login.display_name, pools,
        console=request.config_dict[BROKER_KEY].logins.administers(login)),
        content_type="text/html")


@routes.get("/desktop/{pool}")
async def desktop(request: web.Request) -> web.StreamResponse:
    lang, t = language(request)
    _, login = await login_of(request)
    pool_id = request.match_info["pool"]
    pools = request.config_dict[BROKER_KEY].connections.entitled_pools(login)
    pool = next((p for p in pools if p.id == pool_id), None)
    if pool is None:
        return web.Response(text=pages.desktops_page(lang, t, login.csrf, login.display_name, pools,
                                                     error=t["not_entitled"]),
                            content_type="text/html", status=403)
    tenant = request.config_dict[BROKER_KEY].config.tenant(login.tenant)
    protocol = tenant.host(pool.hosts[0]).protocol     # one for all its hosts (the config)
    response = web.Response(text=pages.desktop_page(lang, t, login.csrf, pool, protocol=protocol,
                                                    kiosk=request.cookies.get(KIOSK_COOKIE) == "1"),
                            content_type="text/html")
    if protocol == "rdp":   # the page's RDP client is WebAssembly: compiled, never JS eval
        response.headers["Content-Security-Policy"] = content_security_policy(
            request, webassembly=True)
    return response


@routes.get("/admin")
async def console(request: web.Request) -> web.StreamResponse:
    """The operator's console: its page signs in (directory admins by their portal login,
    operators by a token) and works on the admin API, as any other client does."""
    lang, t = language(request)
    try:
        _, login = await login_of(request)
        csrf = login.csrf
    except LoginRequired:
        csrf = ""
    zone = str(request.config_dict[BROKER_KEY].config.time_zone)
    return web.Response(text=pages.console_page(lang, t, csrf, zone), content_type="text/html")


@routes.post("/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    form = await form_body(request)
    token, _ = await login_of(request, need_mfa=False, csrf=form.get("csrf", ""),
                            state_changing=True)
    await request.config_dict[BROKER_KEY].logins.logout(token)
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response

