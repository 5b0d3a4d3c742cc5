"""Fixtures that start real servers on free loopback ports and stop exactly what they started.

* ``slapd``: OpenLDAP seeded with the test municipality (nested groups, umlauts, LDAP-special
  characters, a user who is not entitled); one per test session.
* ``desktops``: two TigerVNC Xvnc desktops with VNC passwords; one per test session.
* ``installation``: broker and gateway (in the test's event loop) over those, with a fresh state
  directory and keys for every test.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import uvloop
import websockets

from broker import mfa
from broker.config import load_config
from testbed.demo import TENANT, DesktopEntry, write_config
from broker.service import Broker
from broker.store import Store
from testbed import (Postgres, DirectoryUserSpec, GroupSpec, Organisation, Processes, Slapd,
                            XvncDesktop, free_port)
from broker.web import create_app
from gateway.config import gateway_config
from wire.config import load_toml
from gateway.server import Gateway
from wire import serving

SPECIAL_LOGIN = "o'brien(x)*\\,=+"
USERS = {
    "anna": ("Anna Schmidt", "Anna-pass-1"),                 # entitled through a nested group
    "bernd": ("Bernd Müller", "Bernd-pass-1"),               # entitled directly
    "clara": ("Clara Weber", "Clara-pass-1"),                # in no desktop group
    "jörg": ("Jörg Größe", "Grüße (aus) *Jork* \\,=+"),     # umlauts and special characters
    SPECIAL_LOGIN: ("Pat O'Brien", "p@ss (w*rd) \\ x"),
    **{f"user{i}": (f"User {i}", f"User-pass-{i}") for i in range(1, 7)},
    # characters SASLprep would change (², µ, ﬁ, full-width Ａ) or refuse (soft hyphen, TAB)
    "nora": ("Nora Fink", "Nörä²µﬁＡ\u00ad\t-1"),
    "aida": ("Aida Admin", "Aida-pass-1"),                   # in the tenant's admin group
    **{f"guard{i}": (f"Guard {i}", f"Guard-pass-{i}") for i in range(1, 9)},  # attack suite
}
ADMIN_GROUP = "pforte-admins"
GROUPS = (
    GroupSpec("buergerbuero", users=("anna",)),
    GroupSpec("standesamt", users=("bernd",), kind="groupOfUniqueNames"),
    GroupSpec("unix-staff", users=("clara",), kind="posixGroup"),  # memberUid is ASCII only
    GroupSpec("desktop-users", users=("bernd", "jörg", SPECIAL_LOGIN, "nora", "aida",
                                      *(f"user{i}" for i in range(1, 7)),
                                      *(f"guard{i}" for i in range(1, 9))),
              groups=("buergerbuero",)),
    GroupSpec("bauamt", users=("clara",)),
    GroupSpec(ADMIN_GROUP, users=("aida",)),
)
SEATS = 2


def pytest_asyncio_loop_factories(config, item):
    """Tests marked ``both_loops`` run on asyncio and on uvloop; the rest on asyncio."""
    if item.get_closest_marker("both_loops"):
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


def need(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None and not Path(f"/usr/sbin/{p}").exists()]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (scripts/setup installs them)")


@pytest.fixture(scope="session")
def processes():
    p = Processes()
    yield p
    p.stop()


ENGINE = os.environ.get("PFORTE_TEST_DATABASE", "sqlite")   # or "postgres": the whole suite


@pytest.fixture(scope="session")
def postgres(processes) -> Postgres:
    """A private PostgreSQL server for the session (when the suite runs on PostgreSQL)."""
    need("runuser")
    if not list(Path("/usr/lib/postgresql").glob("*/bin/postgres")):
        pytest.skip("not installed: postgresql (scripts/setup installs it)")
    server = Postgres()
    server.start(processes)
    yield server
    processes.stop(server.proc)
    server.remove()


@pytest.fixture
def database(request, tmp_path):
    """A function giving the broker options of a fresh database of the engine the suite runs
    on: nothing for SQLite (a file in the state directory), a new PostgreSQL database."""
    return lambda: database_options(request, tmp_path)


def database_options(request, directory: Path) -> dict:
    if ENGINE != "postgres":
        return {}
    server = request.getfixturevalue("postgres")
    name = f"t_{secrets.token_hex(6)}"
    password_file = directory / f"{name}.pass"
    password_file.write_text(server.password)
    password_file.chmod(0o600)
    return {"database": server.create_database(name),
            "database_password_file": str(password_file)}


@pytest.fixture(scope="session")
def slapd(processes, tmp_path_factory) -> Slapd:
    need("slapd")
    server = Slapd(tmp_path_factory.mktemp("slapd"), "dc=musterstadt,dc=example",
                   root_password=secrets.token_hex(8), service_password=secrets.token_hex(8))
    server.start(processes)
    server.seed(Organisation("Stadt Musterstadt", tuple(
        DirectoryUserSpec(login, name, pw) for login, (name, pw) in USERS.items()), GROUPS))
    return server


@pytest.fixture(scope="session")
def tls_slapd(processes, tmp_path_factory):
    """A slapd that also serves ldaps:// and StartTLS, with a self-signed certificate for
    127.0.0.1 (``tls_slapd.tls[0]`` is its certificate, and so its CA)."""
    from testbed import self_signed_certificate
    need("slapd")
    state = tmp_path_factory.mktemp("slapd-tls")
    server = Slapd(state, "dc=tls,dc=example", root_password="root-pw",
                   service_password="service-pw", tls=self_signed_certificate(state / "tls"))
    server.start(processes)
    server.seed(Organisation("TLS town", (DirectoryUserSpec("tina", "Tina", "Tina-pass-1"),),
                             (GroupSpec("staff", users=("tina",)),)))
    return server


@pytest.fixture(scope="session")
def desktops(processes, tmp_path_factory) -> list[XvncDesktop]:
    need("Xvnc", "vncpasswd", "xsetroot", "xterm")
    result = []
    for name, colour in (("Desktop One", "#2e7d32"), ("Desktop Two", "#1565c0")):
        d = XvncDesktop(tmp_path_factory.mktemp("xvnc"), name, colour,
                        password=secrets.token_hex(4))
        d.start(processes)
        result.append(d)
    return result


@dataclass
class Installation:
    config_path: Path
    broker: Broker
    base_url: str
    gateway_url: str
    http: aiohttp.ClientSession

    async def password_login(self, login: str, password: str | None = None) -> aiohttp.ClientResponse:
        password = USERS[login][1] if password is None else password
        return await self.http.post(f"{self.base_url}/api/v1/login", json={
            "username": f"{login}@musterstadt.example", "password": password})

    async def login(self, login: str) -> str:
        """A full login (password and TOTP) of an enrolled user; returns the bearer token."""
        secret = mfa.new_secret()
        await self.broker.second_factor.import_enrolment(TENANT, login, secret)
        r = await self.password_login(login)
        assert r.status == 200, await r.text()
        token = (await r.json())["token"]
        r = await self.post("/api/v1/mfa", token, {"code": mfa.current_code(secret, time.time())})
        assert r.status == 204, await r.text()
        return token

    async def post(self, path: str, token: str, body: dict | None = None):
        return await self.http.post(f"{self.base_url}{path}", json=body or {},
                                    headers={"Authorization": f"Bearer {token}"})

    async def connect(self, token: str, pool: str = "buero") -> dict:
        r = await self.post(f"/api/v1/pools/{pool}/connect", token)
        assert r.status == 200, await r.text()
        return await r.json()


async def rfb_viewer_handshake(ws) -> bytes:
    """Act as a VNC viewer on a gateway websocket; returns the desktop's ServerInit message."""
    assert await ws.recv() == b"RFB 003.008\n"
    await ws.send(b"RFB 003.008\n")
    assert await ws.recv() == b"\x01\x01"          # one security type: None
    await ws.send(b"\x01")
    assert await ws.recv() == b"\x00\x00\x00\x00"  # security result OK
    await ws.send(b"\x01")                          # ClientInit: shared
    return await ws.recv()


