"""The attack suite's installation: real ``pforte broker`` and ``pforte gateway`` processes on a
fresh state directory, over the session's slapd and Xvnc desktops.

The broker and the gateway trust 127.0.0.1 as a reverse proxy, so each test speaks from client
addresses of its own (``X-Forwarded-For``) and one test's lockouts never touch another's. Limits
that a test must see run out (idle connections, the ticket handshake, the drain) are short.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from broker import mfa
from testbed.demo import TENANT, DesktopEntry, write_config
from testbed import Processes, free_port, wait_for_port

from ..conftest import ADMIN_GROUP, USERS, database_options

DOMAIN = "musterstadt.example"
IDLE = 2.0            # http_idle_timeout of both ports
HANDSHAKE = 2.0       # the gateway's handshake_timeout
DRAIN = 4.0           # the gateway's drain_timeout


@dataclass
class Live:
    state: Path
    config: Path
    portal: str                 # http://127.0.0.1:PORT
    gateway_ws: str             # ws://127.0.0.1:PORT/ws
    gateway_http: str
    processes: Processes
    broker: subprocess.Popen
    gateway: subprocess.Popen
    admin_token: str = ""
    secrets: dict[str, str] = field(default_factory=dict)   # user → TOTP secret once enrolled
    _steps: dict[str, int] = field(default_factory=dict)

    @property
    def portal_port(self) -> int:
        return int(self.portal.rsplit(":", 1)[1])

    @property
    def gateway_port(self) -> int:
        return int(self.gateway_http.rsplit(":", 1)[1])

    def client(self, source: str) -> aiohttp.ClientSession:
        """An HTTP client that the broker sees as ``source`` (through the trusted proxy)."""
        return aiohttp.ClientSession(headers={"X-Forwarded-For": source})

    async def code(self, user: str) -> str:
        """A one-time code of a step this user has not used yet (each step counts once; the
        broker accepts the next step too, so this waits only for a user's third code in one)."""
        step = max(int(time.time()) // mfa.STEP, self._steps.get(user, 0) + 1)
        while step > int(time.time()) // mfa.STEP + mfa.DRIFT_STEPS:
            await asyncio.sleep(1)
        self._steps[user] = step
        return mfa.current_code(self.secrets[user], step * mfa.STEP)

    async def enrol(self, http: aiohttp.ClientSession, user: str) -> list[str]:
        """Enrol the user's authenticator through the portal API; the recovery codes."""
        token = await self.password(http, f"{user}@{DOMAIN}", USERS[user][1])
        r = await http.get(f"{self.portal}/api/v1/mfa/enrolment", headers=bearer(token))
        assert r.status == 200, await r.text()
        self.secrets[user] = (await r.json())["secret"]
        r = await http.post(f"{self.portal}/api/v1/mfa", json={"code": await self.code(user)},
                            headers=bearer(token))
        assert r.status == 200, await r.text()
        return (await r.json())["recovery_codes"]

    async def password(self, http: aiohttp.ClientSession, typed: str, password: str) -> str:
        r = await http.post(f"{self.portal}/api/v1/login",
                            json={"username": typed, "password": password})
        assert r.status == 200, await r.text()
        return (await r.json())["token"]

    async def login(self, http: aiohttp.ClientSession, user: str, typed: str | None = None,
                    code: str | None = None) -> str:
        """Password and one-time code (or the ``code`` given); the bearer token."""
        token = await self.password(http, typed or f"{user}@{DOMAIN}", USERS[user][1])
        r = await http.post(f"{self.portal}/api/v1/mfa",
                            json={"code": code or await self.code(user)}, headers=bearer(token))
        assert r.status == 204, await r.text()
        return token

    async def audit(self, limit: int = 1000) -> list[dict]:
        async with aiohttp.ClientSession() as http:
            r = await http.get(f"{self.portal}/api/v1/admin/tenants/{TENANT}/audit",
                               params={"limit": str(limit)}, headers=bearer(self.admin_token))
            assert r.status == 200, await r.text()
            return (await r.json())["audit"]

    def start_broker(self) -> None:
        self.broker = start(self.processes, "broker", self.config, self.portal_port, self.state)

    def start_gateway(self) -> None:
        self.gateway = start(self.processes, "gateway", self.config, self.gateway_port,
                             self.state)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def start(processes: Processes, what: str, config: Path, port: int,
          state: Path, *options: str) -> subprocess.Popen:
    proc = processes.start([sys.executable, "-m", "pforte", what, "--config", str(config),
                            *options], log=state / f"{what}.log")
    wait_for_port("127.0.0.1", port, proc, what=what)
    return proc


def make_live(state: Path, slapd, desktops, database: dict, *,
              broker_options: dict | None = None, gateway_options: dict | None = None,
              pool_options: dict | None = None, tenant_extra: str = "",
              extra_tenants: str = "", entries: list[DesktopEntry] | None = None,
              gateway_url: str | None = None) -> Live:
    """An installation of separate broker and gateway processes; its hosts are ``desktops``
    (VNC, 100 seats each), or the ``entries`` given; clients are sent to ``gateway_url`` (a
    proxy in front of the gateway), or to the gateway itself."""
    portal_port, gateway_port = free_port(), free_port()
    config = write_config(
        state, slapd=slapd, host="127.0.0.1", portal_port=portal_port,
        gateway_port=gateway_port, group=slapd.group_dn("desktop-users"),
        admin_group=slapd.group_dn(ADMIN_GROUP),
        desktops=entries or [DesktopEntry(f"desk{i + 1}", d.port, 100, d.password)
                             for i, d in enumerate(desktops)],
        broker_options={"trusted_proxies": ["127.0.0.1/32"], "http_idle_timeout": IDLE,
                        **database, **(broker_options or {})},
        gateway_options={"trusted_proxies": ["127.0.0.1/32"], "http_idle_timeout": IDLE,
                         "handshake_timeout": HANDSHAKE, "drain_timeout": DRAIN,
                         **(gateway_options or {})},
        pool_options=pool_options, tenant_extra=tenant_extra, extra_tenants=extra_tenants,
        gateway_url=gateway_url)
    processes = Processes()
    try:
        broker = start(processes, "broker", config, portal_port, state)
        gateway = start(processes, "gateway", config, gateway_port, state)
        token = subprocess.run([sys.executable, "-m", "pforte", "admin-token", "--config",
                                str(config), "--tenant", TENANT, "--name", "attack suite"],
                               check=True, capture_output=True, text=True).stdout.strip()
    except BaseException:
        processes.stop()
        raise
    return Live(state, config, f"http://127.0.0.1:{portal_port}",
                f"ws://127.0.0.1:{gateway_port}/ws", f"http://127.0.0.1:{gateway_port}",
                processes, broker, gateway, admin_token=token)


@pytest.fixture(scope="module")
def live(request, slapd, desktops, tmp_path_factory):
    """One installation for a test module; tests keep apart by client address and user."""
    state = tmp_path_factory.mktemp("live")
    installation = make_live(state, slapd, desktops, database_options(request, state))
    yield installation
    installation.processes.stop()


@pytest.fixture
def own_live(slapd, desktops, tmp_path, database):
    """An installation of the test's own (it may kill its processes); options as make_live."""
    made: list[Live] = []

    def make(**options) -> Live:
        made.append(make_live(tmp_path / f"live-{len(made)}", slapd, desktops, database(),
                              **options))
        return made[-1]
    yield make
    for installation in made:
        installation.processes.stop()


async def close_of(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10.0
                   ) -> tuple[int | None, str]:
    """Read until the websocket closes; the close code and reason the peer sent."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                            aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
                return ws.close_code, (msg.extra or "") if msg.type is aiohttp.WSMsgType.CLOSE \
                    else ""
