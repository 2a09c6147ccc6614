"""HTTP route handlers, grouped by concern; each stays thin and delegates."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

from gateway.routes.health import healthz, readyz
from gateway.routes.jobs import cancel_job, list_visible_jobs, read_job, retry_job, submit_job
from gateway.routes.metrics import metrics
from gateway.routes.partitions import list_partitions
from gateway.routes.service_info import service_info
from gateway.routes.tenants import TenantController


def route_handlers() -> list[ControllerRouterHandler]:
    """Every route the app serves (one line per module; keep it sorted by concern)."""
    return [
        healthz,
        readyz,
        service_info,
        metrics,
        TenantController,
        submit_job,
        read_job,
        list_visible_jobs,
        cancel_job,
        retry_job,
        list_partitions,
    ]