async def open_desktop(conn: dict) -> bytes:
    async with websockets.connect(conn["gateway_url"]) as ws:
        await ws.send(conn["ticket"])
        return await rfb_viewer_handshake(ws)


@pytest.fixture
async def make_installation(tmp_path, slapd, desktops, database):
    """Build an installation; keyword arguments go to ``write_config``."""
    served: list[serving.Listening] = []
    sessions: list[aiohttp.ClientSession] = []

    async def make(**overrides) -> Installation:
        portal_port = overrides.get("portal_port") or free_port()
        gateway_port = overrides.get("gateway_port") or free_port()
        state = tmp_path / f"install-{len(served)}"
        entries = [DesktopEntry(f"desk{i + 1}", d.port, SEATS, d.password)
                   for i, d in enumerate(desktops)]
        options = dict(slapd=slapd, desktops=entries, group=slapd.group_dn("desktop-users"),
                       host="127.0.0.1", portal_port=portal_port, gateway_port=gateway_port)
        options.update(overrides)
        options["broker_options"] = {**database(), **overrides.get("broker_options", {})}
        path = write_config(state, **options)
        config = load_config(path)
        broker = Broker(config, Store.for_config(config))
        gateway = Gateway(gateway_config(load_toml(path)))
        served.append(await serving.listen([
            serving.Site(create_app(broker), "127.0.0.1", portal_port),
            gateway.site("127.0.0.1", gateway_port)]))
        http = aiohttp.ClientSession()
        sessions.append(http)
        return Installation(path, broker, f"http://127.0.0.1:{portal_port}",
                            config.gateway_url, http)

    yield make
    for http in sessions:
        await http.close()
    for listening in reversed(served):
        await listening.close()


