"""Usage for billing, with a fixed clock: sessions kept in the store's history (the engine the
suite runs on), summed per pool and month in Berlin time — a session across midnight counts
once, one across the end of a month counts in both months with the hours of each — and
exported as CSV by the admin API of a running broker."""

import csv
import io
from datetime import datetime
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from broker.store import Store
from broker.usage import Past, month_bounds, month_of, tally
from testbed.demo import TENANT

from .test_store import stores  # noqa: F401  (the fixture: a store on the suite's engine)

BERLIN = ZoneInfo("Europe/Berlin")
HOST = [("h1", 50, True)]


def at(text: str) -> float:
    """A Berlin wall-clock time as Unix seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN).timestamp()


def test_months_are_calendar_months_in_berlin_time_daylight_saving_included():
    start, end = month_bounds("2026-10", BERLIN)
    assert (start, end) == (at("2026-10-01 00:00"), at("2026-11-01 00:00"))
    assert end - start == 31 * 86400 + 3600           # the night the clocks go back
    assert month_of(at("2026-10-31 23:59"), BERLIN) == "2026-10"
    for bad in ("2026-13", "26-10", "2026-1", "2026-10-01", ""):
        with pytest.raises(ValueError):
            month_bounds(bad, BERLIN)


def test_sums_split_at_the_end_of_a_month_and_not_at_midnight():
    history = [
        Past("buero", at("2026-10-31 22:00"), at("2026-11-01 02:00")),   # across month end
        Past("buero", at("2026-11-10 23:00"), at("2026-11-11 01:30")),   # across midnight
        Past("schule", at("2026-11-30 20:00"), None),                    # still live
        Past("buero", at("2026-09-01 08:00"), at("2026-09-01 09:00")),   # another month
    ]
    now = at("2026-11-30 21:00")
    october = tally(history, *month_bounds("2026-10", BERLIN), now)
    november = tally(history, *month_bounds("2026-11", BERLIN), now)
    assert [(u.pool, u.sessions, u.desktop_hours) for u in october] == [("buero", 1, 2.0)]
    assert [(u.pool, u.sessions, u.desktop_hours) for u in november] == [
        ("buero", 2, 4.5), ("schule", 1, 1.0)]


async def test_the_store_keeps_the_history_the_sums_come_from(stores):  # noqa: F811
    store: Store = stores[0]

    async def session(user: str, start: str, end: str | None) -> None:
        placed = await store.sessions.assign("t", user, "buero", HOST, now=at(start),
                                             pending_timeout=60, keep_seconds=900)
        if end is not None:
            assert await store.sessions.end("t", placed.session_id, now=at(end)) is not None

    await session("anna", "2026-10-31 22:00", "2026-11-01 02:00")
    await session("bernd", "2026-11-10 23:00", "2026-11-11 01:30")
    await session("clara", "2026-11-29 08:00", None)
    await session("dora", "2026-09-01 08:00", "2026-09-01 09:00")
    now = at("2026-11-30 08:00")
    start, end = month_bounds("2026-11", BERLIN)
    history = [Past(*row) for row in await store.sessions.history("t", start, end)]
    assert [(u.pool, u.sessions, u.desktop_hours) for u in tally(history, start, end, now)] == [
        ("buero", 3, 2.0 + 2.5 + 24.0)]
    assert await store.sessions.history("other tenant", start, end) == []

    # the history is kept for the retention period, then forgotten
    await store.sessions.expire(at("2026-11-30 08:00"), keep_history=80 * 86400)
    start, end = month_bounds("2026-09", BERLIN)
    assert await store.sessions.history("t", start, end) == []
    start, end = month_bounds("2026-10", BERLIN)
    assert len(await store.sessions.history("t", start, end)) == 1


@pytest.mark.integration
async def test_the_admin_api_exports_usage_as_csv(make_installation):
    inst = await make_installation()
    await inst.broker.store.admin.create_token("op", "*", "billing", now=0)
    anna = await inst.login("anna")
    await inst.connect(anna)
    month = month_of(inst.broker.clock(), inst.broker.config.time_zone)
    auth = {"Authorization": "Bearer op"}
    async with aiohttp.ClientSession(headers=auth) as http:
        r = await http.get(f"{inst.base_url}/api/v1/admin/usage", params={"format": "csv"})
        assert r.status == 200 and r.content_type == "text/csv"
        assert f'filename="pforte-usage-{month}.csv"' in r.headers["Content-Disposition"]
        rows = list(csv.reader(io.StringIO(await r.text())))
        assert rows[0] == ["tenant", "pool", "month", "sessions", "desktop_hours"]
        assert rows[1][:4] == [TENANT, "buero", month, "1"]
        assert "." in rows[1][4]
        r = await http.get(f"{inst.base_url}/api/v1/admin/usage",
                           params={"format": "csv", "locale": "de"})
        raw = await r.read()                   # what German office spreadsheets open directly
        assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw
        german = list(csv.reader(io.StringIO(raw.decode("utf-8-sig")), delimiter=";"))
        assert german[0] == rows[0] and german[1][:4] == rows[1][:4]
        assert german[1][4] == rows[1][4].replace(".", ",")
        r = await http.get(f"{inst.base_url}/api/v1/admin/usage",
                           params={"format": "csv", "locale": "fr;x"})
        assert r.status == 400
        r = await http.get(f"{inst.base_url}/api/v1/admin/tenants/{TENANT}/usage",
                           params={"month": "2026-13"})
        assert r.status == 400
