"""``pforte admin``: the admin API from a terminal, and ``pforte admin-token`` to create tokens.

Examples::

    pforte admin --url http://broker:8080 --token-file ~/.pforte-token --tenant jork hosts
    pforte admin ... drain rathaus-1 --deadline 30m --message "Patches tonight" --wait
    pforte admin ... enable rathaus-1
    pforte admin ... enrolment-code --site rathaus-front-office --class thin-client
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from pathlib import Path
from typing import Callable
from urllib.parse import quote

from .api import ApiError, BrokerApi

WAIT_POLL = 2.0  # seconds between checks while waiting for a host to empty


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``2h`` → seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 30m, 90s, 2h)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


class Client:
    """The tenant's admin API, one call at a time (a command-line tool waits for each)."""

    def __init__(self, url: str, token: str, tenant: str, ca_file: str | None = None) -> None:
        self.url, self.token, self.ca_file = url, token, ca_file
        self.prefix = f"/admin/tenants/{quote(tenant, safe='')}"

    def _api(self) -> BrokerApi:
        return BrokerApi(self.url, token=self.token, ca_file=self.ca_file)

    def text(self, path: str) -> str:
        """A GET answered with text (CSV). Raises: ApiError."""
        async def once() -> str:
            api = self._api()
            try:
                return await api.text(self.prefix + path)
            finally:
                await api.close()
        return asyncio.run(once())

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        """Raises: ApiError."""
        async def once() -> dict:
            api = self._api()
            try:
                return await api.call(method, self.prefix + path, body)
            finally:
                await api.close()
        return asyncio.run(once())


def _table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[str(r.get(c, "")) if r.get(c) is not None else "-" for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _when(ts: float | None, seconds: bool = False) -> str | None:
    """A time as this machine's local time, with its zone (``TZ`` chooses another)."""
    return time.strftime("%Y-%m-%d %H:%M" + (":%S" if seconds else "") + " %Z",
                         time.localtime(ts)) if ts else None


def _hosts(client: Client, args: argparse.Namespace) -> int:
    hosts = client.call("GET", "/hosts")["hosts"]
    for h in hosts:
        h["deadline"] = _when(h["deadline"])
        h["healthy"] = "yes" if h["healthy"] else "NO"
    print(_table(hosts, ["id", "state", "healthy", "used", "free", "seats", "deadline",
                         "message"]))
    return 0


def _sessions(client: Client, args: argparse.Namespace) -> int:
    sessions = client.call("GET", "/sessions")["sessions"]
    for s in sessions:
        s["since"] = _when(s["since"])
    print(_table(sessions, ["id", "user", "host", "pool", "state", "since"]))
    return 0


def _audit(client: Client, args: argparse.Namespace) -> int:
    entries = client.call("GET", f"/audit?limit={args.limit}")["audit"]
    for e in entries:
        e["at"] = _when(e["at"], seconds=True)
    print(_table(entries, ["at", "actor", "source", "action", "result", "detail"]))
    return 0


def _assign(client: Client, args: argparse.Namespace) -> int:
    client.call("POST", f"/pools/{args.pool}/assignments", {"user": args.user, "host": args.host})
    print(f"{args.user} now has {args.host} in {args.pool}")
    return 0


def _reset_mfa(client: Client, args: argparse.Namespace) -> int:
    client.call("POST", f"/users/{quote(args.user, safe='')}/mfa-reset")
    print(f"{args.user} will set up the authenticator app again at the next sign-in")
    return 0


def _enrolment_code(client: Client, args: argparse.Namespace) -> int:
    body = client.call("POST", "/enrolment-codes", {
        "site": args.site, "device_class": args.device_class, "valid_hours": args.hours})
    print(f"{body['code']}  (one device of site {args.site}, class {args.device_class}; "
          f"valid until {_when(body['expires'])})")
    return 0


def _devices(client: Client, args: argparse.Namespace) -> int:
    devices = client.call("GET", "/devices")["devices"]
    for d in devices:
        d["class"] = d["device_class"]
        d["last_seen"], d["revoked"] = _when(d["last_seen"]), _when(d["revoked"])
    print(_table(devices, ["id", "name", "site", "class", "last_seen", "revoked"]))
    return 0


def _move_device(client: Client, args: argparse.Namespace) -> int:
    client.call("POST", f"/devices/{args.device}/move",
                {"site": args.site, "device_class": args.device_class})
    print(f"{args.device} moved; its profile changes at its next boot")
    return 0


def _revoke_device(client: Client, args: argparse.Namespace) -> int:
    client.call("POST", f"/devices/{args.device}/revoke")
    print(f"{args.device} revoked: it is refused from its next request on")
    return 0


def _logoff(client: Client, args: argparse.Namespace) -> int:
    s = client.call("POST", f"/sessions/{args.session}/logoff")["session"]
    print(f"logged off {s['user']} on {s['host']}")
    return 0


def _message(client: Client, args: argparse.Namespace) -> int:
    reached = client.call("POST", f"/sessions/{args.session}/message",
                          {"text": args.text})["reached"]
    print("shown to the user" if reached else "the user is not connected: not shown")
    return 0


def _usage(client: Client, args: argparse.Namespace) -> int:
    month = f"&month={quote(args.month)}" if args.month else ""
    if args.csv:
        print(client.text(f"/usage?format=csv&locale={args.locale}{month}"), end="")
    else:
        print(_table(client.call("GET", f"/usage?{month.lstrip('&')}")["usage"],
                     ["pool", "sessions", "desktop_hours"]))
    return 0


def _windows(client: Client, args: argparse.Namespace) -> int:
    plan = client.call("GET", "/maintenance")
    rows = [{"when": f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(w['start']))} - "
                     f"{time.strftime('%H:%M %Z', time.localtime(w['end']))}",
             "what": f"window {w['window']}", "hosts": ", ".join(w["hosts"])}
            for w in plan["windows"]]
    rows += [{"when": d["day"], "what": d["name"], "hosts": f"calendar {d['calendar']}"}
             for d in plan["days"]]
    print(_table(sorted(rows, key=lambda r: r["when"]), ["when", "what", "hosts"]))
    return 0


