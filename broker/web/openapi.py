"""The OpenAPI 3.1 description of Pforte's HTTP API, served at ``/api/v1/openapi.json``."""

from __future__ import annotations

_ERROR = {"description": "Refused; `error` is a stable code, `message` a sentence for people",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_BEARER = [{"bearer": []}]


def _op(summary: str, *, body: dict | None = None, ok: str = "200", security=None,
        params: tuple[str, ...] = ()) -> dict:
    op: dict = {"summary": summary, "responses": {ok: {"description": "OK"}, "4XX": _ERROR,
                                                  "5XX": _ERROR}}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if security is not None:
        op["security"] = security
    if params:
        op["parameters"] = [{"name": p, "in": "path", "required": True,
                             "schema": {"type": "string"}} for p in params]
    return op


def _obj(**props: dict) -> dict:
    return {"type": "object", "properties": props, "required": list(props)}


_S = {"type": "string"}
_ADMIN = "/api/v1/admin/tenants/{tenant}"

OPENAPI = {
    "openapi": "3.1.0",
    "info": {"title": "Pforte broker API", "version": "1"},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {"Error": _obj(error=_S, message=_S)},
    },
    "paths": {
        "/api/v1/login": {"post": _op(
            "First factor: directory password. Returns a login token (also set as cookie) and "
            "whether the user must enrol or enter a one-time code next.",
            body=_obj(username=_S, password=_S))},
        "/api/v1/mfa/enrolment": {"get": _op(
            "The TOTP secret to enrol (QR code as SVG), until a first code confirms it.",
            security=_BEARER)},
        "/api/v1/mfa": {"post": _op(
            "Second factor: a one-time code or a recovery code. 204, or 200 with "
            "recovery_codes when the code completed an enrolment (shown only this once).",
            body=_obj(code=_S), security=_BEARER)},
        "/api/v1/pools": {"get": _op("The pools the user is entitled to.", security=_BEARER)},
        "/api/v1/pools/{pool}/connect": {"post": _op(
            "Place the user and issue a single-use ticket for the gateway (and the desktop's "
            "protocol: an rdp ticket goes in an RDCleanPath request's token), with a "
            "reconnect_pass: sent back in the X-Pforte-Reconnect-Pass header on the next "
            "connect, it gets the user a ticket to the same desktop while the database is down "
            "(503 store_unavailable without a valid one). A pass lives a few minutes; ask for "
            "a fresh one every reconnect_pass_renew_after seconds while connected.",
            security=_BEARER, params=("pool",))},
        "/api/v1/pools/{pool}/reconnect-pass": {"post": _op(
            "A fresh reconnect_pass to the desktop the user is connected to in the pool; 409 "
            "not_connected when she has none connected.", security=_BEARER, params=("pool",))},
        "/api/v1/pools/{pool}/connection-file": {"post": _op(
            "A native viewer's connection file (.vnc, .rdp, .vv) naming the local tunnel "
            "(`pforte connect`) on 127.0.0.1:port, from the profile of the device given in the "
            "X-Pforte-Device header (its credential), else the defaults; 409 viewer_mismatch "
            "when the pool's desktops speak another protocol.", security=_BEARER,
            params=("pool",), body={"type": "object", "required": ["port"], "properties": {
                "viewer": {"type": "string", "enum": ["vnc", "rdp", "spice"]},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535}}})},
        "/api/v1/logout": {"post": _op("End the login.", ok="204", security=_BEARER)},
        "/api/v1/devices/enrol": {"post": _op(
            "A new thin client spends a one-time enrolment code; its credential (shown once).",
            body=_obj(code=_S, name=_S))},
        "/api/v1/devices/profile": {"get": _op(
            "The device's effective client profile (bearer: the device credential).",
            security=_BEARER)},
        _ADMIN + "/enrolment-codes": {"post": _op(
            "A one-time enrolment code for a site and device class.", security=_BEARER,
            body={"type": "object", "properties": {"site": _S, "device_class": _S,
                                                   "valid_hours": {"type": "number"}}},
            params=("tenant",))},
        _ADMIN + "/devices": {"get": _op("Enrolled devices.", security=_BEARER,
                                         params=("tenant",))},
        _ADMIN + "/devices/{device}/{action}": {"post": _op(
            "move (body: site, device_class) or revoke a device.", security=_BEARER,
            params=("tenant", "device", "action"))},
        "/api/v1/admin/tenants": {"get": _op("Tenants the caller administers.",
                                             security=_BEARER)},
        _ADMIN + "/hosts": {"get": _op("Hosts with state, health and seats used/free.",
                                       security=_BEARER, params=("tenant",))},
        _ADMIN + "/sessions": {"get": _op("Live sessions: who, where, since when, connected.",
                                          security=_BEARER, params=("tenant",))},
        _ADMIN + "/hosts/{host}/actions/{action}": {"post": _op(
            "enable | drain | disable | maintenance. A drain takes deadline_seconds, message and "
            "logoff (log off who is left at the deadline; false: wait).",
            body={"type": "object", "properties": {
                "deadline_seconds": {"type": "number", "minimum": 0}, "message": _S,
                "logoff": {"type": "boolean"}}},
            security=_BEARER, params=("tenant", "host", "action"))},
        "/api/v1/admin/tokens/revoke": {"post": _op(
            "Revoke admin API tokens by name: of a tenant (its admins), or with tenant null "
            "the operators' (operators only). Refused from their next request on; the event "
            "streams they opened end.",
            body={"type": "object", "properties": {"name": _S,
                                                   "tenant": {"type": ["string", "null"]}},
                  "required": ["name", "tenant"]}, security=_BEARER)},
        _ADMIN + "/sessions/{session}/logoff": {"post": _op(
            "Log a session off now.", security=_BEARER, params=("tenant", "session"))},
        _ADMIN + "/sessions/{session}/message": {"post": _op(
            "Show the session's user a message: inside the session (browser overlay, thin "
            "client) and over SSH where configured; answers whether it reached them.",
            body=_obj(text=_S), security=_BEARER, params=("tenant", "session"))},
        _ADMIN + "/pools/{pool}/assignments": {
            "get": _op("A dedicated pool's users and their hosts.", security=_BEARER,
                       params=("tenant", "pool")),
            "post": _op("Give a user of a dedicated pool their host.", security=_BEARER,
                        body=_obj(user=_S, host=_S), params=("tenant", "pool"))},
        _ADMIN + "/users/{user}/mfa-reset": {"post": _op(
            "Forget a user's authenticator and recovery codes; they enrol again.",
            security=_BEARER, params=("tenant", "user"))},
        _ADMIN + "/audit": {"get": _op("The tenant's audit log, newest first (q: search).",
                                       security=_BEARER, params=("tenant",))},
        _ADMIN + "/events": {"get": _op(
            "Hosts and sessions as server-sent events: an overview now and at every change.",
            security=_BEARER, params=("tenant",))},
        _ADMIN + "/usage": {"get": _op(
            "Desktop-hours and sessions per pool in ?month=YYYY-MM (format=csv for CSV; "
            "locale=de for German spreadsheets: semicolons, decimal commas, UTF-8 with BOM).",
            security=_BEARER, params=("tenant",))},
        "/api/v1/admin/usage": {"get": _op(
            "The same for every tenant the caller administers.", security=_BEARER)},
        _ADMIN + "/maintenance": {"get": _op(
            "Maintenance windows' next occurrences and the holiday calendars, 60 days ahead.",
            security=_BEARER, params=("tenant",))},
    },
}
