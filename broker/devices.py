"""Thin-client devices: enrolment with a one-time code, a device credential, the effective profile.

An admin creates an enrolment code for a site and device class; a new device spends it once and
receives its credential (shown once, stored hashed). At every boot the device presents the
credential and gets its effective client profile. A revoked device gets a clear refusal. Device
and user are separate identities: a device credential never opens a desktop — the user still
signs in with password and one-time code.
"""

from __future__ import annotations

import secrets
from typing import Callable

from client_profiles.connection_files import EXTENSIONS, MEDIA_TYPES, RENDERERS
from client_profiles.profiles import Profile, load_layers, resolve
from wire.errors import ConfigError

from .audit import AuditLog
from .config import BrokerConfig, TenantConfig
from .entitlement import entitled_pool
from .errors import (BadRequest, DeviceRevoked, LoginRequired, NotEntitled, NotFound,
                     TooManyAttempts, ViewerMismatch)
from .store import Device, Login, Store, Throttled
from .throttle import Key

DEVICE_PREFIX = "pfd_"                 # device credentials are told apart from login tokens
CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
DEFAULT_CODE_HOURS = 24


def new_enrolment_code() -> str:
    chars = "".join(secrets.choice(CODE_ALPHABET) for _ in range(12))
    return "-".join(chars[i:i + 4] for i in range(0, 12, 4))


class Devices:
    def __init__(self, config: BrokerConfig, store: Store, audit: AuditLog,
                 clock: Callable[[], float]) -> None:
        self.config = config
        self.store = store
        self.audit = audit
        self.clock = clock

    async def create_code(self, tenant: TenantConfig, site: str, device_class: str, *,
                          hours: float, actor: str, source: str) -> tuple[str, float]:
        code = new_enrolment_code()
        expires = self.clock() + hours * 3600
        await self.store.devices.create_enrolment_code(code, tenant.id, site, device_class,
                                               expires=expires)
        await self.audit.record(tenant.id, actor, source, "device.code", "ok",
                                f"site={site} class={device_class} hours={hours:g}")
        return code, expires

    async def of_tenant(self, tenant: TenantConfig) -> list[Device]:
        return await self.store.devices.of_tenant(tenant.id)

    async def revoke(self, tenant: TenantConfig, device_id: str, *, actor: str,
                     source: str) -> None:
        """Refuse the device from its next request on.

        Raises:
            NotFound: no such device in this tenant.
        """
        if not await self.store.devices.update(tenant.id, device_id, revoked=self.clock()):
            raise NotFound(device_id)
        await self.audit.record(tenant.id, actor, source, "device.revoke", "ok",
                                f"device={device_id}")

    async def move(self, tenant: TenantConfig, device_id: str, *, site: str | None,
                   device_class: str | None, actor: str, source: str) -> None:
        """Another site or class: another profile from the device's next boot.

        Raises:
            NotFound: no such device in this tenant.
        """
        if not await self.store.devices.update(tenant.id, device_id, site=site,
                                              device_class=device_class):
            raise NotFound(device_id)
        await self.audit.record(tenant.id, actor, source, "device.move", "ok",
                                f"device={device_id}")

    def _guard(self, source: str) -> Key:
        """Guesses at enrolment codes and device credentials count against the address."""
        return Key(f"device-secret:{source}", self.config.source_throttle)

    async def enrol(self, code: str, name: str, *, source: str) -> tuple[Device, str]:
        """Spend a code; the new device and its credential (show it once).

        Raises:
            NotFound: the code is unknown, used or expired (one answer for all).
            TooManyAttempts: too many wrong codes or credentials from this address.
        """
        credential = DEVICE_PREFIX + secrets.token_urlsafe(32)
        try:
            device = await self.store.devices.enrol(code.strip().lower(), name, credential,
                                                   now=self.clock(),
                                                   guard=self._guard(source))
        except Throttled:
            await self.audit.record("-", "device", source, "device.enrol", "locked_out")
            raise TooManyAttempts("device secrets") from None
        if device is None:
            await self.audit.record("-", "device", source, "device.enrol", "unknown_code")
            raise NotFound("enrolment code")
        await self.audit.record(device.tenant, f"device:{device.id}", source, "device.enrol",
                                "ok", f"name={name} site={device.site} class={device.device_class}")
        return device, credential

    async def device(self, credential: str | None, *, source: str) -> Device:
        """The device behind a credential.

        Raises:
            LoginRequired: no or an unknown credential; DeviceRevoked: revoked.
            TooManyAttempts: too many wrong codes or credentials from this address.
        """
        if not credential or not credential.startswith(DEVICE_PREFIX):
            raise LoginRequired("device credential needed")
        try:
            device = await self.store.devices.by_credential(credential, now=self.clock(),
                                                           guard=self._guard(source))
        except Throttled:
            await self.audit.record("-", "device", source, "device.credential", "locked_out")
            raise TooManyAttempts("device secrets") from None
        if device is None:
            await self.audit.record("-", "device", source, "device.credential", "unknown")
            raise LoginRequired("unknown device credential")
        if device.revoked is not None:
            raise DeviceRevoked(device.id)
        return device

    def profile(self, device: Device) -> Profile:
        """The device's effective profile (base → class → site → device).

        Raises:
            NotFound: the broker has no profiles_dir; BadRequest: the profile is broken or
                belongs to another tenant (its file and key are logged, not sent).
        """
        directory = self.config.profiles_dir
        if directory is None:
            raise NotFound("no client profiles configured")
        try:
            profile = resolve(load_layers(directory, device=device.id,
                                          device_class=device.device_class, site=device.site))
        except ConfigError as exc:
            raise BadRequest(f"profile: {exc}") from None
        if profile.tenant != device.tenant:
            raise BadRequest("profile names another tenant")
        return profile

    async def connection_file(self, login: Login, pool_id: str, *, viewer: str | None,
                              port: int, device_credential: str | None,
                              source: str) -> tuple[str, str, str]:
        """A native viewer's connection file for a pool: (file name, media type, content).

        It names only the user's local tunnel (``pforte connect`` on 127.0.0.1:``port``), which
        presents a fresh single-use ticket to the gateway for each connection; it is rendered
        from the device's effective profile, or from the defaults when no device asks.

        Raises:
            NotEntitled: unknown pool, not a member, or a device of another tenant.
            ViewerMismatch: the pool's desktops do not speak the viewer's protocol.
            BadRequest: no native viewer given or named by the profile.
        """
        tenant = self.config.tenant(login.tenant)
        pool = entitled_pool(tenant, login.groups, pool_id)
        if device_credential is not None:
            device = await self.device(device_credential, source=source)
            if device.tenant != login.tenant:
                pool = None
            profile = self.profile(device)
        else:
            profile = resolve([("<defaults>", {"tenant": login.tenant})])
        if pool is None:
            await self.audit.record(login.tenant, login.user, source, "connection_file",
                                    "not_entitled", pool_id)
            raise NotEntitled(pool_id)
        viewer = viewer or profile.viewer
        if viewer not in RENDERERS:
            raise BadRequest(f"no native viewer: {viewer}")
        tenant = self.config.tenant(login.tenant)
        if any(tenant.host(h).protocol != viewer for h in pool.hosts):
            raise ViewerMismatch(pool.id)
        await self.audit.record(login.tenant, login.user, source, "connection_file", "ok",
                                f"pool={pool.id} viewer={viewer}")
        return (f"{pool.id}{EXTENSIONS[viewer]}", MEDIA_TYPES[viewer],
                RENDERERS[viewer](profile, "127.0.0.1", port))
