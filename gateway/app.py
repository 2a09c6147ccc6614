"""Assemble the Litestar application from a GatewayConfig."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from sqlalchemy.orm import sessionmaker

from gateway.auth import auth_dependencies, token_verifier_from_config
from gateway.background_workers import background_workers_lifespan
from gateway.config import GatewayConfig
from gateway.database import create_database_engine
from gateway.http_metrics import HttpMetricsMiddleware
from gateway.job_events import job_events_lifespan
from gateway.job_state_metrics import register_job_state_gauge
from gateway.job_view_cache import JobViewCache
from gateway.log_streams import log_hub_lifespan
from gateway.metrics import MetricsRegistry
from gateway.object_storage import object_store_from_config
from gateway.problems import problem_exception_handlers
from gateway.readiness import ReadinessCheck
from gateway.readiness_probes import database_check, slurm_controller_check
from gateway.routes import route_handlers
from gateway.slurm_driver import command_runner_from_config
from gateway.upload_signing import upload_signer_from_config
from gateway.version import package_version


def create_app(
    config: GatewayConfig,
    *,
    readiness_checks: Sequence[ReadinessCheck] | None = None,
) -> Litestar:
    """Build the gateway application.

    The database engine is created at start-up (``app.state.database_engine``) and disposed
    on shutdown; the object store is ``app.state.object_store``. ``readiness_checks`` replaces
    the default database + Slurm controller checks, e.g. in tests.
    """
    return Litestar(
        route_handlers=route_handlers(),
        # Workers start after (and stop before) the resources they use.
        lifespan=[
            _resources_lifespan(config, readiness_checks),
            job_events_lifespan,
            background_workers_lifespan(config),
            log_hub_lifespan,
        ],
        exception_handlers=problem_exception_handlers(),
        dependencies=auth_dependencies(),
        middleware=[HttpMetricsMiddleware()],
        openapi_config=OpenAPIConfig(title="slurm-gateway", version=package_version(), path="/schema"),
        # Logging is the process's business (the CLI sets it up), not the app factory's.
        logging_config=None,
    )


def _resources_lifespan(
    config: GatewayConfig, readiness_checks: Sequence[ReadinessCheck] | None
) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        engine = create_database_engine(config.database.url)
        app.state.database_engine = engine
        app.state.config = config
        app.state.object_store = object_store_from_config(config.storage)
        # Start-up, not first use: creates <state_dir>/upload-signing.key on first start.
        app.state.upload_signer = upload_signer_from_config(config)
        app.state.session_factory = sessionmaker(engine, expire_on_commit=False)
        # Start-up, not import time: creates the HS256 secret file on first start.
        app.state.token_verifier = token_verifier_from_config(config)
        app.state.metrics = MetricsRegistry()
        app.state.job_view_cache = JobViewCache(
            ttl_s=min(config.server.job_status_cache_s, config.workers.poll_interval_s)
        )
        register_job_state_gauge(app.state.metrics, app.state.session_factory)
        if readiness_checks is None:
            app.state.readiness_checks = (
                database_check(engine),
                slurm_controller_check(command_runner_from_config(config.slurm)),
            )
        else:
            app.state.readiness_checks = tuple(readiness_checks)
        try:
            yield
        finally:
            engine.dispose()

    return lifespan
