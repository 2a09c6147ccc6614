"""Role checks on a Principal, for domain services (no HTTP here)."""

from __future__ import annotations

from gateway.domain_errors import NotFound, PermissionDenied
from gateway.principal import Principal, Role


def require_role(principal: Principal, *roles: Role) -> None:
    """Raise PermissionDenied unless ``principal`` holds at least one of ``roles``."""
    if not any(principal.has_role(role) for role in roles):
        wanted = " or ".join(roles)
        raise PermissionDenied(f"this action needs the {wanted} role")


def require_tenant_role(principal: Principal, tenant_id: str, *roles: Role) -> None:
    """Allow admins, or callers of ``tenant_id`` holding one of ``roles``.

    A caller from another tenant gets NotFound, not PermissionDenied, so that it learns
    nothing about which tenants exist.
    """
    if principal.has_role("admin"):
        return
    if principal.tenant_id != tenant_id:
        raise NotFound(f"tenant {tenant_id!r} not found")
    require_role(principal, *roles)


def files_tenant(principal: Principal) -> str:
    """The tenant whose files the caller works on: the token's, for a user or tenant-admin.

    Files belong to a tenant: a token without one (admin, finance) or without those roles is
    refused with PermissionDenied.
    """
    if principal.tenant_id is None:
        raise PermissionDenied("files belong to a tenant; use a token issued for one")
    require_role(principal, "user", "tenant-admin")
    return principal.tenant_id
