"""Maintenance windows at work (the rules of when are :mod:`broker.maintenance`): a duty that
drains a window's hosts when its notice time comes and enables them when it ends — each step
once across the fleet (``window_runs``) — and the plan of windows and calendar days ahead that
the console shows."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Callable

from .admin import Administration
from .audit import AuditLog
from .config import BrokerConfig, TenantConfig
from .errors import Conflict, NotFound
from .host_states import Action, HostState
from .maintenance import Window, current, occurrences
from .store import ACTIVE_ROW, Store


class MaintenanceWindows:
    """The tenants' maintenance windows: their duty, and their plan."""

    def __init__(self, config: BrokerConfig, store: Store, audit: AuditLog,
                 admin: Administration, clock: Callable[[], float]) -> None:
        self.config = config
        self.store = store
        self.audit = audit
        self.admin = admin
        self.clock = clock

    async def tick(self) -> None:
        """Begin the drains of windows whose notice time has come, and enable the hosts of
        windows that ended (one broker of the fleet runs this; each step happens once)."""
        now, zone = self.clock(), self.config.time_zone
        for tenant in self.config.tenants:
            calendars = {c.id: c for c in tenant.calendars}
            for window in tenant.maintenance_windows:
                occurrence = current(window, calendars.get(window.calendar), zone, now)
                if occurrence is None or not await self.store.hosts.begin_window(
                        tenant.id, window.id, *occurrence):
                    continue
                for host in window.hosts:
                    await self._window_step(tenant, window, host, Action.DRAIN,
                                            deadline_seconds=max(1.0, occurrence[0] - now))
        for tenant_id, window_id, starts in await self.store.hosts.ended_windows(now):
            tenant = self.config.tenant(tenant_id)
            window = next((w for w in tenant.maintenance_windows if w.id == window_id),
                          None) if tenant is not None else None
            if window is None or not await self.store.hosts.finish_window(tenant_id, window_id,
                                                                          starts):
                continue
            states = await self.store.hosts.states(tenant.id)
            for host in window.hosts:   # what an admin put in another state stays there
                if states.get(host, ACTIVE_ROW).state is HostState.DRAINING:
                    await self._window_step(tenant, window, host, Action.ENABLE)

    async def _window_step(self, tenant: TenantConfig, window: Window, host: str,
                           action: Action, deadline_seconds: float | None = None) -> None:
        try:
            await self.admin.act(tenant, host, action, actor="pforte", source=f"window:{window.id}",
                           deadline_seconds=deadline_seconds, message=window.message)
        except (Conflict, NotFound) as exc:
            await self.audit.record(tenant.id, "pforte", f"window:{window.id}",
                                    f"host.{action.value}", "skipped", f"host={host} {exc}")

    async def plan(self, tenant: TenantConfig, days: int = 60) -> dict:
        """The windows' next occurrences and the calendars' days ahead (the console's
        timeline)."""
        now, zone = self.clock(), self.config.time_zone
        calendars = {c.id: c for c in tenant.calendars}
        until = now + days * 86400
        occurrences_ahead = []
        for window in tenant.maintenance_windows:
            for start, end in occurrences(window, calendars.get(window.calendar), zone, now, 10):
                if start <= until:
                    occurrences_ahead.append({"window": window.id, "hosts": list(window.hosts),
                                              "start": start, "end": end,
                                              "message": window.message})
        today = datetime.fromtimestamp(now, zone).date()
        days_ahead = []
        for calendar in tenant.calendars:
            for year in sorted({today.year, (today + timedelta(days=days)).year}):
                for day, name in sorted(calendar.days(year).items()):
                    if today <= day <= today + timedelta(days=days):
                        days_ahead.append({"calendar": calendar.id, "day": day.isoformat(),
                                           "name": name})
        return {"windows": sorted(occurrences_ahead, key=lambda o: o["start"]),
                "days": sorted(days_ahead, key=lambda d: d["day"])}
