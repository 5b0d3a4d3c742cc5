"""Whether a name exists must not show in how long a wrong password takes to refuse.

Statistical, with a tolerance: known and unknown names are tried interleaved (so that load on the
machine hits both alike) against the real broker and slapd, and the medians compared."""

from __future__ import annotations

import statistics
import time

import pytest

from .conftest import DOMAIN

pytestmark = pytest.mark.integration

ROUNDS = 120
TOLERANCE = 0.15          # the medians may differ by 15 % ...
FLOOR = 0.0004            # ... or 0.4 ms, whichever is larger


async def test_a_wrong_password_for_a_known_name_takes_as_long_as_for_an_unknown_one(own_live):
    live = own_live(broker_options={"failures_per_user": 100_000,
                                    "failures_per_source": 100_000})
    known, unknown = [], []
    async with live.client("10.70.0.1") as http:
        async def attempt(name: str) -> float:
            started = time.perf_counter()
            r = await http.post(f"{live.portal}/api/v1/login",
                                json={"username": f"{name}@{DOMAIN}", "password": "wrong"})
            elapsed = time.perf_counter() - started
            assert r.status == 401
            return elapsed
        for name in ("bernd", "nobody"):                       # warm both paths
            for _ in range(10):
                await attempt(name)
        for i in range(ROUNDS):
            known.append(await attempt(f"user{i % 6 + 1}"))
            unknown.append(await attempt(f"nobody{i}"))
    k, u = statistics.median(known), statistics.median(unknown)
    print(f"median known {k * 1000:.2f} ms, unknown {u * 1000:.2f} ms")
    assert abs(k - u) <= max(FLOOR, TOLERANCE * min(k, u)), (k, u)
