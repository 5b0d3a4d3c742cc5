"""Who may use which pool: a member of the pool's directory group (nested membership counts,
the directory resolved it). A pure function of the tenant's config and the user's groups."""

from __future__ import annotations

from .config import PoolConfig, TenantConfig


def entitled_pools(tenant: TenantConfig, groups: frozenset[str]) -> list[PoolConfig]:
    """The tenant's pools whose group is among ``groups`` (DNs in lower case), in config order."""
    return [p for p in tenant.pools if p.group_dn.lower() in groups]


def entitled_pool(tenant: TenantConfig, groups: frozenset[str], pool_id: str) -> PoolConfig | None:
    """The pool if the user may use it; None for an unknown pool and a forbidden one alike."""
    return next((p for p in entitled_pools(tenant, groups) if p.id == pool_id), None)
