"""Liveness and readiness endpoints for orchestrators and load balancers."""

from __future__ import annotations

from litestar import get
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec

from gateway.api_schemas import HealthStatus, ProblemDetails, ReadinessReport
from gateway.problems import PROBLEM_MEDIA_TYPE
from gateway.readiness import ServiceNotReady, run_readiness_checks


@get("/healthz", tags=["health"], summary="Liveness: the process is up")
async def healthz() -> HealthStatus:
    """Always 200 while the process can serve requests."""
    return HealthStatus()


@get(
    "/readyz",
    tags=["health"],
    summary="Readiness: database and Slurm controller reachable",
    responses={
        503: ResponseSpec(
            data_container=ProblemDetails,
            media_type=PROBLEM_MEDIA_TYPE,
            description="A dependency check failed; failed_checks says which and why",
        )
    },
)
async def readyz(state: State) -> ReadinessReport:
    """200 when every readiness check passes, else 503 problem+json."""
    outcomes = await run_readiness_checks(state.readiness_checks)
    failed = [outcome for outcome in outcomes if not outcome.passed]
    if failed:
        raise ServiceNotReady(failed)
    return ReadinessReport(checks=[outcome.name for outcome in outcomes])
