"""Usage for billing: desktop-hours and sessions per pool and month, from the session history.
Pure: the store gives the sessions, the caller the clock and the time zone.

A session counts from its start to its end (a live one: to now) — the time it held a seat,
disconnected time included, since the seat was kept for the user. Months are calendar months in
the broker's ``time_zone`` (the municipalities'). A session that spans the end of a month counts
in both months, as one session each, with the hours that fell in each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

MONTH = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")


@dataclass(frozen=True)
class Past:
    """One session as the history has it; ``ended`` None while it lives."""
    pool: str
    started: float
    ended: float | None


@dataclass(frozen=True)
class PoolUsage:
    pool: str
    sessions: int
    seconds: float

    @property
    def desktop_hours(self) -> float:
        return round(self.seconds / 3600, 2)


def month_bounds(month: str, zone: ZoneInfo) -> tuple[float, float]:
    """The first and the first-after instants of ``YYYY-MM`` in ``zone``, as Unix seconds.

    Raises:
        ValueError: not a month of that form.
    """
    found = MONTH.fullmatch(month)
    if not found:
        raise ValueError("month must be YYYY-MM")
    year, number = int(found[1]), int(found[2])
    start = datetime(year, number, 1, tzinfo=zone)
    after = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=zone)
    return start.timestamp(), after.timestamp()


def month_of(instant: float, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(instant, zone).strftime("%Y-%m")


def tally(history: list[Past], start: float, end: float, now: float) -> list[PoolUsage]:
    """Per pool: the sessions that overlap ``[start, end)``, and the seconds inside it."""
    sessions: dict[str, int] = {}
    seconds: dict[str, float] = {}
    for past in history:
        until = min(past.ended if past.ended is not None else now, end)
        since = max(past.started, start)
        if until <= since:
            continue
        sessions[past.pool] = sessions.get(past.pool, 0) + 1
        seconds[past.pool] = seconds.get(past.pool, 0.0) + (until - since)
    return [PoolUsage(pool, sessions[pool], seconds[pool]) for pool in sorted(sessions)]
