"""Maintenance windows and holiday calendars. Pure: the caller gives the clock and the time zone.

Theory of operation
-------------------
A *calendar* is a German state's public holidays (from the maintained ``holidays`` library, by
the state's code: ``NI`` Lower Saxony, ``BY`` Bavaria, …) plus a municipality's own days. A
*window* is a recurring time for maintenance — "every 2nd Tuesday 22:00–23:00" is weekday
Tuesday, weeks ``[2]``, start 22:00, 60 minutes — for some of a tenant's hosts; it may skip the
days of a calendar (no patching on a public holiday) or happen only on them.

A window drives the drains that admins start by hand: ``notice_minutes`` before it begins, its
hosts are drained with the window's start as the deadline (users get the notices a drain gives,
in the session and over SSH, and whoever is left is logged off when the window begins); when it
ends, the hosts it drained are enabled again. The duty that does so (``broker.
maintenance_windows``) records each step of an occurrence once, so that several brokers, restarts
and admins who intervene do not repeat it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
LAST = -1            # in ``weeks``: the last such weekday of the month
HORIZON_DAYS = 400   # how far ahead an occurrence is looked for


@dataclass(frozen=True)
class Calendar:
    id: str
    state: str                        # a German state's code for its public holidays; "" none
    own_days: tuple[tuple[date, str], ...] = ()   # the municipality's own days, named

    def days(self, year: int) -> dict[date, str]:
        """Every day of ``year`` this calendar names, with its name."""
        found = dict(holidays.Germany(subdiv=self.state or None, years=year, language="de"))
        found.update((day, name) for day, name in self.own_days if day.year == year)
        return found

    def names(self, day: date) -> str | None:
        return self.days(day.year).get(day)


@dataclass(frozen=True)
class Window:
    id: str
    hosts: tuple[str, ...]
    weekday: int                      # 0 Monday … 6 Sunday
    weeks: tuple[int, ...]            # which of the month's such weekdays (1–5, LAST); () all
    start: time
    minutes: int                      # how long the window lasts
    notice_minutes: int               # the drain begins this long before
    message: str = ""                 # for the users' notices
    calendar: str | None = None       # a calendar's id …
    on_holidays: str = "skip"         # … whose days are skipped ("skip") or the only ones ("only")

    def takes_place(self, day: date, calendar: Calendar | None) -> bool:
        if day.weekday() != self.weekday:
            return False
        if self.weeks:
            nth = (day.day - 1) // 7 + 1
            last = (day + timedelta(days=7)).month != day.month
            if nth not in self.weeks and not (LAST in self.weeks and last):
                return False
        if calendar is None:
            return True
        holiday = calendar.names(day) is not None
        return holiday if self.on_holidays == "only" else not holiday


def occurrences(window: Window, calendar: Calendar | None, zone: ZoneInfo, after: float,
                count: int) -> list[tuple[float, float]]:
    """The next ``count`` occurrences (start, end) that end after ``after`` (Unix seconds)."""
    day = datetime.fromtimestamp(after, zone).date() - timedelta(days=1)
    found: list[tuple[float, float]] = []
    for _ in range(HORIZON_DAYS):
        if window.takes_place(day, calendar):
            start = datetime.combine(day, window.start, zone)
            end = start + timedelta(minutes=window.minutes)
            if end.timestamp() > after:
                found.append((start.timestamp(), end.timestamp()))
                if len(found) == count:
                    break
        day += timedelta(days=1)
    return found


def current(window: Window, calendar: Calendar | None, zone: ZoneInfo,
            now: float) -> tuple[float, float] | None:
    """The occurrence whose drain has begun and that has not ended at ``now``, if any."""
    for start, end in occurrences(window, calendar, zone, now, 1):
        if start - window.notice_minutes * 60 <= now < end:
            return start, end
    return None


def parse_weekday(text: str) -> int:
    """A weekday's English name (any case) → 0–6.

    Raises:
        ValueError: no such weekday.
    """
    return WEEKDAYS.index(text.strip().lower())
