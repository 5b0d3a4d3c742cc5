"""Bursts against every throttle, sent at once over a thousand connections to the real broker:
an attempt is reserved before it is evaluated, so no burst gets more guesses than the limit
(5 per user, 50 per client address)."""

from __future__ import annotations

import asyncio
import collections
import time

import aiohttp
import pytest

from broker import mfa
from testbed import free_port

from ..conftest import USERS
from .conftest import DOMAIN, bearer, start

pytestmark = pytest.mark.integration

BURST = 1000
USER_LIMIT, SOURCE_LIMIT = 5, 50


async def burst(source: str, requests) -> collections.Counter:
    """Send every (method, url, kwargs) at once, each on its own connection; count statuses."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector,
                                     headers={"X-Forwarded-For": source}) as http:
        async def one(method, url, kwargs):
            async with http.request(method, url, **kwargs) as r:
                return r.status
        return collections.Counter(await asyncio.gather(*(one(*req) for req in requests)))


def wrong_codes(secret: str, count: int) -> list[str]:
    now = time.time()
    right = {mfa.current_code(secret, now + d * mfa.STEP) for d in (-1, 0, 1, 2)}
    return [c for c in (f"{i:06d}" for i in range(count + len(right))) if c not in right][:count]


async def test_a_thousand_concurrent_wrong_passwords_get_five_guesses(live):
    url = f"{live.portal}/api/v1/login"
    body = {"username": f"guard6@{DOMAIN}", "password": "wrong"}
    statuses = await burst("10.20.0.1", [("POST", url, {"json": body})] * BURST)
    assert statuses[401] <= USER_LIMIT and statuses[401] + statuses[429] == BURST, statuses
    evaluated = [e for e in await live.audit() if e["actor"] == "guard6"
                 and e["result"] == "bad_credentials"]
    assert len(evaluated) <= USER_LIMIT
    async with live.client("10.20.0.2") as http:   # even the right password waits now
        r = await http.post(url, json={"username": f"guard6@{DOMAIN}",
                                       "password": USERS["guard6"][1]})
        assert r.status == 429


async def test_a_thousand_wrong_passwords_for_many_names_from_one_address_get_fifty(live):
    url = f"{live.portal}/api/v1/login"
    statuses = await burst("10.20.0.3", [
        ("POST", url, {"json": {"username": f"nobody{i}@{DOMAIN}", "password": "x"}})
        for i in range(BURST)])
    assert statuses[401] <= SOURCE_LIMIT and statuses[401] + statuses[429] == BURST, statuses
    async with live.client("10.20.0.3") as http:
        r = await http.post(url, json={"username": f"guard6@{DOMAIN}", "password": "x"})
        assert r.status == 429
    async with live.client("10.20.0.4") as http:       # another address is not locked
        r = await http.post(url, json={"username": f"bernd@{DOMAIN}",
                                       "password": USERS["bernd"][1]})
        assert r.status == 200


async def test_a_thousand_concurrent_wrong_codes_on_one_half_login_get_five(live):
    async with live.client("10.20.0.5") as http:
        await live.enrol(http, "guard7")
        token = await live.password(http, f"guard7@{DOMAIN}", USERS["guard7"][1])
    url = f"{live.portal}/api/v1/mfa"
    statuses = await burst("10.20.0.5", [
        ("POST", url, {"json": {"code": code}, "headers": bearer(token)})
        for code in wrong_codes(live.secrets["guard7"], BURST)])
    assert statuses[204] == 0
    assert statuses[401] <= USER_LIMIT and statuses[401] + statuses[429] == BURST, statuses
    async with live.client("10.20.0.6") as http:
        r = await http.post(url, json={"code": await live.code("guard7")}, headers=bearer(token))
        assert r.status == 429                       # locked: even the right code waits


async def test_a_thousand_concurrent_wrong_recovery_codes_get_five(live):
    async with live.client("10.20.0.7") as http:
        codes = await live.enrol(http, "guard8")
        token = await live.password(http, f"guard8@{DOMAIN}", USERS["guard8"][1])
    url = f"{live.portal}/api/v1/mfa"
    statuses = await burst("10.20.0.7", [
        ("POST", url, {"json": {"code": f"{i:04d}-zzzz"}, "headers": bearer(token)})
        for i in range(BURST)])
    assert statuses[204] == 0
    assert statuses[401] <= USER_LIMIT and statuses[401] + statuses[429] == BURST, statuses
    async with live.client("10.20.0.8") as http:
        r = await http.post(url, json={"code": codes[0]}, headers=bearer(token))
        assert r.status == 429


async def test_a_thousand_concurrent_enrolment_codes_get_fifty(live):
    url = f"{live.portal}/api/v1/devices/enrol"
    statuses = await burst("10.20.0.9", [
        ("POST", url, {"json": {"code": f"aaaa-bbbb-{i:04d}", "name": "x"}})
        for i in range(BURST)])
    assert statuses[404] <= SOURCE_LIMIT and statuses[404] + statuses[429] == BURST, statuses
    async with aiohttp.ClientSession() as http:   # a real code, from the locked address
        r = await http.post(f"{live.portal}/api/v1/admin/tenants/musterstadt/enrolment-codes",
                            json={"site": "rathaus-front-office", "device_class": "thin-client"},
                            headers=bearer(live.admin_token))
        code = (await r.json())["code"]
    async with live.client("10.20.0.9") as http:
        r = await http.post(url, json={"code": code, "name": "x"})
        assert r.status == 429
    async with live.client("10.20.0.10") as http:
        r = await http.post(url, json={"code": code, "name": "front desk"})
        assert r.status == 200


async def test_a_thousand_concurrent_device_credentials_get_fifty(live):
    url = f"{live.portal}/api/v1/devices/profile"
    statuses = await burst("10.20.0.11", [
        ("GET", url, {"headers": bearer(f"pfd_guess{i}")}) for i in range(BURST)])
    assert statuses[401] <= SOURCE_LIMIT and statuses[401] + statuses[429] == BURST, statuses


async def test_two_brokers_on_one_database_share_the_limit(own_live):
    """The reservation is one transaction in the database, so a burst split over two broker
    processes sharing the state still gets five guesses."""
    live = own_live()
    second_port = free_port()
    text = live.config.read_text()
    second = live.config.with_name("second-broker.toml")
    second.write_text(text.replace(f'listen = "127.0.0.1:{live.portal_port}"',
                                   f'listen = "127.0.0.1:{second_port}"', 1))
    start(live.processes, "broker", second, second_port, live.state)
    body = {"username": f"bernd@{DOMAIN}", "password": "wrong"}
    requests = [("POST", f"http://127.0.0.1:{port}/api/v1/login", {"json": body})
                for port in (live.portal_port, second_port) for _ in range(BURST // 2)]
    statuses = await burst("10.20.1.1", requests)
    assert statuses[401] <= USER_LIMIT and statuses[401] + statuses[429] == BURST, statuses
