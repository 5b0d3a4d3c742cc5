"""``pforte demo``: a whole installation on one machine, with real parts.

It starts a private OpenLDAP ``slapd`` seeded with the demo municipality (nested groups, one user
who is not entitled, one who still has to enrol), two TigerVNC ``Xvnc`` desktops with their own
background colours and passwords, an RDP host for Anna's Bürgerbüro (Debian's ``xrdp`` in front of
a third ``Xvnc``, which opens with her directory password only: the gateway signs her in, as it
would on a Windows host), and the broker and gateway in this process. It prints the portal URL,
the users with their passwords and TOTP secrets, and writes the same facts as JSON for scripts.
Ctrl-C (or SIGTERM) stops exactly what it started.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from wire import serving
from gateway.config import gateway_config
from wire.config import load_toml
from gateway.server import Gateway

from broker import mfa
from broker.config import load_config
from broker.keys import generate_keys
from broker.service import Broker
from broker.store import OPERATOR, Store
from . import (DirectoryUserSpec, GroupSpec, Organisation, Processes, Slapd, XrdpDesktop,
               XvncDesktop, free_port)
from broker.web import create_app

logger = logging.getLogger("pforte.demo")

TENANT = "musterstadt"
DOMAIN = "musterstadt.example"
SUFFIX = "dc=musterstadt,dc=example"


@dataclass(frozen=True)
class DemoUser:
    login: str
    display_name: str
    entitled: bool
    enrolled: bool
    admin: bool = False        # in the tenant's admin group: the operator's console is hers


USERS = (
    DemoUser("anna", "Anna Schmidt", entitled=True, enrolled=True),    # via a nested group
    DemoUser("bernd", "Bernd Müller", entitled=True, enrolled=True),   # direct member
    DemoUser("clara", "Clara Weber", entitled=False, enrolled=True),   # in no desktop group
    DemoUser("dora", "Dora Fischer", entitled=True, enrolled=False),   # enrols at first login
    DemoUser("edith", "Edith Neumann", entitled=False, enrolled=True, admin=True),  # the IT admin
)
GROUPS = (
    GroupSpec("buergerbuero", users=("anna",)),
    GroupSpec("desktop-users", users=("bernd", "dora"), groups=("buergerbuero",)),
    GroupSpec("bauamt", users=("clara",)),
    GroupSpec("pforte-admins", users=("edith",)),
)
DESKTOPS = (("rathaus-1", "Rathaus Desktop 1", "#2e7d32"),   # green
            ("rathaus-2", "Rathaus Desktop 2", "#1565c0"))   # blue
WINDOWS = ("windows-1", "Bürgerbüro Windows (RDP)", "#6a1b9a")  # purple; Anna's group's pool
SEATS = 5
PROFILES = Path(__file__).resolve().parent.parent / "client_profiles" / "examples"


def _write_secret(path: Path, value: str) -> Path:
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class DesktopEntry:
    id: str
    port: int
    seats: int
    password: str | None           # None: no secret (RDP, SPICE, or a desktop without a password)
    protocol: str = "vnc"
    ssh: dict[str, object] | None = None   # the host's [tenants.hosts.ssh] table
    options: dict[str, object] | None = None   # more keys of the host (certificate_sha256, ...)


def _toml_table(values: dict[str, object]) -> str:
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


def _ssh_table(d: DesktopEntry) -> str:
    return f"[tenants.hosts.ssh]\n{_toml_table(d.ssh)}" if d.ssh else ""


def write_config(state: Path, *, slapd: Slapd, desktops: list[DesktopEntry], group: str,
                 host: str, portal_port: int, gateway_port: int,
                 directory_servers: list[str] | None = None,
                 gateway_options: dict[str, object] | None = None,
                 gateway_url: str | None = None,
                 broker_options: dict[str, object] | None = None,
                 admin_group: str | None = None,
                 pool_options: dict[str, object] | None = None,
                 tenant_extra: str = "", extra_tenants: str = "") -> Path:
    """Write a complete pforte.toml for one tenant on this machine (the demo's, and the tests').

    Keys are created in ``state/keys`` if missing; desktops' passwords go into secret files.
    ``tenant_extra``: more TOML of the tenant (calendars, maintenance windows).
    """
    keys = state / "keys"
    generate_keys(keys)
    desktop_tables = "\n".join(f"""
[[tenants.hosts]]
id = "{d.id}"
address = "127.0.0.1"
port = {d.port}
protocol = "{d.protocol}"
seats = {d.seats}
{f'secret_file = "{_write_secret(keys / f"{d.id}.pass", d.password)}"' if d.password else ""}
{_toml_table(d.options or {})}{_ssh_table(d)}""" for d in desktops)
    config = state / "pforte.toml"
    config.write_text(f"""\
