"""Hosts as the fleet sees them: their administrative state (active, draining, maintenance) and
a drain's steps, their health as the probes found it, and the leases that let exactly one broker
run the fleet's duties."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ..engine import Tx
from ..host_states import HostState
from .base import Fragment, Repository


@dataclass(frozen=True)
class HostStateRow:
    state: HostState
    message: str
    deadline: float | None
    logoff: bool                 # log off who is left at the deadline (else wait)
    next_notice: float | None = None  # a drain's next step: a notice, or the deadline's action
    since: float = 0.0           # when the host entered this state


ACTIVE_ROW = HostStateRow(HostState.ACTIVE, "", None, True)
_HOST_ROW = "state, message, deadline, logoff, next_notice, updated"


def _host_row(r: Sequence[Any]) -> HostStateRow:
    return HostStateRow(HostState(r[0]), r[1], r[2], bool(r[3]), r[4], r[5])


class Hosts(Repository):

    async def states(self, tenant: str) -> dict[str, HostStateRow]:
        """Hosts with a state other than the default (active)."""
        def q(db: Tx) -> dict[str, HostStateRow]:
            rows = db.execute(f"SELECT host, {_HOST_ROW} FROM host_states WHERE tenant=?",
                              (tenant,)).fetchall()
            return {r[0]: _host_row(r[1:]) for r in rows}
        return await self._read(q)

    async def states_and_health(
            self, tenant: str) -> tuple[dict[str, HostStateRow], dict[str, bool]]:
        """The tenant's host states and health in one read (what placement needs)."""
        def q(db: Tx) -> tuple[dict[str, HostStateRow], dict[str, bool]]:
            states = db.execute(f"SELECT host, {_HOST_ROW} FROM host_states WHERE tenant=?",
                                (tenant,)).fetchall()
            health = db.execute("SELECT host, healthy FROM host_health WHERE tenant=?",
                                (tenant,)).fetchall()
            return ({r[0]: _host_row(r[1:]) for r in states},
                    {r[0]: bool(r[1]) for r in health})
        return await self._read(q)

    async def draining(self) -> list[tuple[str, str, HostStateRow]]:
        """(tenant, host, state) of every draining host, of every tenant."""
        def q(db: Tx) -> list[tuple[str, str, HostStateRow]]:
            rows = db.execute(f"SELECT tenant, host, {_HOST_ROW} FROM host_states "
                              f"WHERE state=?", (HostState.DRAINING.value,)).fetchall()
            return [(r[0], r[1], _host_row(r[2:])) for r in rows]
        return await self._read(q)

    async def set_state(self, tenant: str, host: str, row: HostStateRow, *,
                             now: float) -> None:
        def q(db: Tx) -> None:
            db.execute("INSERT INTO host_states (tenant, host, state, message, deadline, logoff, "
                       "updated, next_notice) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (tenant, host) "
                       "DO UPDATE SET state=excluded.state, message=excluded.message, "
                       "deadline=excluded.deadline, logoff=excluded.logoff, "
                       "updated=excluded.updated, next_notice=excluded.next_notice",
                       (tenant, host, row.state.value, row.message, row.deadline,
                        int(row.logoff), now, row.next_notice))
        await self._write(q)

    async def claim_drain_step(self, tenant: str, host: str, step: float,
                               following: float | None) -> bool:
        """Take a drain's step due at ``step`` (moving the next one to ``following``); False if
        another broker took it, or the drain changed meanwhile: each step happens once."""
        def q(db: Tx) -> bool:
            return db.execute("UPDATE host_states SET next_notice=? WHERE tenant=? AND host=? "
                              "AND state=? AND next_notice=?",
                              (following, tenant, host, HostState.DRAINING.value,
                               step)).rowcount == 1
        return await self._write(q)

    # -- maintenance windows: each step of an occurrence once -------------------------------
    async def begin_window(self, tenant: str, window: str, starts: float, ends: float) -> bool:
        """Record that an occurrence of a window began (its drain); False if it was already."""
        def q(db: Tx) -> bool:
            return db.execute("INSERT INTO window_runs VALUES (?,?,?,?,'draining') "
                              "ON CONFLICT DO NOTHING",
                              (tenant, window, starts, ends)).rowcount == 1
        return await self._write(q)

    async def ended_windows(self, now: float) -> list[tuple[str, str, float]]:
        """(tenant, window, start) of occurrences that ended but were not finished yet."""
        def q(db: Tx) -> list[tuple[str, str, float]]:
            return [tuple(r) for r in db.execute(
                "SELECT tenant, window_id, starts FROM window_runs WHERE phase='draining' AND "
                "ends<=? ORDER BY starts", (now,)).fetchall()]
        return await self._read(q)

    async def finish_window(self, tenant: str, window: str, starts: float) -> bool:
        """Take the end of an occurrence (enable its hosts); False if another broker took it."""
        def q(db: Tx) -> bool:
            return db.execute("UPDATE window_runs SET phase='done' WHERE tenant=? AND "
                              "window_id=? AND starts=? AND phase='draining'",
                              (tenant, window, starts)).rowcount == 1
        return await self._write(q)

    async def set_health(self, tenant: str, host: str, healthy: bool, *, now: float,
                         if_changed: Fragment | None = None) -> bool:
        """Record a probe's finding; True when it changed (a host never probed counts as
        healthy). ``if_changed`` (the audit entry) is written with a change, in its transaction:
        of two brokers probing at once, exactly one records it."""
        def q(db: Tx) -> bool:
            row = db.execute("SELECT healthy FROM host_health WHERE tenant=? AND host=?",
                             (tenant, host)).fetchone()
            db.execute("INSERT INTO host_health VALUES (?,?,?,?) ON CONFLICT (tenant, host) DO "
                       "UPDATE SET healthy=excluded.healthy, updated=excluded.updated",
                       (tenant, host, int(healthy), now))
            changed = (bool(row[0]) if row else True) != healthy
            if changed and if_changed is not None:
                if_changed(db)
            return changed
        return await self._write(q, locks=[f"health:{tenant}/{host}"])

    async def hold_lease(self, name: str, holder: str, *, now: float, until: float) -> bool:
        """Take or renew a lease: True while ``holder`` holds it (it was free, ran out, or is
        its own), in one conditional statement."""
        def q(db: Tx) -> bool:
            return db.execute("INSERT INTO leases VALUES (?,?,?) ON CONFLICT (name) DO UPDATE "
                              "SET holder=excluded.holder, until=excluded.until "
                              "WHERE leases.holder=excluded.holder OR leases.until<?",
                              (name, holder, until, now)).rowcount == 1
        return await self._write(q)

    async def release_lease(self, name: str, holder: str) -> None:
        def q(db: Tx) -> None:
            db.execute("DELETE FROM leases WHERE name=? AND holder=?", (name, holder))
        await self._write(q)
