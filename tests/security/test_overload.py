"""An overloaded broker sheds load early and says so: beyond ``requests_in_flight`` users'
requests and ``requests_queued`` waiting for their turn, the real broker process answers 503
"busy" with ``Retry-After`` before doing any work
(nothing is counted against a throttle, nothing is audited), while the gateways' reports and
the health check are still answered."""

from __future__ import annotations

import asyncio
import collections

import aiohttp
import pytest

from .conftest import DOMAIN, bearer

pytestmark = pytest.mark.integration

BURST = 300
LIMIT, QUEUED = 2, 8


async def test_beyond_its_limit_the_broker_answers_busy_before_the_work(own_live):
    live = own_live(broker_options={"requests_in_flight": LIMIT, "requests_queued": QUEUED})
    report_token = (live.state / "keys" / "report.token").read_text().strip()
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector,
                                     headers={"X-Forwarded-For": "10.70.0.1"}) as http:
        async def login(i: int) -> tuple[int, dict, str | None]:
            async with http.post(f"{live.portal}/api/v1/login",
                                 json={"username": f"nobody{i}@{DOMAIN}", "password": "x"},
                                 headers={"Accept-Language": "de"}) as r:
                return r.status, await r.json(), r.headers.get("Retry-After")

        async def vital() -> list[int]:
            """What must always be answered: a health check and a gateway's report."""
            async with http.get(f"{live.portal}/healthz") as health:
                pass
            async with http.post(f"{live.portal}/api/v1/gateway/alive", json={"sessions": []},
                                 headers=bearer(report_token)) as alive:
                pass
            return [health.status, alive.status]
        answers, *vitals = await asyncio.gather(
            asyncio.gather(*(login(i) for i in range(BURST))), *(vital() for _ in range(20)))
    statuses = collections.Counter(status for status, _, _ in answers)
    assert set(statuses) <= {401, 503} and statuses[503] > 0, statuses   # never a 500
    for status, body, retry_after in answers:
        if status == 503:
            assert body["error"] == "busy" and retry_after.isdigit(), body
            assert body["message"].startswith("Gerade melden sich viele")
    assert all(v == [200, 204] for v in vitals), vitals
    evaluated = [e for e in await live.audit(limit=BURST * 2)
                 if e["actor"].startswith("nobody") and e["action"] == "login.password"]
    assert len(evaluated) == statuses[401]          # the shed ones were never worked on
