"""Maintenance windows and holiday calendars: when windows fall (pure, with fixed dates), how
they are configured (and refused when wrong), and — with a fixed clock on a real broker and
database — that a window drains its hosts with its start as the deadline, enables them when it
ends, does each step once however many brokers look, and leaves alone what an admin changed."""

import asyncio
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from broker.config import load_config
from broker.host_states import Action
from broker.maintenance import LAST, Calendar, Window, current, occurrences
from wire.errors import ConfigError
from testbed.demo import TENANT, DesktopEntry, write_config

BERLIN = ZoneInfo("Europe/Berlin")
NIEDERSACHSEN = Calendar("ni", "NI", ((date(2026, 12, 8), "Kramermarkt"),))


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN).timestamp()


def starts(window, calendar, after: str, count: int = 3) -> list[str]:
    return [datetime.fromtimestamp(s, BERLIN).strftime("%Y-%m-%d %H:%M")
            for s, _ in occurrences(window, calendar, BERLIN, at(after), count)]


def window(**changes) -> Window:
    fields = dict(id="patchday", hosts=("desk1",), weekday=1, weeks=(2,), start=time(22),
                  minutes=60, notice_minutes=30)
    return Window(**{**fields, **changes})


def test_every_second_tuesday_and_the_last_friday_of_a_month():
    assert starts(window(), None, "2026-11-01 00:00") == [
        "2026-11-10 22:00", "2026-12-08 22:00", "2027-01-12 22:00"]
    assert starts(window(weekday=4, weeks=(LAST,)), None, "2026-11-01 00:00") == [
        "2026-11-27 22:00", "2026-12-25 22:00", "2027-01-29 22:00"]
    assert starts(window(weekday=2, weeks=()), None, "2026-11-30 12:00", 2) == [
        "2026-12-02 22:00", "2026-12-09 22:00"]


def test_holidays_of_the_state_and_the_municipality_are_skipped_or_the_only_days():
    fridays = window(weekday=4, weeks=(), calendar="ni")
    # Christmas (Friday 25th) and New Year (Friday 1st) are public holidays in Lower Saxony
    assert starts(fridays, NIEDERSACHSEN, "2026-12-19 00:00") == [
        "2027-01-08 22:00", "2027-01-15 22:00", "2027-01-22 22:00"]
    # the municipality's own day (a Tuesday, the 2nd of the month) takes the patch day away
    assert starts(window(calendar="ni"), NIEDERSACHSEN, "2026-12-01 00:00", 1) == [
        "2027-01-12 22:00"]
    only = window(weekday=4, weeks=(), calendar="ni", on_holidays="only")
    assert starts(only, NIEDERSACHSEN, "2026-12-01 00:00", 2) == [
        "2026-12-25 22:00", "2027-01-01 22:00"]
    assert NIEDERSACHSEN.names(date(2026, 10, 31)) == "Reformationstag"


def test_a_window_is_current_from_its_notice_until_its_end():
    w = window()
    assert current(w, None, BERLIN, at("2026-11-10 21:29")) is None
    assert current(w, None, BERLIN, at("2026-11-10 21:30")) == (at("2026-11-10 22:00"),
                                                                at("2026-11-10 23:00"))
    assert current(w, None, BERLIN, at("2026-11-10 22:59")) is not None
    assert current(w, None, BERLIN, at("2026-11-10 23:00")) is None


WINDOWS = """
[[tenants.calendars]]
id = "ni"
state = "NI"
own_days = ["2026-12-08 Kramermarkt"]

[[tenants.maintenance_windows]]
id = "patchday"
hosts = ["desk1"]
weekday = "tuesday"
weeks = [2]
start = "22:00"
minutes = 60
notice_minutes = 30
calendar = "ni"
message = "Sicherheitsupdates"
"""


@pytest.mark.parametrize("wrong, complaint", [
    ('hosts = ["desk1"]', 'hosts = ["desk9"]'),
    ('weekday = "tuesday"', 'weekday = "dienstag"'),
    ('weeks = [2]', 'weeks = [6]'),
    ('start = "22:00"', 'start = "10 pm"'),
    ('calendar = "ni"', 'calendar = "by"'),
    ('state = "NI"', 'state = "XX"'),
    ('own_days = ["2026-12-08 Kramermarkt"]', 'own_days = ["8.12.2026"]'),
])
def test_a_wrong_window_or_calendar_is_refused_with_its_key(slapd, tmp_path, desktops, wrong,
                                                             complaint):
    path = write_config(tmp_path, slapd=slapd, group="cn=x", host="127.0.0.1", portal_port=1,
                        gateway_port=2, desktops=[DesktopEntry("desk1", 5900, 2, "pw")],
                        tenant_extra=WINDOWS.replace(wrong, complaint))
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert complaint.split(" = ")[0] in str(refused.value)


@pytest.mark.integration
async def test_a_window_drains_then_enables_its_hosts_once_with_a_fixed_clock(
        make_installation):
    inst = await make_installation(tenant_extra=WINDOWS)
    admin, windows = inst.broker.admin, inst.broker.windows
    tenant = inst.broker.config.tenant(TENANT)
    now = [at("2026-11-10 21:00")]
    inst.broker.clock = lambda: now[0]

    async def state(host: str = "desk1") -> dict:
        return next(h for h in await admin.host_overview(tenant) if h["id"] == host)

    async def audit(action: str) -> list[dict]:
        return [e for e in await inst.broker.audit.entries(TENANT, 500)
                if e["action"] == action and e["source"] == "window:patchday"]

    await windows.tick()                       # before the notice time: nothing
    assert (await state())["state"] == "active"

    now[0] = at("2026-11-10 21:31")                      # notice time: two brokers look at once
    await asyncio.gather(windows.tick(), windows.tick())
    host = await state()
    assert host["state"] == "draining" and host["deadline"] == at("2026-11-10 22:00")
    assert host["message"] == "Sicherheitsupdates" and host["logoff_at_deadline"]
    assert len(await audit("host.drain")) == 1
    assert (await state("desk2"))["state"] == "active"   # not in the window

    now[0] = at("2026-11-10 23:00")                      # the end: enabled, once
    await asyncio.gather(windows.tick(), windows.tick())
    assert (await state())["state"] == "active"
    assert len(await audit("host.enable")) == 1

    # the next patch day falls on the municipality's own day (8 December): no window
    now[0] = at("2026-12-08 21:45")
    await windows.tick()
    assert (await state())["state"] == "active"

    # in January, an admin takes the host into maintenance during the window: it stays there
    now[0] = at("2027-01-12 21:45")
    await windows.tick()
    await admin.act(tenant, "desk1", Action.MAINTENANCE, actor="aida", source="test")
    now[0] = at("2027-01-12 23:05")
    await windows.tick()
    assert (await state())["state"] == "maintenance"

    plan = await windows.plan(tenant)
    assert plan["windows"][0]["start"] == at("2027-02-09 22:00")
