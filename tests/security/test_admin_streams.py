"""An admin's open event stream ends with her right to it: signed out, or her API token revoked
(from the CLI or the API), the real broker sends ``event: ended`` and closes the stream; a
token revokes only what its holder administers."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import aiohttp
import pytest

from testbed.demo import TENANT

from .conftest import bearer

pytestmark = pytest.mark.integration

ENDS_WITHIN = 20.0     # seconds: the stream's next wake-up comes within a few


async def events_until_end(http: aiohttp.ClientSession, live, token: str,
                           act) -> list[str]:
    """Open the tenant's event stream with ``token``, read the first overview, run ``act()``,
    then read on until the broker closes the stream; the events' names, in order."""
    names: list[str] = []
    async with http.get(f"{live.portal}/api/v1/admin/tenants/{TENANT}/events",
                        headers=bearer(token)) as stream:
        assert stream.status == 200, await stream.text()
        async with asyncio.timeout(ENDS_WITHIN):
            async for line in stream.content:
                if line.startswith(b"event: "):
                    names.append(line[7:].strip().decode())
                    if names == ["overview"]:
                        await act()
    return names


def admin_token(live, *options: str) -> str:
    return subprocess.run([sys.executable, "-m", "pforte", "admin-token", "--config",
                           str(live.config), *options], check=True, capture_output=True,
                          text=True).stdout.strip()


async def test_a_signed_out_admins_stream_ends(live):
    async with live.client("10.71.0.1") as http:
        await live.enrol(http, "aida")
        token = await live.login(http, "aida")

        async def sign_out() -> None:
            r = await http.post(f"{live.portal}/api/v1/logout", headers=bearer(token))
            assert r.status in (200, 204)
        assert (await events_until_end(http, live, token, sign_out))[-1] == "ended"


async def test_a_revoked_operator_tokens_stream_ends(live):
    token = admin_token(live, "--operator", "--name", "night shift")

    async def revoke() -> None:
        await asyncio.to_thread(admin_token, live, "--operator", "--name", "night shift",
                                "--revoke")
    async with aiohttp.ClientSession() as http:
        assert (await events_until_end(http, live, token, revoke))[-1] == "ended"
        r = await http.get(f"{live.portal}/api/v1/admin/tenants", headers=bearer(token))
        assert r.status == 401


async def test_tokens_are_revoked_over_the_api_only_by_who_administers_them(live):
    operator = admin_token(live, "--operator", "--name", "operator on duty")
    leaked = admin_token(live, "--operator", "--name", "leaked")
    clerk = admin_token(live, "--tenant", TENANT, "--name", "town hall admin")
    url = f"{live.portal}/api/v1/admin/tokens/revoke"
    async with aiohttp.ClientSession() as http:
        r = await http.post(url, json={"name": "leaked", "tenant": None}, headers=bearer(clerk))
        assert r.status == 403                  # a tenant's admin: not the operators' tokens
        for body in ({"name": ""}, {"name": 5, "tenant": None}, ["leaked"], {"tenant": None}):
            r = await http.post(url, json=body, headers=bearer(operator))
            assert r.status == 400, body

        async def revoke() -> None:
            r = await http.post(url, json={"name": "leaked", "tenant": None},
                                headers=bearer(operator))
            assert r.status == 200 and (await r.json())["revoked"] == 1
        assert (await events_until_end(http, live, leaked, revoke))[-1] == "ended"
        r = await http.post(url, json={"name": "town hall admin", "tenant": TENANT},
                            headers=bearer(clerk))    # a tenant's admin revokes its own
        assert r.status == 200 and (await r.json())["revoked"] == 1
        r = await http.get(f"{live.portal}/api/v1/admin/tenants", headers=bearer(clerk))
        assert r.status == 401
    audit = [e for e in await live.audit() if e["action"] == "admin_token.revoke"]
    assert any("name=town hall admin" in e["detail"] for e in audit), audit
