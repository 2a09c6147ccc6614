"""The reconciler: brings stored jobs in line with what Slurm reports, and carries out cancels.

One cycle (``run_once``) makes ONE batched ``driver.poll`` for every job the gateway believes is
in Slurm (never one call per job or per request), maps each observation to gateway fields
(gateway.job_states) and writes only rows that changed. Jobs whose desired state is ``cancel``
get ``scancel`` until Slurm reports them ended; a cancel already sent is repeated only after
CANCEL_RESEND_S. SlurmUnavailable propagates to the loop, which backs off.

An attempt that ends in an outcome the job's retry policy retries (gateway.job_retry_policy),
with attempts left and no cancel asked for, is archived in job_attempts and the job goes back
to ``accepted`` for its next attempt, due after the backoff; the submitter takes it from there.

The same cycle also:

- records a completed attempt's outputs (path, sha256, size) from the manifest its wrapper
  wrote (staging.output_checkpoints), so a later retry can skip the step if they still verify;
- watches heartbeats: a job Slurm reports RUNNING whose heartbeat file (slurm.job_layout) is
  older than its ``heartbeat_stale_s`` is marked hung (``hung_at``) and cancelled; once Slurm
  reports it ended it is ``hung``, an outcome ("HUNG") the retry policy may retry;
- stores the latest progress a running (or just ended) attempt reported in its progress file
  (staging.progress_files: one open and one read of at most 64 KiB per job), writing only
  when it changed, so an unchanged report costs no write (and no "progress" event);
- stores a job array's per-task states;
- settles steps whose dependencies failed or were retried (gateway.step_dependencies) and
  derives each live multi-step job's state from its steps' (gateway.workflow_states).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import msgspec
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from gateway.job_admission import job_working_dir
from gateway.job_attempts import next_attempt_values
from gateway.job_retry_policy import retry_decision
from gateway.job_schemas import RetryPolicy
from gateway.job_states import (
    ACCEPTED,
    CANCELLED,
    COMPLETED,
    DESIRED_CANCEL,
    DESIRED_RUN,
    HUNG,
    IN_SLURM_STATES,
    STAGING_OUT,
    TERMINAL_STATES,
    WORKFLOW,
    ObservedUpdate,
    gateway_state,
    observed_update,
)
from gateway.metrics import Counter, MetricsRegistry
from gateway.step_dependencies import StepDependencySettler
from gateway.storage_models import Job, JobAttempt, JobStaging
from gateway.timestamps import Clock, as_utc, utc_now
from gateway.workflow_refresh import refresh_workflows
from slurm.driver import SlurmDriver
from slurm.errors import SlurmError, SlurmUnavailable
from slurm.job_layout import DEFAULT_STEP_NAME, heartbeat_file
from slurm.observations import JobObservation
from staging.heartbeat_files import last_heartbeat
from staging.output_checkpoints import OutputsUnreadable, read_attempt_outputs
from staging.progress_files import latest_progress

logger = logging.getLogger(__name__)

# scancel is asynchronous: give Slurm this long to report the job ended before asking again.
CANCEL_RESEND_S = 15.0
# Slurm states in which an attempt's program may have reported progress (ended ones too: the
# cycle that sees the end reads the last report once more).
_PROGRESS_STATES = frozenset({"RUNNING", "COMPLETING"})


class ReconcileOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What one cycle did."""

    polled: int = 0
    updated: int = 0
    cancels_sent: int = 0


