"""Thin clients: enrolment codes, devices and their credentials. Every guess at a code or a
credential is throttled in the transaction that looks it up."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..engine import Tx
from ..throttle import Key, Outcome
from .base import Repository, token_hash
from .throttles import Throttled, lock_names, reserve_in, settle_in


@dataclass(frozen=True)
class Device:
    id: str
    tenant: str
    name: str
    site: str
    device_class: str
    created: float
    revoked: float | None
    last_seen: float | None


class DeviceRecords(Repository):

    async def create_enrolment_code(self, code: str, tenant: str, site: str, device_class: str,
                                    *, expires: float) -> None:
        def q(db: Tx) -> None:
            db.execute("INSERT INTO enrolment_codes VALUES (?,?,?,?,?,0)",
                       (token_hash(code), tenant, site, device_class, expires))
        await self._write(q)

    async def enrol(self, code: str, name: str, credential: str, *, now: float,
                           guard: Key | None = None) -> Device | None:
        """Spend an enrolment code on a new device; None if the code is unknown, used or old.

        The guess is counted against ``guard`` (the client's address) in the same transaction;
        None only for trusted callers (setting up a test or benchmark), which nothing throttles.

        Raises:
            Throttled: ``guard`` refuses the attempt; nothing was looked at.
        """
        guards = [guard] if guard is not None else []

        def q(db: Tx) -> Device | None:
            if not reserve_in(db, guards, now):
                raise Throttled(guard.name)
            row = db.execute("SELECT tenant, site, device_class FROM enrolment_codes WHERE "
                             "code_hash=? AND used=0 AND expires>?",
                             (token_hash(code), now)).fetchone()
            if row is None:
                settle_in(db, guards, Outcome.FAILED, now)
                return None
            settle_in(db, guards, Outcome.SUCCEEDED, now)
            db.execute("UPDATE enrolment_codes SET used=1 WHERE code_hash=?", (token_hash(code),))
            device = Device(os.urandom(8).hex(), row[0], name, row[1], row[2], now, None, None)
            db.execute("INSERT INTO devices VALUES (?,?,?,?,?,?,?,NULL,NULL)",
                       (device.id, device.tenant, name, device.site, device.device_class,
                        token_hash(credential), now))
            return device
        return await self._write(q, locks=lock_names(guards))

    async def by_credential(self, credential: str, *, now: float,
                                   guard: Key) -> Device | None:
        """The device holding a credential (revoked ones too: the caller says no clearly); None
        if unknown. The guess is counted against ``guard`` in the same transaction.

        Raises:
            Throttled: ``guard`` refuses the attempt; nothing was looked at.
        """
        def q(db: Tx) -> Device | None:
            if not reserve_in(db, [guard], now):
                raise Throttled(guard.name)
            row = db.execute("SELECT id, tenant, name, site, device_class, created, revoked, "
                             "last_seen FROM devices WHERE credential_hash=?",
                             (token_hash(credential),)).fetchone()
            if row is None:
                settle_in(db, [guard], Outcome.FAILED, now)
                return None
            settle_in(db, [guard], Outcome.SUCCEEDED, now)
            db.execute("UPDATE devices SET last_seen=? WHERE id=?", (now, row[0]))
            return Device(*row)
        return await self._write(q, locks=lock_names([guard]))

    async def of_tenant(self, tenant: str) -> list[Device]:
        def q(db: Tx) -> list[Device]:
            rows = db.execute("SELECT id, tenant, name, site, device_class, created, "
                                      "revoked, last_seen FROM devices WHERE tenant=? "
                                      "ORDER BY name", (tenant,)).fetchall()
            return [Device(*r) for r in rows]
        return await self._read(q)

    async def update(self, tenant: str, device_id: str, *, site: str | None = None,
                            device_class: str | None = None,
                            revoked: float | None = None) -> bool:
        def q(db: Tx) -> bool:
            return db.execute(
                "UPDATE devices SET site=COALESCE(?, site), device_class=COALESCE(?, "
                "device_class), revoked=COALESCE(?, revoked) WHERE id=? AND tenant=?",
                (site, device_class, revoked, device_id, tenant)).rowcount == 1
        return await self._write(q)
