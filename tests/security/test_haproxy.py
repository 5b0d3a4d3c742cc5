"""Behind HAProxy, run with the configuration Pforte ships (``deploy/haproxy/haproxy.cfg``, the
README's block): a client cannot choose its own address with an ``X-Forwarded-For`` of its own,
and when no broker answers, clients get an answer they can read."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest

from testbed import HAProxy, free_port
from testbed.network import SHIPPED_HAPROXY
from testbed.processes import require

from .conftest import DOMAIN

pytestmark = pytest.mark.integration

SOURCE_LIMIT = 50          # wrong passwords one client address gets (the broker's default)
FORGED = "203.0.113.7"


@pytest.fixture(scope="module")
def balancer(live):
    """HAProxy in front of the module's broker and gateway (which trust 127.0.0.1, HAProxy's
    address towards them); its portal's URL."""
    require("haproxy")
    proxy = HAProxy(live.state / "haproxy", [live.portal_port], [live.gateway_port])
    proxy.start(live.processes)
    return f"http://127.0.0.1:{proxy.portal_port}"


def client_from(address: str, forwarded_for: str | None = None) -> aiohttp.ClientSession:
    """An HTTP client whose connections come from ``address`` (a loopback address of its own),
    saying ``forwarded_for`` of itself."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0), force_close=True, limit=0)
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return aiohttp.ClientSession(connector=connector, headers=headers)


async def test_a_client_behind_haproxy_is_audited_at_its_own_address(live, balancer):
    async with client_from("127.0.1.250", FORGED) as http:
        r = await http.post(f"{balancer}/api/v1/login",
                            json={"username": f"guard4@{DOMAIN}", "password": "wrong"})
        assert r.status == 401, await r.text()
    entries = [e for e in await live.audit() if e["actor"] == "guard4"]
    assert entries and {e["source"] for e in entries} == {"127.0.1.250"}, entries


async def test_a_client_behind_haproxy_cannot_dodge_its_throttle_with_forged_addresses(
        live, balancer):
    async with client_from("127.0.1.251") as http:
        statuses = []
        for i in range(SOURCE_LIMIT + 5):          # a new forged address for every guess
            r = await http.post(f"{balancer}/api/v1/login",
                                json={"username": f"nobody{i}@{DOMAIN}", "password": "x"},
                                headers={"X-Forwarded-For": f"198.51.100.{i}"})
            statuses.append(r.status)
    assert statuses.count(401) == SOURCE_LIMIT and set(statuses[SOURCE_LIMIT:]) == {429}, \
        statuses


async def test_with_no_broker_left_haproxy_answers_in_json_with_when_to_ask_again(live):
    proxy = HAProxy(live.state / "haproxy-nobody", [free_port()], [free_port()])
    proxy.start(live.processes)                    # brokers and gateways that are not there
    async with aiohttp.ClientSession() as http:
        r = await http.post(f"http://127.0.0.1:{proxy.portal_port}/api/v1/login",
                            json={"username": "x", "password": "y"})
        assert r.status == 503 and r.headers["Retry-After"].isdigit()
        assert (await r.json())["error"] == "unavailable"


def test_the_readme_shows_the_configuration_that_is_tested():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = re.findall(r"```haproxy\n(.*?)```", readme, re.S)
    assert blocks == [SHIPPED_HAPROXY.read_text()]
