"""The boot agent: its retry schedule (pure) and a boot against the real broker, also when the
broker comes up only after the thin client."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from broker import mfa
from broker.demo import TENANT
from broker.store import OPERATOR
from broker.testbed import BreakableProxy, free_port
from client_profiles.agent import MAX_DELAY, Agent, Refused, backoff

EXAMPLES = Path(__file__).resolve().parent.parent / "client_profiles" / "examples"


@given(st.integers(0, 50), st.integers(0, 2**32))
def test_waits_grow_but_stay_bounded(attempt, seed):
    delay = backoff(attempt, random.Random(seed))
    assert 0 <= delay <= min(MAX_DELAY, 0.5 * 2 ** attempt)


def test_neighbours_do_not_retry_in_lockstep():
    schedules = {tuple(round(backoff(a, random.Random(seed)), 6) for a in range(6))
                 for seed in range(50)}
    assert len(schedules) == 50


async def boot_agent(inst, url: str, state: Path, anna_secret: str, messages: list[str],
                     give_up_after: float = 30.0) -> tuple[Agent, list[str]]:
    _, body = await _admin(inst, "POST", f"/api/v1/admin/tenants/{TENANT}/enrolment-codes",
                           {"site": "rathaus-front-office", "device_class": "thin-client"})
    answers = {"Username": "anna@musterstadt.example", "Password": "Anna-pass-1"}

    def ask(prompt: str, secret: bool) -> str:
        if prompt == "One-time code":
            return mfa.current_code(anna_secret, time.time())
        return answers[prompt]
    agent = Agent(url, state, ask, messages.append, "Counter 7", body["code"],
                  rng=random.Random(1), give_up_after=give_up_after)
    return agent, await agent.boot()


async def _admin(inst, method, path, body=None):
    r = await inst.http.request(method, f"{inst.base_url}{path}", json=body,
                                headers={"Authorization": "Bearer op"})
    return r.status, await r.json()


@pytest.fixture
async def fleet(make_installation):
    inst = await make_installation(broker_options={"profiles_dir": str(EXAMPLES)})
    await inst.broker.store.create_admin_token("op", OPERATOR, "t", now=time.time())
    secret = mfa.new_secret()
    await inst.broker.import_enrolment(TENANT, "anna", secret)
    return inst, secret


@pytest.mark.integration
async def test_a_thin_client_boots_into_its_viewer_through_the_tunnel(fleet, tmp_path):
    inst, secret = fleet
    messages: list[str] = []
    agent, command = await boot_agent(inst, inst.base_url, tmp_path, secret, messages)
    try:
        assert command[0] == "vncviewer"                       # the profile's native viewer
        text = Path(command[1]).read_text()
        assert "ServerName=127.0.0.1::" in text and "FullScreenMode=All" in text
        assert (tmp_path / "device-credential").stat().st_mode & 0o077 == 0
        port = int(text.split("::")[1].split()[0])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.readexactly(12), 10) == b"RFB 003.008\n"
        writer.close()
    finally:
        await agent.close()
    # the next boot uses the stored credential: no new enrolment code needed
    again = Agent(inst.base_url, tmp_path, lambda p, s: "", messages.append)
    try:
        credential = await again.credential()
        assert credential == (tmp_path / "device-credential").read_text()
    finally:
        await again.close()


@pytest.mark.integration
async def test_the_agent_waits_for_a_broker_that_comes_up_later(fleet, tmp_path):
    inst, secret = fleet
    port = free_port()                      # nothing listens here yet: the broker is "down"
    messages: list[str] = []
    broker_port = int(inst.base_url.rsplit(":", 1)[1])

    async def bring_up() -> BreakableProxy:
        await asyncio.sleep(1.5)
        return BreakableProxy(broker_port, port=port)
    up = asyncio.ensure_future(bring_up())
    agent, command = await boot_agent(inst, f"http://127.0.0.1:{port}", tmp_path, secret,
                                      messages)
    proxy = await up
    try:
        assert command[0] == "vncviewer"
        assert any("cannot be reached" in m and "Next try" in m for m in messages)
    finally:
        await agent.close()
        proxy.stop()


@pytest.mark.integration
async def test_a_revoked_device_is_told_plainly_and_not_retried(fleet, tmp_path):
    inst, secret = fleet
    agent, _ = await boot_agent(inst, inst.base_url, tmp_path, secret, [])
    await agent.close()
    _, devices = await _admin(inst, "GET", f"/api/v1/admin/tenants/{TENANT}/devices")
    await _admin(inst, "POST", f"/api/v1/admin/tenants/{TENANT}/devices/"
                               f"{devices['devices'][0]['id']}/revoke")
    again = Agent(inst.base_url, tmp_path, lambda p, s: "", lambda m: None)
    try:
        with pytest.raises(Refused) as refused:
            await again.boot()
        assert refused.value.code == "device_revoked"
    finally:
        await again.close()
