"""HTTP route handlers, grouped by concern; each stays thin and delegates."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

from gateway.routes.budgets import get_tenant_budget, put_tenant_budget
from gateway.routes.events import stream_events
from gateway.routes.files import delete_file, get_file, head_file, list_files, put_file, storage_usage
from gateway.routes.health import healthz, readyz
from gateway.routes.jobs import cancel_job, list_visible_jobs, read_job, retry_job, submit_job

# job logs
from gateway.routes.logs import read_job_log, stream_job_log
from gateway.routes.metrics import metrics
from gateway.routes.partitions import list_partitions
from gateway.routes.rate_cards import get_rate_cards, post_rate_card
from gateway.routes.reports import get_statement, get_usage_report
from gateway.routes.service_info import service_info
from gateway.routes.tenants import TenantController

# uploads
from gateway.routes.uploads import abort_upload, complete_upload, create_upload, read_upload, upload_part


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
        # job logs (ranges, tails, SSE)
        read_job_log,
        stream_job_log,
        list_partitions,
        # Job events (Server-Sent Events)
        stream_events,
        # Files API (tenant namespaces)
        put_file,
        get_file,
        head_file,
        list_files,
        delete_file,
        storage_usage,
        # uploads (resumable multipart)
        create_upload,
        read_upload,
        complete_upload,
        abort_upload,
        upload_part,
        # accounting: budgets, rate cards, usage reports and statements
        put_tenant_budget,
        get_tenant_budget,
        post_rate_card,
        get_rate_cards,
        get_usage_report,
        get_statement,
    ]
