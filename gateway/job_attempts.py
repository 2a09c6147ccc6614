"""Starting a job's next attempt: the row changes a retry makes, automatic or asked for.

The job row always describes the current attempt; starting the next one archives the current
attempt's outcome in job_attempts and puts the row back to ``accepted`` with the next attempt
number, so the submitter submits it (with that attempt's own Slurm comment) like a new job.
Callers make both writes in one transaction, conditional on the state they read.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from gateway.job_states import ACCEPTED
from gateway.storage_models import Job, JobAttempt


def archived_attempt(job: Job) -> JobAttempt:
    """The job_attempts row of ``job``'s current attempt, exactly as the job row shows it."""
    return JobAttempt(
        job_id=job.id,
        attempt=job.attempt,
        slurm_job_id=job.slurm_job_id,
        state=job.state,
        state_reason=job.state_reason,
        exit_code=job.exit_code,
        submitted_at=job.submitted_at,
        started_at=job.started_at,
        ended_at=job.ended_at,
    )


def next_attempt_values(
    *, attempt: int, reason: str, now: datetime, delay_s: float = 0.0
) -> dict[str, object]:
    """Job row values that make ``attempt`` the current one, due after ``delay_s``."""
    return {
        "attempt": attempt,
        "state": ACCEPTED,
        "state_reason": reason,
        "slurm_job_id": None,
        "exit_code": None,
        "submitted_at": None,
        "started_at": None,
        "ended_at": None,
        # What the ended attempt left behind describes it, not the next one.
        "outputs": None,
        "hung_at": None,
        "array_tasks": None,
        "progress": None,
        "progress_at": None,
        "submitted_after": None,
        # A fresh attempt has no submission tries yet: cancelling it before one stays local.
        "submit_attempts": 0,
        "lease_owner": None,
        "lease_expires_at": None,
        "next_attempt_at": now + timedelta(seconds=delay_s) if delay_s > 0 else None,
        "updated_at": now,
    }
