"""The broker: the composition root. It builds each use case's room — :mod:`broker.logins`
(sign-in, tokens, the admin principal), :mod:`broker.second_factor`, :mod:`broker.connect`
(desktops, tickets, reconnect passes), :mod:`broker.gateway_reports`, :mod:`broker.admin`,
:mod:`broker.drains`, :mod:`broker.maintenance_windows`,
:mod:`broker.devices` — hands each what it needs, and runs the background duties. No use case
lives here, and no HTTP: ``broker.web`` calls the room it serves.
"""

from __future__ import annotations

import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from cryptography.hazmat.primitives.serialization import load_pem_private_key

from .admin import Administration
from .audit import AuditLog
from .changes import Changes
from .config import BrokerConfig
from .connect import Connections
from .devices import Devices
from .directory import Directory
from .drains import Drains
from .duties import Duties, Duty
from .gateway_control import GatewayControl
from .gateway_reports import GatewayReports
from .host_control import HostControl
from .logins import Logins
from .logons import LogonPhases
from .maintenance_windows import MaintenanceWindows
from .second_factor import SecondFactor
from .store import Store

logger = logging.getLogger("pforte.broker")

HOUSEKEEPING_INTERVAL = 5.0  # seconds between timer sweeps of the session table
DRAIN_INTERVAL = 1.0         # seconds between looks at the drains
MAINTENANCE_INTERVAL = 15.0  # seconds between looks at the maintenance windows


class Broker:
    def __init__(self, config: BrokerConfig, store: Store, *,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        signing_key = load_pem_private_key(config.ticket_private_key, password=None)
        self._executor = ThreadPoolExecutor(max_workers=config.directory_threads,
                                            thread_name_prefix="pforte-ldap")
        self.directories = {t.id: Directory(t.directory, self._executor) for t in config.tenants}
        # each room gets what it needs, none gets the Broker
        self.changes = Changes()
        self.logons = LogonPhases()
        self.audit = AuditLog(store, clock, on_record=self.changes.bump)
        self.hosts = HostControl(config.ssh_key, str(config.ssh_known_hosts)
                                 if config.ssh_known_hosts else None)
        self.gateways = GatewayControl(config.gateway_control_urls, config.report_token)
        now = self.now                  # the use cases read the time through the Broker's clock
        self.logins = Logins(config, store, self.audit, self.directories, self.logons, now,
                             on_sign_out=lambda token: self.connections.forget_passes(token))
        self.second_factor = SecondFactor(config, store, self.audit, self.logons, now)
        self.admin = Administration(config, store, self.audit, self.hosts, self.gateways,
                                    self.logins.identity, now)
        self.drains = Drains(config, store, self.audit, self.admin, self.hosts, self.gateways, now)
        self.windows = MaintenanceWindows(config, store, self.audit, self.admin, now)
        self.devices = Devices(config, store, self.audit, clock)
        self.connections = Connections(config, store, self.audit, self.admin, self.hosts,
                                       self.logons, self.changes, signing_key, now,
                                       rng or random.SystemRandom())
        self.reports = GatewayReports(config, store, self.audit, self.admin, self.logons,
                                      self.changes, signing_key.public_key(), now)
        self.duties = Duties(store, clock, [
            Duty("expiry", HOUSEKEEPING_INTERVAL, self._expire),
            Duty("probes", config.probe_interval, self.admin.probe_all),
            Duty("drains", DRAIN_INTERVAL, self.drains.tick),
            Duty("maintenance windows", MAINTENANCE_INTERVAL, self.windows.tick)])

    def now(self) -> float:
        """The time by :attr:`clock` (which a test may set to move time on)."""
        return self.clock()

    async def start(self) -> None:
        await self.store.open()
        await self.gateways.start()
        await self.duties.start()

    async def close(self) -> None:
        await self.duties.close()
        await self.hosts.close()
        await self.gateways.close()
        await self.store.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _expire(self) -> None:
        """Apply the session timers and the gateways' leases (a duty)."""
        ended = await self.store.sessions.expire(
            self.clock(), gateway_lease=self.config.gateway_lease,
            keep_history=self.config.session_history_days * 86400)
        if ended:
            logger.info("ended %d sessions whose time ran out", ended)