def _host_action(client: Client, args: argparse.Namespace) -> int:
    """drain, enable, disable, maintenance: the host's new state."""
    body = None
    if args.admin_command == "drain":
        body = {"deadline_seconds": args.deadline, "message": args.message,
                "logoff": not args.no_logoff}
    host = client.call("POST", f"/hosts/{args.host}/actions/{args.admin_command}", body)["host"]
    print(f"{host['id']}: {host['state']}, {host['used']} sessions")
    if args.admin_command == "drain" and args.wait:
        return _wait_empty(client, args.host, args.wait_timeout)
    return 0


COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {
    "hosts": _hosts, "sessions": _sessions, "audit": _audit, "assign": _assign,
    "reset-mfa": _reset_mfa, "enrolment-code": _enrolment_code, "devices": _devices,
    "move-device": _move_device, "revoke-device": _revoke_device, "logoff": _logoff,
    "message": _message, "usage": _usage, "windows": _windows,
}   # any other command is a host action (its name is the action's)


def run(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get("PFORTE_ADMIN_TOKEN") or (
        Path(args.token_file).read_text().strip() if args.token_file else None)
    if not token:
        print("pforte admin: give --token-file, --token or PFORTE_ADMIN_TOKEN", file=sys.stderr)
        return 2
    client = Client(args.url, token, args.tenant, args.ca_file)
    try:
        return COMMANDS.get(args.admin_command, _host_action)(client, args)
    except ApiError as exc:
        said = f"{exc.status}: {exc.message}" if exc.status else f"broker unreachable ({exc.message})"
        print(f"pforte admin: {said}", file=sys.stderr)
        return 1


def _wait_empty(client: Client, host_id: str, timeout: float | None) -> int:
    start = time.monotonic()
    last = None
    while True:
        host = next(h for h in client.call("GET", "/hosts")["hosts"] if h["id"] == host_id)
        if host["used"] == 0:
            print(f"{host_id} is empty")
            return 0
        if host["used"] != last:
            left = f", deadline {_when(host['deadline'])}" if host["deadline"] else ""
            print(f"{host_id}: {host['used']} sessions left{left}", flush=True)
            last = host["used"]
        if timeout is not None and time.monotonic() - start > timeout:
            print(f"{host_id}: still {host['used']} sessions after {timeout:.0f} s",
                  file=sys.stderr)
            return 3
        time.sleep(WAIT_POLL)


def add_parser(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("admin", help="administer hosts, sessions and thin clients through the "
                       "broker's API", description="Administer hosts, sessions and thin clients "
                       "through the broker's API.")
    a.add_argument("--url", default=os.environ.get("PFORTE_URL", "http://127.0.0.1:8080"),
                   help="the broker (default $PFORTE_URL or http://127.0.0.1:8080)")
    a.add_argument("--ca-file", default=os.environ.get("PFORTE_CA_FILE"),
                   help="the CA (PEM) of the broker's certificate when it is an internal one "
                        "(default $PFORTE_CA_FILE; else the system's CAs)")
    a.add_argument("--token-file", help="file holding an admin token")
    a.add_argument("--token", help="an admin token (prefer --token-file: shells keep history)")
    a.add_argument("--tenant", required=True, help="the municipality's tenant id")
    cmds = a.add_subparsers(dest="admin_command", required=True)
    cmds.add_parser("hosts", help="hosts with state, health and seats")
    cmds.add_parser("sessions", help="live sessions")
    au = cmds.add_parser("audit", help="the audit log, newest first")
    au.add_argument("--limit", type=int, default=50)
    d = cmds.add_parser("drain", help="no new sessions; notify users; log off at the deadline")
    d.add_argument("host")
    d.add_argument("--deadline", type=parse_duration, default=0.0,
                   help="time until remaining users are logged off (30m, 2h; default now)")
    d.add_argument("--message", default="", help="the notice users see")
    d.add_argument("--no-logoff", action="store_true",
                   help="at the deadline, wait for users instead of logging them off")
    d.add_argument("--wait", action="store_true", help="return when the host is empty")
    d.add_argument("--wait-timeout", type=parse_duration, default=None,
                   help="give up waiting after this long (exit code 3)")
    for name, text in (("enable", "take new sessions again"),
                       ("disable", "no new sessions, no reconnects"),
                       ("maintenance", "out of its pools (for patching)")):
        p = cmds.add_parser(name, help=text)
        p.add_argument("host")
    asg = cmds.add_parser("assign", help="give a user of a dedicated pool their host")
    asg.add_argument("pool")
    asg.add_argument("user")
    asg.add_argument("host")
    rm = cmds.add_parser("reset-mfa", help="forget a user's authenticator (lost phone)")
    rm.add_argument("user")
    ms = cmds.add_parser("message", help="show a session's user a message (in the session)")
    ms.add_argument("session")
    ms.add_argument("text")
    us = cmds.add_parser("usage", help="desktop-hours and sessions per pool in a month")
    us.add_argument("--month", help="YYYY-MM (default: this month)")
    us.add_argument("--csv", action="store_true", help="as CSV, for the billing")
    us.add_argument("--locale", choices=("en", "de"), default="en",
                    help="CSV for spreadsheets in this language (de: semicolons, decimal "
                         "commas, UTF-8 with BOM)")
    cmds.add_parser("windows", help="maintenance windows and holidays ahead")
    lo = cmds.add_parser("logoff", help="log a session off now")
    lo.add_argument("session")
    ec = cmds.add_parser("enrolment-code", help="a one-time code that enrols one thin client")
    ec.add_argument("--site", required=True, help="the profile site, e.g. rathaus-front-office")
    ec.add_argument("--class", dest="device_class", required=True,
                    help="the profile device class, e.g. thin-client")
    ec.add_argument("--hours", type=float, default=24.0, help="valid for (default 24)")
    cmds.add_parser("devices", help="enrolled thin clients")
    mv = cmds.add_parser("move-device", help="give a device another site or class")
    mv.add_argument("device")
    mv.add_argument("--site")
    mv.add_argument("--class", dest="device_class")
    rv = cmds.add_parser("revoke-device", help="refuse a device from now on (lost, stolen)")
    rv.add_argument("device")
    a.set_defaults(func=run)
