"""The gateway's redemptions go to the broker in batches: the first at once (no wait when it is
quiet), those arriving while a request is on its way together in the next — tested over real
HTTP against a stand-in broker that counts requests, with real concurrency."""

import asyncio

import pytest
from aiohttp import web

from gateway.broker_client import BrokerClient
from gateway.errors import BrokerUnavailable
from testbed import free_port
from wire import reports
from wire.errors import TicketReplayed
from wire.ticket import Claims, Target


def claims(i: int) -> Claims:
    return Claims(ticket_id=f"t{i}", issued_at=0, expires_at=30, audience="gw", tenant="t",
                  user=f"u{i}", session=f"s{i}", target=Target("127.0.0.1", 5900, "vnc"))


@pytest.fixture
async def broker():
    """A broker's redeem endpoint: records each request; tickets named in ``used`` are
    answered "replayed"; ``delay`` seconds per request (a busy database)."""
    seen = {"requests": [], "used": set(), "delay": 0.0, "status": 200}

    async def redeem(request: web.Request) -> web.Response:
        batch = reports.Redemptions.from_json(await request.json())
        seen["requests"].append(len(batch.redemptions))
        await asyncio.sleep(seen["delay"])
        if seen["status"] != 200:
            return web.Response(status=seen["status"])
        results = []
        for r in batch.redemptions:
            results.append("replayed" if r.ticket_id in seen["used"] else reports.REDEEMED)
            seen["used"].add(r.ticket_id)
        return web.json_response({"results": results})

    app = web.Application()
    app.router.add_post(reports.REDEEM, redeem)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client = BrokerClient(f"http://127.0.0.1:{port}", b"token")
    await client.start()
    yield client, seen
    await client.close()
    await runner.cleanup()


async def test_a_lone_redemption_goes_at_once_in_a_request_of_its_own(broker):
    client, seen = broker
    await client.redeem(claims(1))
    assert seen["requests"] == [1]


async def test_a_burst_goes_in_a_few_requests_and_each_gets_its_own_answer(broker):
    client, seen = broker
    seen["delay"] = 0.05
    seen["used"].add("t7")                                 # this one was used before
    outcomes = await asyncio.gather(*(client.redeem(claims(i)) for i in range(500)),
                                    return_exceptions=True)
    assert [i for i, o in enumerate(outcomes) if isinstance(o, TicketReplayed)] == [7]
    assert all(o is None for i, o in enumerate(outcomes) if i != 7)
    assert sum(seen["requests"]) == 500
    assert len(seen["requests"]) <= 5                      # 1, then the rest in batches of 200
    assert max(seen["requests"]) <= reports.MAX_REDEMPTIONS
    # the same ticket twice in one burst: once redeemed, once replayed
    twice = await asyncio.gather(client.redeem(claims(900)), client.redeem(claims(900)),
                                 return_exceptions=True)
    assert sorted(type(o).__name__ for o in twice) == ["NoneType", "TicketReplayed"]


async def test_a_broker_that_fails_fails_every_redemption_of_its_batch(broker):
    client, seen = broker
    seen["status"] = 503
    outcomes = await asyncio.gather(*(client.redeem(claims(i)) for i in range(20)),
                                    return_exceptions=True)
    assert all(isinstance(o, BrokerUnavailable) for o in outcomes)
    seen["status"] = 200
    await client.redeem(claims(99))                        # and the next works again
