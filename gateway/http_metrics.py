"""Count HTTP requests and time them, per route template and status, into ``app.state.metrics``."""

from __future__ import annotations

import time

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from gateway.metrics import Counter, Histogram, MetricsRegistry

REQUESTS_TOTAL = "slurm_gateway_http_requests_total"
REQUEST_DURATION = "slurm_gateway_http_request_duration_seconds"


def http_metrics(registry: MetricsRegistry) -> tuple[Counter, Histogram]:
    """The request counter and duration histogram in ``registry`` (created on first call)."""
    return (
        registry.counter(
            REQUESTS_TOTAL,
            "HTTP requests answered, by method, route template and status.",
            ("method", "route", "status"),
        ),
        registry.histogram(
            REQUEST_DURATION,
            "Time to answer an HTTP request, by method and route template.",
            ("method", "route"),
        ),
    )


class HttpMetricsMiddleware(ASGIMiddleware):
    """Route middleware: requests that match no route (404, 405) are not counted here."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        """Time the request and record the status of the response it sent."""
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await next_app(scope, receive, recording_send)
        finally:
            requests, durations = http_metrics(scope["litestar_app"].state.metrics)
            method = scope["method"]
            # The template ("/v1/jobs/{job_id}"), not the path: one series per route, not per job.
            route = scope.get("path_template") or "unmatched"
            requests.inc(method=method, route=route, status=str(status))
            durations.observe(time.perf_counter() - started, method=method, route=route)