@pytest.fixture
async def installation(make_installation) -> Installation:
    return await make_installation()


class AiohttpStream:
    """An aiohttp client websocket with the websockets API that ``rfb_viewer_handshake`` uses."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def recv(self) -> bytes:
        return (await self.ws.receive()).data

    async def send(self, data: bytes) -> None:
        await self.ws.send_bytes(data)


@pytest.fixture
async def fake_desktop():
    """The benchmarks' fake desktop (flood, sink, echo, idle) in the test's loop: (port, links)."""
    from benchmarks.fake_desktop import FakeDesktop
    loop = asyncio.get_running_loop()
    links: list = []

    def factory():
        links.append(FakeDesktop())
        return links[-1]
    server = await loop.create_server(factory, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], links
    server.close()
    for link in links:
        link.transport.close()
    await server.wait_closed()


@pytest.fixture
def raw_install(make_installation, fake_desktop):
    """An installation whose one host is the fake desktop, relayed as opaque bytes (SPICE);
    keyword arguments go to the [gateway] table. Returns (installation, anna's token, links)."""
    port, links = fake_desktop

    async def make(**gateway_options):
        inst = await make_installation(desktops=[DesktopEntry("raw", port, 1000, None, "spice")],
                                       gateway_options=gateway_options)
        return inst, await inst.login("anna"), links
    return make


async def open_ws(inst, token, http: aiohttp.ClientSession) -> aiohttp.ClientWebSocketResponse:
    """A websocket through the gateway to the fake desktop, past its greeting byte."""
    conn = await inst.connect(token)
    ws = await http.ws_connect(conn["gateway_url"], max_msg_size=0)
    await ws.send_str(conn["ticket"])
    msg = await ws.receive()
    assert msg.type is aiohttp.WSMsgType.BINARY and msg.data == b"G", msg
    return ws


async def read_exactly(ws, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        msg = await ws.receive()
        assert msg.type is aiohttp.WSMsgType.BINARY, msg
        out += msg.data
    return bytes(out)


@pytest.fixture(scope="module")
def chromium():
    """Debian's chromium, driven by playwright (headless)."""
    from testbed import CHROMIUM, CHROMIUM_ARGS
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium is not installed (scripts/setup installs it)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def installed(tmp_path_factory) -> Path:
    """``scripts/build-wheel``, then the wheel installed into a fresh virtualenv: its bin/."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "node_modules" / "@novnc" / "novnc").is_dir():
        pytest.skip("not installed: noVNC (scripts/setup installs it with npm)")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(["bash", str(root / "scripts" / "build-wheel"), str(out)], check=True,
                   capture_output=True, timeout=300)
    wheel = next(out.glob("pforte-*.whl"))
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.base_prefix + "/bin/python3", "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], check=True,
                   capture_output=True, timeout=600)
    return venv / "bin"


async def sign_in(directory, typed: str, password: str):
    """A directory's find and verify in one, as the broker's sign-in does them (without the
    throttle between): the user's DirectoryUser, or the refusal."""
    return await directory.verify(await directory.find(typed), password)


def drop_stream(stream) -> None:
    """Break a GatewayStream's connection without a goodbye, as a failing network would."""
    stream.ws._response.connection.transport.abort()