# Written by `pforte demo`. Every key is explained in the README's configuration reference.
[broker]
listen = "{host}:{portal_port}"
state_dir = "{state / 'broker'}"
ticket_private_key_file = "{keys / 'ticket-signing.pem'}"
credential_key_file = "{keys / 'credential.key'}"
totp_key_file = "{keys / 'totp.key'}"
report_token_file = "{keys / 'report.token'}"
gateway_url = "{gateway_url or f'ws://{host}:{gateway_port}/ws'}"
gateway_audience = "demo-gateway"
gateway_control_urls = ["http://{host}:{gateway_port}"]
{_toml_table(broker_options or {})}
[gateway]
listen = "{host}:{gateway_port}"
audience = "demo-gateway"
ticket_public_key_file = "{keys / 'ticket-verify.pem'}"
credential_key_file = "{keys / 'credential.key'}"
report_token_file = "{keys / 'report.token'}"
broker_url = "http://{host}:{portal_port}"
allowed_targets = ["127.0.0.0/8"]
allowed_origins = ["http://{host}:{portal_port}"]
{_toml_table(gateway_options or {})}
[[tenants]]
id = "{TENANT}"
name = "Stadt Musterstadt"
domains = ["{DOMAIN}"]
{f'admin_group = "{admin_group}"' if admin_group else ""}

[tenants.directory]
servers = {json.dumps(directory_servers or [slapd.url])}
security = "plain"                   # the demo's directory is on loopback
timeout = 2
base_dn = "{slapd.suffix}"
bind_dn = "{slapd.service_dn}"
bind_password_file = "{_write_secret(keys / 'ldap-service.pass', slapd.service_password)}"
login_attribute = "uid"

