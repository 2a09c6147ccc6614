"""The jobs-by-state gauge, read from the database at scrape time."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.metrics import MetricsRegistry
from gateway.storage_models import Job

JOBS_BY_STATE = "slurm_gateway_jobs"


def register_job_state_gauge(registry: MetricsRegistry, session_factory: sessionmaker[Session]) -> None:
    """Add ``slurm_gateway_jobs{state}``, counted with one GROUP BY query per scrape."""
    gauge = registry.gauge(JOBS_BY_STATE, "Jobs the gateway knows, by lifecycle state.", ("state",))

    def refresh() -> None:
        with session_factory() as session:
            rows = session.execute(select(Job.state, func.count()).group_by(Job.state)).all()
        gauge.replace_all(({"state": state}, float(count)) for state, count in rows)

    registry.on_scrape(refresh)
