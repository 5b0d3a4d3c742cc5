"""Thin-client devices: enrolment with a one-time code, a device credential, the effective profile.

An admin creates an enrolment code for a site and device class; a new device spends it once and
receives its credential (shown once, stored hashed). At every boot the device presents the
credential and gets its effective client profile. A revoked device gets a clear refusal. Device
and user are separate identities: a device credential never opens a desktop — the user still
signs in with password and one-time code.
"""

from __future__ import annotations

import dataclasses
import secrets
from typing import TYPE_CHECKING

from client_profiles.profiles import load_layers, resolve
from gateway.errors import ConfigError

from .config import TenantConfig
from .errors import BadRequest, DeviceRevoked, LoginRequired, NotFound
from .store import Device

if TYPE_CHECKING:
    from .service import Broker

DEVICE_PREFIX = "pfd_"                 # device credentials are told apart from login tokens
CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
DEFAULT_CODE_HOURS = 24


def new_enrolment_code() -> str:
    chars = "".join(secrets.choice(CODE_ALPHABET) for _ in range(12))
    return "-".join(chars[i:i + 4] for i in range(0, 12, 4))


class Devices:
    def __init__(self, broker: "Broker") -> None:
        self.broker = broker
        self.store = broker.store

    async def create_code(self, tenant: TenantConfig, site: str, device_class: str, *,
                          hours: float, actor: str, source: str) -> tuple[str, float]:
        code = new_enrolment_code()
        expires = self.broker.clock() + hours * 3600
        await self.store.create_enrolment_code(code, tenant.id, site, device_class,
                                               expires=expires)
        await self.broker.audit(tenant.id, actor, source, "device.code", "ok",
                                f"site={site} class={device_class} hours={hours:g}")
        return code, expires

    async def enrol(self, code: str, name: str, *, source: str) -> tuple[Device, str]:
        """Spend a code; the new device and its credential (show it once).

        Raises:
            NotFound: the code is unknown, used or expired (one answer for all).
        """
        credential = DEVICE_PREFIX + secrets.token_urlsafe(32)
        device = await self.store.enrol_device(code.strip().lower(), name, credential,
                                               now=self.broker.clock())
        if device is None:
            raise NotFound("enrolment code")
        await self.broker.audit(device.tenant, f"device:{device.id}", source, "device.enrol",
                                "ok", f"name={name} site={device.site} class={device.device_class}")
        return device, credential

    async def device(self, credential: str | None) -> Device:
        """The device behind a credential.

        Raises:
            LoginRequired: no or an unknown credential; DeviceRevoked: revoked.
        """
        if not credential or not credential.startswith(DEVICE_PREFIX):
            raise LoginRequired("device credential needed")
        device = await self.store.device_by_credential(credential, now=self.broker.clock())
        if device is None:
            raise LoginRequired("unknown device credential")
        if device.revoked is not None:
            raise DeviceRevoked(device.id)
        return device

    def profile(self, device: Device) -> dict:
        """The device's effective profile (base → class → site → device).

        Raises:
            NotFound: the broker has no profiles_dir; BadRequest: the profile is broken or
                belongs to another tenant (its file and key are logged, not sent).
        """
        directory = self.broker.config.profiles_dir
        if directory is None:
            raise NotFound("no client profiles configured")
        try:
            profile = resolve(load_layers(directory, device=device.id,
                                          device_class=device.device_class, site=device.site))
        except ConfigError as exc:
            raise BadRequest(f"profile: {exc}") from None
        if profile.tenant != device.tenant:
            raise BadRequest("profile names another tenant")
        return dataclasses.asdict(profile)