class _LiveJob(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    slurm_job_id: str
    state: str
    desired_state: str
    state_reason: str | None
    exit_code: int | None
    array_tasks: list[dict[str, object]] | None
    attempt: int
    tenant_id: str
    # Whose working directory the job uses (a step shares its workflow's) and which step it is.
    workdir_job_id: str
    step_name: str
    heartbeat_stale_s: int | None
    hung: bool
    # The job uploads outputs once it completes (its staging row's stage_out is set).
    stages_out: bool
    # The progress report last stored (Job.progress).
    progress: dict[str, object] | None


class JobReconciler:
    """Polls Slurm for every live job once per cycle and applies what it sees."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        driver: SlurmDriver,
        *,
        job_root: str,
        metrics: MetricsRegistry | None = None,
        clock: Clock = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``job_root`` is where job working directories are (outputs and heartbeats are read
        there); ``metrics``, when given, receives the reconciler's counters."""
        self._session_factory = session_factory
        self._driver = driver
        self._job_root = job_root
        self._clock = clock
        self._monotonic = monotonic
        self._dependencies = StepDependencySettler(session_factory, driver, clock=clock)
        self._cancel_sent_at: dict[str, float] = {}
        self._polls: Counter | None = None
        self._transitions: Counter | None = None
        if metrics is not None:
            self._polls = metrics.counter(
                "slurm_gateway_reconciler_polls_total", "Batched Slurm polls by the reconciler.", ("outcome",)
            )
            self._transitions = metrics.counter(
                "slurm_gateway_job_transitions_total", "Job state changes observed in Slurm.", ("state",)
            )

    def run_once(self) -> ReconcileOutcome:
        """One cycle; raises SlurmUnavailable when Slurm cannot be polled."""
        self._cancel_unsubmitted()
        outcome = self._reconcile_live()
        updated = outcome.updated + self._dependencies.run_once() + self._refresh_workflows()
        return msgspec.structs.replace(outcome, updated=updated)

    def _reconcile_live(self) -> ReconcileOutcome:
        live = self._live_jobs()
        if not live:
            self._cancel_sent_at.clear()
            return ReconcileOutcome()
        try:
            observations = self._driver.poll([job.slurm_job_id for job in live])
        except SlurmUnavailable:
            self._count_poll("unavailable")
            raise
        self._count_poll("ok")
        updated = 0
        cancels = 0
        for job in live:
            observation = observations.get(job.slurm_job_id)
            if observation is not None:
                # A running attempt's state goes first, so that a reader never sees progress on a
                # job still shown as pending; an ending attempt's last report goes first, before
                # the end (which may start a retry) is stored.
                running = observation.state == "RUNNING"
                if not running:
                    self._record_progress(job, observation)
                if self._apply(job, observation):
                    updated += 1
                if running:
                    self._record_progress(job, observation)
            hung = job.hung or (observation is not None and self._went_stale(job, observation))
            if (job.desired_state == DESIRED_CANCEL or hung) and self._cancel(job, observation):
                cancels += 1
        live_ids = {job.job_id for job in live}
        for job_id in list(self._cancel_sent_at):
            if job_id not in live_ids:
                del self._cancel_sent_at[job_id]
        return ReconcileOutcome(polled=len(live), updated=updated, cancels_sent=cancels)

    def _live_jobs(self) -> list[_LiveJob]:
        with self._session_factory() as session:
            rows = session.execute(
                select(
                    Job.id,
                    Job.slurm_job_id,
                    Job.state,
                    Job.desired_state,
                    Job.state_reason,
                    Job.exit_code,
                    Job.array_tasks,
                    Job.attempt,
                    Job.tenant_id,
                    Job.parent_id,
                    Job.step_name,
                    Job.heartbeat_stale_s,
                    Job.hung_at,
                    JobStaging.stage_out,
                    Job.progress,
                )
                .outerjoin(JobStaging, JobStaging.job_id == Job.id)
                .where(Job.state.in_(IN_SLURM_STATES), Job.slurm_job_id.is_not(None))
            ).all()
        return [
            _LiveJob(
                job_id=row.id,
                slurm_job_id=row.slurm_job_id,
                state=row.state,
                desired_state=row.desired_state,
                state_reason=row.state_reason,
                exit_code=row.exit_code,
                array_tasks=row.array_tasks,
                attempt=row.attempt,
                tenant_id=row.tenant_id,
                workdir_job_id=row.parent_id or row.id,
                step_name=row.step_name or DEFAULT_STEP_NAME,
                heartbeat_stale_s=row.heartbeat_stale_s,
                hung=row.hung_at is not None,
                stages_out=row.stage_out is not None,
                progress=row.progress,
            )
            for row in rows
        ]

    def _working_dir(self, job: _LiveJob) -> str:
        return job_working_dir(self._job_root, job.tenant_id, job.workdir_job_id)

    def _apply(self, job: _LiveJob, observation: JobObservation) -> bool:
        change = observed_update(observation)
        if change is None:
            logger.warning("job %s: unknown Slurm state %r left as is", job.job_id, observation.state)
            return False
        slurm_state = observation.state
        if job.hung and change.state == CANCELLED:
            slurm_state = "HUNG"
            change = msgspec.structs.replace(
                change,
                state=HUNG,
                state_reason=f"no heartbeat for over {job.heartbeat_stale_s} s; cancelled by the gateway",
            )
        array_tasks = _array_task_values(observation)
        outputs = None
        if change.state == COMPLETED:
            outputs, problem = self._recorded_outputs(job)
            if problem is not None:
                change = msgspec.structs.replace(change, state_reason=f"outputs not recorded: {problem}")
        if (change.state, change.state_reason, change.exit_code, array_tasks) == (
            job.state,
            job.state_reason,
            job.exit_code,
            job.array_tasks,
        ):
            return False
        if change.state in TERMINAL_STATES and job.desired_state != DESIRED_CANCEL:
            retried = self._retry(job, slurm_state, change)
            if retried is not None:
                return retried
        if change.state == COMPLETED and job.stages_out:
            # Completed in Slurm; completed for the user once its outputs are uploaded (gateway.job_stager).
            change = msgspec.structs.replace(change, state=STAGING_OUT)
        values = {**_row_values(change), "array_tasks": array_tasks}
        if outputs is not None:
            values["outputs"] = outputs
        now = self._clock()
        with self._session_factory() as session:
            # Conditional on the state we read, so a concurrent writer is never overwritten.
            changed = session.execute(
                update(Job)
                .where(Job.id == job.job_id, Job.state == job.state, Job.attempt == job.attempt)
                .values(**values, updated_at=now)
            ).rowcount
            if changed and change.state == STAGING_OUT:
                session.execute(
                    update(JobStaging)
                    .where(JobStaging.job_id == job.job_id)
                    .values(stage_out="pending", error=None, updated_at=now)
                )
            session.commit()
        if changed and change.state != job.state and self._transitions is not None:
            self._transitions.inc(state=change.state)
        return bool(changed)

    def _recorded_outputs(self, job: _LiveJob) -> tuple[list[object] | None, str | None]:
        """The completed attempt's outputs as stored values, or the reason they cannot be."""
        try:
            files = read_attempt_outputs(self._working_dir(job), job.step_name, job.attempt)
        except OutputsUnreadable as exc:
            logger.warning("job %s: outputs of attempt %d not recorded: %s", job.job_id, job.attempt, exc)
            return None, exc.message
        except OSError as exc:
            # Not the user's doing (permissions, I/O): say so without paths outside the job.
            logger.warning("job %s: outputs of attempt %d unreadable: %s", job.job_id, job.attempt, exc)
            return None, f"the job directory could not be read ({exc.strerror})"
        return msgspec.to_builtins(files), None

    def _went_stale(self, job: _LiveJob, observation: JobObservation) -> bool:
        """Whether a running attempt's heartbeat just went stale; if so it is marked hung."""
        if job.heartbeat_stale_s is None or observation.state != "RUNNING":
            return False
        beat = last_heartbeat(heartbeat_file(self._working_dir(job), job.step_name, job.attempt))
        if beat is None:
            # Nothing is judged before the first beat (the program may not have started yet).
            return False
        now = self._clock()
        silent_s = now.timestamp() - beat
        if silent_s <= job.heartbeat_stale_s:
            return False
        reason = f"no heartbeat for {silent_s:.0f} s (limit {job.heartbeat_stale_s} s); cancelling as hung"
        with self._session_factory() as session:
            marked = session.execute(
                update(Job)
                .where(Job.id == job.job_id, Job.attempt == job.attempt, Job.hung_at.is_(None))
                .values(hung_at=now, state_reason=reason, updated_at=now)
            ).rowcount
            session.commit()
        if marked:
            logger.warning("job %s attempt %d: %s", job.job_id, job.attempt, reason)
        return bool(marked)

    def _record_progress(self, job: _LiveJob, observation: JobObservation) -> None:
        """Store the attempt's latest progress report if it differs from the stored one.

        No report (yet) keeps the stored one. An unreadable file (not the user's doing) is
        logged and skipped: progress never holds up reconciling.
        """
        if observation.state not in _PROGRESS_STATES and not observation.is_terminal:
            return
        try:
            progress = latest_progress(self._working_dir(job), job.step_name, job.attempt)
        except OSError as exc:
            logger.warning("job %s attempt %d: progress file unreadable: %s", job.job_id, job.attempt, exc)
            return
        if progress is None:
            return
        values = msgspec.to_builtins(progress)
        if values == job.progress:
            return
        with self._session_factory() as session:
            # Only for the attempt that wrote it (a retry in between has moved on).
            session.execute(
                update(Job)
                .where(Job.id == job.job_id, Job.attempt == job.attempt)
                .values(progress=values, progress_at=self._clock())
            )
            session.commit()

    def _refresh_workflows(self) -> int:
        """Store each live multi-step job's state as derived from its steps; returns how many changed."""
        with self._session_factory() as session:
            changed = refresh_workflows(session, self._clock())
            session.commit()
        return changed

    def _retry(self, job: _LiveJob, slurm_state: str, change: ObservedUpdate) -> bool | None:
        """Start the next attempt if the policy retries this outcome; None when it does not."""
        with self._session_factory() as session:
            row = session.execute(
                select(Job.spec, Job.attempt, Job.resubmits, Job.submitted_at, Job.started_at).where(
                    Job.id == job.job_id
                )
            ).one_or_none()
            if row is None:
                return None
            policy = msgspec.convert(row.spec.get("retry"), RetryPolicy | None)
            # Attempts started only because a dependency was retried do not use up the policy.
            decision = retry_decision(
                policy,
                slurm_state=slurm_state,
                exit_code=change.exit_code,
                attempt=row.attempt - row.resubmits,
            )
            if decision is None:
                return None
            now = self._clock()
            # Conditional on what we read: a cancel or another writer in between wins. The ended
            # attempt is written first, in the same transaction, so the job's event history
            # (database triggers, gateway.job_events) shows how it ended before the retry.
            changed = session.execute(
                update(Job)
                .where(
                    Job.id == job.job_id,
                    Job.state == job.state,
                    Job.attempt == row.attempt,
                    Job.desired_state == DESIRED_RUN,
                )
                .values(**_row_values(change), updated_at=now)
            ).rowcount
            if not changed:
                session.rollback()
                return False
            session.execute(
                update(Job)
                .where(Job.id == job.job_id)
                .values(
                    **next_attempt_values(
                        attempt=row.attempt + 1,
                        reason=decision.reason,
                        now=now,
                        delay_s=decision.delay_s,
                    )
                )
            )
            session.add(
                JobAttempt(
                    job_id=job.job_id,
                    attempt=row.attempt,
                    slurm_job_id=job.slurm_job_id,
                    state=change.state,
                    state_reason=change.state_reason,
                    exit_code=change.exit_code,
                    submitted_at=as_utc(row.submitted_at),
                    started_at=as_utc(change.started_at or row.started_at),
                    ended_at=as_utc(change.ended_at),
                )
            )
            session.commit()
        logger.info("job %s: %s", job.job_id, decision.reason)
        if self._transitions is not None:
            self._transitions.inc(state=ACCEPTED)
        return True

    def _cancel(self, job: _LiveJob, observation: JobObservation | None) -> bool:
        if observation is not None and observation.is_terminal:
            return False
        sent_at = self._cancel_sent_at.get(job.job_id)
        now = self._monotonic()
        if sent_at is not None and now - sent_at < CANCEL_RESEND_S:
            return False
        try:
            self._driver.cancel(job.slurm_job_id)
        except SlurmError as exc:
            # One job's failed scancel must not stall reconciling every other job.
            logger.warning("job %s: scancel %s failed, will retry: %s", job.job_id, job.slurm_job_id, exc)
            return False
        self._cancel_sent_at[job.job_id] = now
        return True

    def _cancel_unsubmitted(self) -> None:
        # Normally the DELETE request cancels a never-tried accepted job itself; this catches
        # any left behind (e.g. a cancel that raced a submitter which then deferred the job).
        now = self._clock()
        with self._session_factory() as session:
            session.execute(
                update(Job)
                # A multi-step job's own state is derived from its steps, never set here.
                .where(
                    Job.state == ACCEPTED,
                    Job.desired_state == DESIRED_CANCEL,
                    Job.submit_attempts == 0,
                    Job.kind != WORKFLOW,
                )
                .values(
                    state=CANCELLED,
                    state_reason="cancelled before it was submitted to Slurm",
                    ended_at=now,
                    updated_at=now,
                )
            )
            session.commit()

    def _count_poll(self, outcome: str) -> None:
        if self._polls is not None:
            self._polls.inc(outcome=outcome)


def _array_task_values(observation: JobObservation) -> list[dict[str, object]] | None:
    """A job array's tasks as stored (gateway states), or None for a job that is not an array."""
    if not observation.array_tasks:
        return None
    return [
        {
            "task_id": task.task_id,
            "state": gateway_state(task.state) or task.state.lower(),
            "exit_code": task.exit_code,
            "reason": task.reason,
        }
        for task in observation.array_tasks
    ]


def _row_values(change: ObservedUpdate) -> dict[str, object]:
    values: dict[str, object] = {
        "state": change.state,
        "state_reason": change.state_reason,
        "exit_code": change.exit_code,
    }
    # Times only ever get filled in: a later poll without them must not erase them.
    if change.started_at is not None:
        values["started_at"] = as_utc(change.started_at)
    if change.ended_at is not None:
        values["ended_at"] = as_utc(change.ended_at)
    return values