[[tenants.pools]]
id = "buero"
name = "Büro-Desktop"
group = "{group}"
hosts = [{", ".join(f'"{d.id}"' for d in desktops)}]
{_toml_table(pool_options or {})}{desktop_tables}
{tenant_extra}
{extra_tenants}""")
    return config


async def run_demo(state: Path, *, host: str, portal_port: int, gateway_port: int,
                   facts_path: Path, gateway_url: str | None = None) -> None:
    processes = Processes()
    # Each run is a fresh demo town: new passwords, so a new directory, and a database without
    # the last run's enrolments and sessions (a --state-dir used before keeps only its keys).
    for previous in (state / "slapd", state / "broker"):
        shutil.rmtree(previous, ignore_errors=True)
    try:
        passwords = {u.login: f"{u.login.capitalize()}-{secrets.token_hex(4)}" for u in USERS}
        org = Organisation("Stadt Musterstadt", tuple(
            DirectoryUserSpec(u.login, u.display_name, passwords[u.login]) for u in USERS), GROUPS)
        slapd = Slapd(state / "slapd", SUFFIX, root_password=secrets.token_hex(12),
                      service_password=secrets.token_hex(12))
        slapd.start(processes)
        slapd.seed(org)
        desktops = []
        for d_id, name, colour in DESKTOPS:
            desktop = XvncDesktop(state / d_id, name, colour, password=secrets.token_hex(4))
            desktop.start(processes)
            desktops.append(desktop)
        windows = _windows_host(state, processes, passwords["anna"])
        portal_port = portal_port or free_port(host)
        gateway_port = gateway_port or free_port(host)
        config_path = write_config(
            state, slapd=slapd, group=slapd.group_dn("desktop-users"), host=host,
            admin_group=slapd.group_dn("pforte-admins"),
            desktops=[DesktopEntry(d_id, d.port, SEATS, d.password)
                      for (d_id, _, _), d in zip(DESKTOPS, desktops)],
            portal_port=portal_port, gateway_port=gateway_port, gateway_url=gateway_url,
            broker_options={"profiles_dir": str(PROFILES)},
            pool_options={"screen": "follow"},   # each demo desktop is one user's
            tenant_extra=rdp_pool_toml("windows", "Windows-Desktop",
                                       slapd.group_dn("buergerbuero"), WINDOWS[0], windows.port,
                                       windows.certificate_sha256, keyboard_layout="de")
            if windows else "")
        config = load_config(config_path)
        broker = Broker(config, Store.for_config(config))
        gateway = Gateway(gateway_config(load_toml(config_path)))

        totp = {u.login: mfa.new_secret() if u.enrolled else None for u in USERS}

        async def started(bound: list[tuple[str, int]]) -> None:
            for login, secret in totp.items():
                if secret:
                    await broker.second_factor.import_enrolment(TENANT, login, secret)
            operator = secrets.token_urlsafe(24)
            await broker.store.admin.create_token(operator, OPERATOR, "demo operator",
                                                  now=time.time())
            code, _ = await broker.devices.create_code(
                config.tenant(TENANT), "rathaus-front-office", "thin-client", hours=24,
                actor="pforte demo", source="demo")
            portal = f"http://{host}:{portal_port}/"
            facts = {
                "portal_url": portal,
                "gateway_url": config.gateway_url,
                "gateway_metrics_url": f"http://{host}:{gateway_port}/metrics",
                "config": str(config_path),
                "console_url": f"{portal}admin",
                "operator_token": operator,
                "users": [{"login": f"{u.login}@{DOMAIN}", "password": passwords[u.login],
                           "totp_secret": totp[u.login], "entitled": u.entitled,
                           "display_name": u.display_name, "admin": u.admin} for u in USERS],
                "desktops": [{"id": d_id, "name": name, "background": colour, "port": d.port}
                             for (d_id, name, colour), d in zip(DESKTOPS, desktops)]
                + ([{"id": WINDOWS[0], "name": WINDOWS[1], "background": WINDOWS[2],
                     "port": windows.port, "protocol": "rdp", "pool": "windows"}]
                   if windows else []),
                "thin_client": [sys.executable, "-m", "client.agent", "--broker",
                                portal.rstrip("/"), "--state", str(state / "thin-client"),
                                "--enrolment-code", code, "--dry-run"],
            }
            facts_path.write_text(json.dumps(facts, indent=2, ensure_ascii=False) + "\n")
            facts_path.chmod(0o600)
            _announce(facts, facts_path)

        await serving.serve([serving.Site(create_app(broker), host, portal_port),
                             gateway.site(host, gateway_port)],
                            on_started=started)
    finally:
        processes.stop()


def _windows_host(state: Path, processes: Processes, password: str) -> XrdpDesktop | None:
    """The Bürgerbüro's RDP host, or None where ``xrdp`` is not installed (the demo goes on
    with its VNC desktops and says so)."""
    if shutil.which("xrdp") is None:
        logger.warning("xrdp is not installed: the demo has no RDP desktop "
                       "(scripts/setup installs it)")
        return None
    d_id, name, colour = WINDOWS
    host = XrdpDesktop(state / d_id, XvncDesktop(state / f"{d_id}-desktop", name, colour,
                                                 password=password, keyboard="de"))
    host.start(processes)
    return host


def rdp_pool_toml(pool_id: str, name: str, group: str, host_id: str, port: int,
                  certificate_sha256: str, seats: int = 1, **pool_options: object) -> str:
    """TOML of an RDP host on this machine and a pool of it alone (the demo's, the
    benchmarks')."""
    return f"""
[[tenants.pools]]
id = "{pool_id}"
name = "{name}"
group = "{group}"
hosts = ["{host_id}"]
{_toml_table(pool_options)}
[[tenants.hosts]]
id = "{host_id}"
address = "127.0.0.1"
port = {port}
protocol = "rdp"
seats = {seats}
certificate_sha256 = "{certificate_sha256}"
"""


def _announce(facts: dict, facts_path: Path) -> None:
    lines = ["", "Pforte demo is running. Open the portal:", f"  {facts['portal_url']}", "",
             "Demo users (TOTP secret: add it to an authenticator app, or run "
             "`pforte totp SECRET`):"]
    for u in facts["users"]:
        note = "  (the tenant's admin: the console)" if u["admin"] else \
            "" if u["entitled"] else "  (not entitled to any desktop)"
        secret = u["totp_secret"] or "(enrols at first login)"
        lines.append(f"  {u['login']:<26} password {u['password']:<16} TOTP {secret}{note}")
    lines += ["", "The operator's console (hosts, sessions, drains, live):",
              f"  {facts['console_url']}  — sign in as the admin above, or with the operator",
              f"  token {facts['operator_token']}"]
    lines += ["", "Desktops:"]
    lines += [f"  {d['name']} (background {d['background']})"
              + ("  — Anna's, in the pool Windows-Desktop: signed in by the gateway"
                 if d.get("protocol") == "rdp" else "") for d in facts["desktops"]]
    lines += ["", "A thin client at the town hall's front office (it enrols once with a one-time",
              "code, signs a user in, opens the local tunnel and prints the viewer command it",
              "would start):", "  " + " ".join(facts["thin_client"])]
    lines += ["", f"The same facts as JSON: {facts_path}", "Press Ctrl-C to stop.", ""]
    print("\n".join(lines), flush=True)


def main(state_dir: str | None, host: str, portal_port: int, gateway_port: int,
         facts: str | None, use_uvloop: bool, gateway_url: str | None = None) -> None:
    temporary = state_dir is None
    state = Path(state_dir or tempfile.mkdtemp(prefix="pforte-demo-")).resolve()
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    state.chmod(0o700)  # keys, the directory's config, passwords of the demo users
    facts_path = Path(facts).resolve() if facts else state / "demo.json"
    try:
        serving.run(lambda: run_demo(state, host=host, portal_port=portal_port,
                                     gateway_port=gateway_port, facts_path=facts_path,
                                     gateway_url=gateway_url),
                    use_uvloop=use_uvloop)
    finally:
        if temporary:
            shutil.rmtree(state, ignore_errors=True)
