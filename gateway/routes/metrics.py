"""Prometheus scrape endpoint."""

from __future__ import annotations

import asyncio

from litestar import Response, get
from litestar.datastructures import State

from gateway.metrics import CONTENT_TYPE, MetricsRegistry


@get("/metrics", tags=["operations"], summary="Prometheus metrics (text exposition format)")
async def metrics(state: State) -> Response[str]:
    """Every registered metric; scrape-time gauges (jobs by state) are read from the database now."""
    registry: MetricsRegistry = state.metrics
    # Rendering runs the scrape callbacks, which query the database: keep it off the event loop.
    body = await asyncio.to_thread(registry.render)
    return Response(content=body, media_type=CONTENT_TYPE)
