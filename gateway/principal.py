"""Who is calling: the verified claims of a bearer token, as the domain sees them."""

from __future__ import annotations

from typing import Literal

import msgspec

Role = Literal["user", "tenant-admin", "admin", "finance"]


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """An authenticated caller. ``tenant_id`` is None only for cluster-wide roles (admin, finance)."""

    user: str
    tenant_id: str | None
    roles: frozenset[Role]

    def has_role(self, role: Role) -> bool:
        """Whether the token grants ``role``."""
        return role in self.roles

    def can_see_tenant(self, tenant_id: str) -> bool:
        """Admins see every tenant; everyone else only their own."""
        return self.has_role("admin") or self.tenant_id == tenant_id
