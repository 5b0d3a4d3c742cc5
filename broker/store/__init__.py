"""State that survives a restart, in SQLite or PostgreSQL (:mod:`broker.engine`): one store, its
tables grouped into repositories by what changes together.

* ``store.accounts`` — second factor (TOTP, recovery codes) and portal logins;
* ``store.throttles`` — attempts reserved before a slow check and settled after it;
* ``store.sessions`` — sessions and seats, tickets, dedicated hosts;
* ``store.hosts`` — host states and drains, health, the duties' lease;
* ``store.devices`` — thin clients and their enrolment codes;
* ``store.admin`` — admin tokens and the audit log.

A use case is as few transactions as its decisions allow, none holding a lock while it waits for
anything but the database: a repository's method is one; a use case that writes to several adds
:data:`Fragment` s (a new login, an audit entry) to the transaction of its deciding step, or
builds its own unit of work from the repositories' ``*_in(db, …)`` parts (:meth:`Store.unit`). Decisions that must not race — a seat, a ticket's
redemption, a TOTP step, a recovery or enrolment code, throttle counters, a dedicated host — are
one transaction under a lock, or one conditional statement, so that brokers sharing the database
cannot over-book a host or accept a code twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence, TypeVar

from .. import schema
from ..engine import Engine, SqliteEngine, Tx, engine_for
from .accounts import Accounts, Login, UserMfa
from .admin_records import OPERATOR, AdminRecords
from .base import Fragment, token_hash
from .devices import Device, DeviceRecords
from .hosts import ACTIVE_ROW, HostStateRow, Hosts
from .sessions import Assignment, Redemption, SessionRow, Sessions
from .throttles import Throttled, Throttles

if TYPE_CHECKING:
    from ..config import BrokerConfig

T = TypeVar("T")

__all__ = ["ACTIVE_ROW", "OPERATOR", "Assignment", "Device", "Fragment", "HostStateRow", "Login",
           "SessionRow", "Store", "Throttled", "Redemption",
           "UserMfa", "token_hash"]


class Store:
    """The repositories over one engine. Open with :meth:`open`, close with :meth:`close`."""

    def __init__(self, engine: Engine | Path, *, config_path: str = "pforte.toml") -> None:
        self.engine = engine if isinstance(engine, Engine) else SqliteEngine(engine)
        self.config_path = config_path
        self.accounts = Accounts(self.engine)
        self.throttles = Throttles(self.engine)
        self.sessions = Sessions(self.engine)
        self.hosts = Hosts(self.engine)
        self.devices = DeviceRecords(self.engine)
        self.admin = AdminRecords(self.engine)

    @classmethod
    def for_config(cls, config: "BrokerConfig") -> "Store":
        """The store a broker config names: PostgreSQL, or SQLite in the state directory."""
        return cls(engine_for(config.database, config.state_dir, config.database_password,
                              config.database_connections), config_path=config.path)

    async def open(self) -> None:
        """Open the database at the schema this broker knows (an empty one is created).

        Raises:
            SchemaMismatch: older (run ``pforte migrate``) or newer than this broker.
        """
        await schema.ensure(self.engine, self.config_path)

    async def close(self) -> None:
        """Close the database; calling it again does nothing."""
        await self.engine.close()

    async def unit(self, work: Callable[[Tx], T], *, locks: Sequence[str] = ()) -> T:
        """Run a use case's unit of work — parts of several repositories — as one transaction.
        ``work`` runs on the engine's thread and must not wait for anything but the database;
        an exception it raises rolls everything back."""
        return await self.engine.write(work, locks=locks)
