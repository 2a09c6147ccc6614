"""HTTP route handlers, grouped by concern; each stays thin and delegates."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

from gateway.routes.health import healthz, readyz
from gateway.routes.service_info import service_info


def route_handlers() -> list[ControllerRouterHandler]:
    """Every route the app serves (one line per module; keep it sorted by concern)."""
    return [
        healthz,
        readyz,
        service_info,
    ]
