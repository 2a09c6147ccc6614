"""Keeps each step's Slurm job consistent with the steps it runs after (part of a reconciler cycle).

A step goes to Slurm with --dependency=afterok on its dependencies' current Slurm jobs
(Job.submitted_after records which). Two things can make that wrong later, and both leave the
step's Slurm job pending forever (DependencyNeverSatisfied):

- a dependency ended unsuccessfully for good (no retry left): the step can never run, so it is
  cancelled (its Slurm job too) with the reason ``not run: step <name> ended <state>``;
- a dependency was retried (automatically, after NODE_FAIL, ...): the step's Slurm job waits for
  the dead attempt, so the step starts a new attempt that the submitter sends once the
  dependency's new attempt is in Slurm. Such attempts are counted in ``resubmits`` and do not
  use up the step's retry policy. The row is changed before the old Slurm job is cancelled: that
  job can never run (its dependency failed), so a lost scancel leaves a harmless pending job,
  never a second run.

Decisions are a pure function (``dependency_action``) of the stored rows; applying them is
conditional on the state read, so a concurrent writer wins.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

import msgspec
from sqlalchemy import select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from gateway.job_attempts import next_attempt_values
from gateway.job_states import (
    CANCELLED,
    COMPLETED,
    IN_SLURM_STATES,
    PENDING,
    STEP,
    SUBMITTING,
    TERMINAL_STATES,
)
from gateway.storage_models import Job, JobAttempt, JobStepDependency
from gateway.timestamps import Clock, as_utc, utc_now
from gateway.workflow_states import not_run_reason
from slurm.driver import SlurmDriver
from slurm.errors import SlurmError

logger = logging.getLogger(__name__)


class DependencySnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """One dependency of a step, as stored now."""

    job_id: str
    step_name: str
    state: str
    slurm_job_id: str | None


class StepSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """A live step and what its current attempt was submitted after."""

    job_id: str
    state: str
    attempt: int
    slurm_job_id: str | None
    submitted_after: dict[str, str | None] | None


class Abandon(msgspec.Struct, frozen=True, kw_only=True):
    """The step can never run: cancel it."""

    reason: str


class Resubmit(msgspec.Struct, frozen=True, kw_only=True):
    """The step's Slurm job waits for a dead attempt: start a new attempt of the step."""

    reason: str


def dependency_action(
    step: StepSnapshot, dependencies: Sequence[DependencySnapshot]
) -> Abandon | Resubmit | None:
    """What to do with ``step`` given its dependencies; None: nothing (yet)."""
    for dependency in dependencies:
        if dependency.state in TERMINAL_STATES and dependency.state != COMPLETED:
            return Abandon(reason=not_run_reason(dependency.step_name, dependency.state))
    if step.state != PENDING or not step.submitted_after:
        return None
    for dependency in dependencies:
        waited_for = step.submitted_after.get(dependency.job_id)
        if waited_for is not None and dependency.slurm_job_id != waited_for:
            return Resubmit(
                reason=f"resubmitted: step {dependency.step_name} was retried, so Slurm job "
                f"{step.slurm_job_id} waited for an attempt that cannot succeed"
            )
    return None


class StepDependencySettler:
    """Applies ``dependency_action`` to every live step; one query per cycle."""

    def __init__(
        self, session_factory: sessionmaker[Session], driver: SlurmDriver, *, clock: Clock = utc_now
    ) -> None:
        """Steps are changed through ``session_factory``; Slurm jobs cancelled through ``driver``."""
        self._session_factory = session_factory
        self._driver = driver
        self._clock = clock

    def run_once(self) -> int:
        """Settle every live step with a dependency problem; returns how many changed."""
        changed = 0
        for step, dependencies in self._live_steps():
            action = dependency_action(step, dependencies)
            if isinstance(action, Abandon):
                changed += self._abandon(step, action.reason)
            elif isinstance(action, Resubmit):
                changed += self._resubmit(step, action.reason)
        return changed

    def _live_steps(self) -> list[tuple[StepSnapshot, list[DependencySnapshot]]]:
        dependency = aliased(Job)
        with self._session_factory() as session:
            rows = session.execute(
                select(
                    Job.id,
                    Job.state,
                    Job.attempt,
                    Job.slurm_job_id,
                    Job.submitted_after,
                    dependency.id.label("dependency_id"),
                    dependency.step_name.label("dependency_name"),
                    dependency.state.label("dependency_state"),
                    dependency.slurm_job_id.label("dependency_slurm_job_id"),
                )
                .join(JobStepDependency, JobStepDependency.job_id == Job.id)
                .join(dependency, dependency.id == JobStepDependency.depends_on_id)
                .where(Job.kind == STEP, Job.state.not_in(TERMINAL_STATES))
            ).all()
        steps: dict[str, StepSnapshot] = {}
        dependencies: defaultdict[str, list[DependencySnapshot]] = defaultdict(list)
        for row in rows:
            steps[row.id] = StepSnapshot(
                job_id=row.id,
                state=row.state,
                attempt=row.attempt,
                slurm_job_id=row.slurm_job_id,
                submitted_after=row.submitted_after,
            )
            dependencies[row.id].append(
                DependencySnapshot(
                    job_id=row.dependency_id,
                    step_name=row.dependency_name or "",
                    state=row.dependency_state,
                    slurm_job_id=row.dependency_slurm_job_id,
                )
            )
        return [(step, dependencies[job_id]) for job_id, step in steps.items()]

    def _abandon(self, step: StepSnapshot, reason: str) -> int:
        if step.state == SUBMITTING:
            # Its submitter holds the lease; once the outcome is recorded the next cycle decides.
            return 0
        if step.state in IN_SLURM_STATES and step.slurm_job_id is not None and not self._scancel(step):
            return 0
        now = self._clock()
        with self._session_factory() as session:
            changed = session.execute(
                update(Job)
                .where(Job.id == step.job_id, Job.state == step.state, Job.attempt == step.attempt)
                .values(state=CANCELLED, state_reason=reason, ended_at=now, updated_at=now)
            ).rowcount
            session.commit()
        if changed:
            logger.info("step %s: %s", step.job_id, reason)
        return changed

    def _resubmit(self, step: StepSnapshot, reason: str) -> int:
        now = self._clock()
        with self._session_factory() as session:
            row = session.get(Job, step.job_id)
            if row is None:
                return 0
            changed = session.execute(
                update(Job)
                .where(Job.id == step.job_id, Job.state == PENDING, Job.attempt == step.attempt)
                .values(
                    resubmits=Job.resubmits + 1,
                    **next_attempt_values(attempt=step.attempt + 1, reason=reason, now=now),
                )
            ).rowcount
            if not changed:
                session.rollback()
                return 0
            session.add(
                JobAttempt(
                    job_id=step.job_id,
                    attempt=step.attempt,
                    slurm_job_id=step.slurm_job_id,
                    state=CANCELLED,
                    state_reason=reason,
                    exit_code=None,
                    submitted_at=as_utc(row.submitted_at),
                    started_at=None,
                    ended_at=now,
                )
            )
            session.commit()
        logger.info("step %s: %s", step.job_id, reason)
        self._scancel(step)
        return 1

    def _scancel(self, step: StepSnapshot) -> bool:
        try:
            self._driver.cancel(step.slurm_job_id or "")
        except SlurmError as exc:
            logger.warning("step %s: scancel %s failed, will retry: %s", step.job_id, step.slurm_job_id, exc)
            return False
        return True
