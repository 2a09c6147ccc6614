"""The submitter: moves ``accepted`` jobs into Slurm exactly once, surviving crashes.

One cycle (``run_once``):

1. Claim a batch in its own committed transaction: ``accepted`` jobs due for an attempt and
   ``submitting`` jobs whose lease expired (their worker died). On PostgreSQL the candidates are
   locked with ``SELECT ... FOR UPDATE SKIP LOCKED``; on SQLite (one writer at a time) each claim
   is a compare-and-set UPDATE on (state, submit_attempts). Claiming sets ``submitting``, the
   lease and ``submit_attempts + 1``.
2. Only then talk to Slurm. A job whose earlier submission try may have reached Slurm (a crash
   while ``submitting``, or an sbatch that failed in an unknowable way) is first looked up by
   its --comment (``driver.find_submitted``, one call for the batch); if Slurm has it, that id
   is recorded and nothing is submitted again. The comment names the job's current attempt
   (``slurm.batch_job.attempt_comment_key``: ``sgw:<id>`` for the first, ``sgw:<id>:a<n>``
   after), so exactly-once holds per attempt: recovering attempt 2 never takes attempt 1's
   Slurm job for its own. ``submit_attempts`` counts the tries of the current attempt only.
3. Submit the rest, up to ``concurrency`` sbatch calls at once (a thread pool that never touches
   the database). Every sbatch starts with a full lease: the claim's commit grants it to the
   first jobs when no lookup came between; later ones are renewed, fenced, just before they
   start, and a job whose lease was lost is not submitted.
4. Record the outcome, fenced on the lease owner: ``pending`` with the Slurm id;
   ``submit_failed`` when Slurm refused the job; back to ``accepted`` with exponential backoff
   (``next_attempt_at``) when Slurm was unreachable. One transaction records whatever finished
   and renews the leases of the jobs starting next, so a batch costs a few commits, not three
   per job.

Test hook (documented, off by default): ``pause_after_submit_s`` sleeps between sbatch and
recording the Slurm id, so a crash test can kill the process exactly there; the worker wiring
reads it from SLURM_GATEWAY_TEST_PAUSE_AFTER_SUBMIT_S.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import timedelta

import msgspec
from sqlalchemy import ColumnElement, Update, and_, exists, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from gateway.job_admission import batch_job_from_spec, job_working_dir
from gateway.job_schemas import JobSpec
from gateway.job_states import (
    ACCEPTED,
    CANCELLED,
    COMPLETED,
    COMPLETING,
    DESIRED_CANCEL,
    PENDING,
    RUNNING,
    STAGING_OUT,
    STEP,
    SUBMIT_FAILED,
    SUBMITTING,
    WORKFLOW,
)
from gateway.metrics import Counter, MetricsRegistry
from gateway.storage_models import Job, JobStepDependency, Tenant
from gateway.timestamps import Clock, utc_now
from slurm.batch_job import attempt_comment_key
from slurm.driver import SlurmDriver
from slurm.errors import JobSpecError, SlurmError, SlurmRejected
from slurm.job_layout import DEFAULT_STEP_NAME

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 16
# sbatch calls in flight at once: enough to overlap their round trips to slurmctld without
# flooding it (slurmctld serialises job creation anyway).
DEFAULT_CONCURRENCY = 4
OUTCOMES = ("submitted", "recovered", "failed", "deferred", "cancelled")
# First retry delay after Slurm was unreachable; doubles per attempt up to max_backoff_s.
BASE_BACKOFF_S = 1.0
# A step is submitted once every dependency is in Slurm (afterok on its id) or completed; a
# dependency uploading its outputs has completed in Slurm (the step reads them on disk).
DEPENDENCY_READY_STATES = (PENDING, RUNNING, COMPLETING, STAGING_OUT, COMPLETED)


class SubmitterSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How one submitter behaves."""

    worker_id: str
    lease_s: float
    max_backoff_s: float
    job_root: str
    batch_size: int = DEFAULT_BATCH_SIZE
    concurrency: int = DEFAULT_CONCURRENCY
    pause_after_submit_s: float = 0.0


class SubmissionOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What one cycle did, for logs, metrics and tests."""

    submitted: int = 0
    recovered: int = 0
    failed: int = 0
    deferred: int = 0
    cancelled: int = 0

    @property
    def handled(self) -> int:
        """Jobs this cycle moved in any way."""
        return self.submitted + self.recovered + self.failed + self.deferred + self.cancelled


class _Claim(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    tenant_id: str
    account: str
    unix_user: str
    spec: JobSpec
    desired_state: str
    # The job's attempt (what its Slurm comment names) and this submission try of it.
    job_attempt: int
    attempt: int
    # An earlier submission try may have reached Slurm: look before submitting.
    needs_lookup: bool
    # Whose working directory the job uses (a step shares its workflow's) and which step it is.
    workdir_job_id: str
    step_name: str
    # A step's dependencies as they stand now (JobStepDependency): dependency job id -> the Slurm
    # job id to wait for, None for one already completed (see Job.submitted_after).
    submitted_after: dict[str, str | None] | None = None

    @property
    def dependencies(self) -> tuple[str, ...]:
        """The Slurm job ids this attempt waits for (afterok)."""
        return tuple(sorted(slurm_id for slurm_id in (self.submitted_after or {}).values() if slurm_id))

    @property
    def comment_key(self) -> str:
        """The key of this attempt's Slurm comment (what find_submitted matches)."""
        return attempt_comment_key(self.job_id, self.job_attempt)


class _Write(msgspec.Struct, frozen=True, kw_only=True):
    """A step's outcome for one claimed job: the fenced row update that records it."""

    claim: _Claim
    outcome: str
    values: dict[str, object]
    slurm_job_id: str | None = None


class JobSubmitter:
    """Claims accepted jobs and submits each to Slurm exactly once."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        driver: SlurmDriver,
        settings: SubmitterSettings,
        *,
        metrics: MetricsRegistry | None = None,
        clock: Clock = utc_now,
        on_jobs_changed: Callable[[Sequence[str]], None] | None = None,
    ) -> None:
        """``settings.worker_id`` must be unique among every submitter on the database;
        ``metrics``, when given, receives ``slurm_gateway_submissions_total{outcome}``;
        ``on_jobs_changed``, when given, is called (from the submitter's thread) with the ids of
        jobs whose state it just committed, e.g. to drop cached views of them."""
        self._session_factory = session_factory
        self._driver = driver
        self._settings = settings
        self._clock = clock
        self._on_jobs_changed = on_jobs_changed
        self._outcomes: Counter | None = None
        if metrics is not None:
            self._outcomes = metrics.counter(
                "slurm_gateway_submissions_total",
                "Submission steps by outcome (submitted, recovered, failed, deferred, cancelled).",
                ("outcome",),
            )

    def run_once(self) -> SubmissionOutcome:
        """Claim one batch and take every claimed job one step; SlurmUnavailable never escapes."""
        claims = self._claim()
        if not claims:
            return SubmissionOutcome()
        counts = dict.fromkeys(OUTCOMES, 0)
        writes: list[_Write] = []
        found: dict[str, str] = {}
        lookups = [claim.comment_key for claim in claims if claim.needs_lookup]
        if lookups:
            try:
                found = self._driver.find_submitted(lookups)
            except SlurmError as exc:
                # Without knowing whether Slurm has them, submitting again could double them.
                for claim in claims:
                    if claim.needs_lookup:
                        writes.append(self._deferral(claim, exc))
                        counts["deferred"] += 1
                claims = [claim for claim in claims if not claim.needs_lookup]
        to_submit = []
        for claim in claims:
            slurm_job_id = found.get(claim.comment_key) if claim.needs_lookup else None
            if slurm_job_id is not None:
                logger.info(
                    "job %s attempt %d was already in Slurm as %s; recording it",
                    claim.job_id,
                    claim.job_attempt,
                    slurm_job_id,
                )
                writes.append(self._submitted(claim, slurm_job_id))
                counts["recovered"] += 1
            elif claim.desired_state == DESIRED_CANCEL:
                writes.append(self._finished(claim, CANCELLED, "cancelled before it was submitted to Slurm"))
                counts["cancelled"] += 1
            else:
                to_submit.append(claim)
        # The claim's own commit granted a full lease; after a Slurm lookup it must be renewed.
        self._submit_all(to_submit, writes, counts, leases_fresh=not lookups)
        if self._outcomes is not None:
            for outcome, count in counts.items():
                if count:
                    self._outcomes.inc(count, outcome=outcome)
        return SubmissionOutcome(**counts)

    def _submit_all(
        self, claims: Sequence[_Claim], writes: list[_Write], counts: dict[str, int], *, leases_fresh: bool
    ) -> None:
        """Run up to ``concurrency`` sbatch calls at once; every sbatch starts with a full lease.

        Each database round trip records whatever finished (and ``writes``) and renews the
        leases of the jobs about to start, in one transaction; a job whose lease was lost is
        not submitted. Jobs straight after the claim skip the renewal when ``leases_fresh``.
        """
        waiting = deque(claims)
        in_flight: dict[Future[_Write], _Claim] = {}
        workers = max(1, min(self._settings.concurrency, len(claims)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sbatch") as pool:
            while waiting or in_flight or writes:
                starting = [waiting.popleft() for _ in range(min(len(waiting), workers - len(in_flight)))]
                if leases_fresh:
                    leases_fresh = False
                else:
                    starting = self._commit(writes, renew=starting)
                    writes = []
                for claim in starting:
                    in_flight[pool.submit(self._sbatch, claim)] = claim
                if not in_flight:
                    continue
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    claim = in_flight.pop(future)
                    try:
                        write = future.result()
                    except Exception:
                        # Outcome unknown: the job keeps its lease, and the next owner looks it up.
                        logger.exception("job %s: submission failed unexpectedly", claim.job_id)
                        continue
                    writes.append(write)
                    counts[write.outcome] += 1

    def _sbatch(self, claim: _Claim) -> _Write:
        """Submit one job (in a pool thread; no database here) and say what to record."""
        try:
            batch_job = batch_job_from_spec(
                claim.spec,
                gateway_job_id=claim.job_id,
                unix_user=claim.unix_user,
                account=claim.account,
                working_dir=job_working_dir(self._settings.job_root, claim.tenant_id, claim.workdir_job_id),
                attempt=claim.job_attempt,
                step_name=claim.step_name,
                dependencies=claim.dependencies,
            )
            # The driver creates the working directory and hands it to the job's user.
            slurm_job_id = self._driver.submit(batch_job)
        except (JobSpecError, SlurmRejected) as exc:
            return self._finished(claim, SUBMIT_FAILED, _rejection_reason(exc))
        except SlurmError as exc:
            # Unreachable Slurm, or an answer we could not read: the job may be in Slurm after
            # all, so the next attempt looks it up before submitting.
            return self._deferral(claim, exc)
        if self._settings.pause_after_submit_s:
            time.sleep(self._settings.pause_after_submit_s)
        return self._submitted(claim, slurm_job_id)

    def _claim(self) -> list[_Claim]:
        now = self._clock()
        due = or_(
            and_(
                Job.state == ACCEPTED,
                or_(Job.next_attempt_at.is_(None), Job.next_attempt_at <= now),
                Job.kind != WORKFLOW,
                dependencies_ready(Job.id),
            ),
            and_(Job.state == SUBMITTING, Job.lease_expires_at < now),
        )
        lease = {
            "state": SUBMITTING,
            "lease_owner": self._settings.worker_id,
            "lease_expires_at": now + timedelta(seconds=self._settings.lease_s),
            "updated_at": now,
        }
        with self._session_factory() as session:
            if session.get_bind().dialect.name == "postgresql":
                rows = self._claim_locked(session, due, lease)
            else:
                rows = self._claim_compare_and_set(session, due, lease)
            claims = self._load_claims(session, rows)
            session.commit()
        self._announce([claim.job_id for claim in claims])
        return claims

    def _claim_locked(
        self, session: Session, due: ColumnElement[bool], lease: dict[str, object]
    ) -> list[tuple[str, str, int]]:
        # Rows another transaction is claiming are skipped, not waited for; after our commit
        # they carry a live lease, which the `due` condition excludes.
        rows = session.execute(
            select(Job.id, Job.state, Job.submit_attempts)
            .where(due)
            .order_by(Job.created_at)
            .limit(self._settings.batch_size)
            .with_for_update(skip_locked=True)
        ).all()
        if rows:
            session.execute(
                update(Job)
                .where(Job.id.in_([row.id for row in rows]))
                .values(**lease, submit_attempts=Job.submit_attempts + 1)
            )
        return [(row.id, row.state, row.submit_attempts) for row in rows]

    def _claim_compare_and_set(
        self, session: Session, due: ColumnElement[bool], lease: dict[str, object]
    ) -> list[tuple[str, str, int]]:
        candidates = session.execute(
            select(Job.id, Job.state, Job.submit_attempts)
            .where(due)
            .order_by(Job.created_at)
            .limit(self._settings.batch_size)
        ).all()
        claimed = []
        for row in candidates:
            # submit_attempts doubles as a version: every claim bumps it, so two workers that
            # read the same candidate cannot both win.
            won = session.execute(
                update(Job)
                .where(Job.id == row.id, Job.state == row.state, Job.submit_attempts == row.submit_attempts)
                .values(**lease, submit_attempts=row.submit_attempts + 1)
            ).rowcount
            if won:
                claimed.append((row.id, row.state, row.submit_attempts))
        return claimed

    def _load_claims(self, session: Session, rows: Sequence[tuple[str, str, int]]) -> list[_Claim]:
        if not rows:
            return []
        previous = {job_id: (state, attempts) for job_id, state, attempts in rows}
        jobs = session.execute(
            select(Job, Tenant.slurm_account)
            .join(Tenant, Tenant.id == Job.tenant_id)
            .where(Job.id.in_(list(previous)))
            .order_by(Job.created_at)
        ).all()
        after = _dependency_slurm_ids(session, [job.id for job, _ in jobs if job.kind == STEP])
        claims = []
        for job, account in jobs:
            state, attempts = previous[job.id]
            claims.append(
                _Claim(
                    job_id=job.id,
                    tenant_id=job.tenant_id,
                    account=account,
                    unix_user=job.unix_user,
                    spec=msgspec.convert(job.spec, JobSpec),
                    desired_state=job.desired_state,
                    job_attempt=job.attempt,
                    attempt=attempts + 1,
                    needs_lookup=state == SUBMITTING or attempts > 0,
                    workdir_job_id=job.parent_id or job.id,
                    step_name=job.step_name or DEFAULT_STEP_NAME,
                    submitted_after=after.get(job.id) if job.kind == STEP else None,
                )
            )
        return claims

    def _submitted(self, claim: _Claim, slurm_job_id: str) -> _Write:
        now = self._clock()
        values = {
            "state": PENDING,
            "slurm_job_id": slurm_job_id,
            "submitted_after": claim.submitted_after,
            "submitted_at": now,
            "updated_at": now,
            "state_reason": None,
            "lease_owner": None,
            "lease_expires_at": None,
            "next_attempt_at": None,
        }
        return _Write(claim=claim, outcome="submitted", values=values, slurm_job_id=slurm_job_id)

    def _finished(self, claim: _Claim, state: str, reason: str) -> _Write:
        now = self._clock()
        values = {
            "state": state,
            "state_reason": reason,
            "ended_at": now,
            "updated_at": now,
            "lease_owner": None,
            "lease_expires_at": None,
            "next_attempt_at": None,
        }
        return _Write(claim=claim, outcome="cancelled" if state == CANCELLED else "failed", values=values)

    def _deferral(self, claim: _Claim, exc: SlurmError) -> _Write:
        delay = min(self._settings.max_backoff_s, BASE_BACKOFF_S * 2 ** (claim.attempt - 1))
        now = self._clock()
        logger.warning(
            "job %s: submission attempt %d deferred %.1fs: %s", claim.job_id, claim.attempt, delay, exc
        )
        values = {
            "state": ACCEPTED,
            "state_reason": f"waiting to retry submission ({exc})",
            "next_attempt_at": now + timedelta(seconds=delay),
            "updated_at": now,
            "lease_owner": None,
            "lease_expires_at": None,
        }
        return _Write(claim=claim, outcome="deferred", values=values)

    def _commit(self, writes: Sequence[_Write], *, renew: Sequence[_Claim]) -> list[_Claim]:
        """In one transaction: apply ``writes`` and renew the leases of ``renew``, all fenced on
        the lease owner; returns the claims in ``renew`` whose lease is still ours."""
        if not writes and not renew:
            return []
        now = self._clock()
        changed = []
        with self._session_factory() as session:
            for write in writes:
                if session.execute(self._fenced(write.claim.job_id).values(**write.values)).rowcount:
                    changed.append(write.claim.job_id)
                else:
                    self._report_lost_lease(write)
            renewed: set[str] = set()
            if renew:
                renewed = set(
                    session.scalars(
                        self._fenced(*(claim.job_id for claim in renew))
                        .values(
                            lease_expires_at=now + timedelta(seconds=self._settings.lease_s), updated_at=now
                        )
                        .returning(Job.id)
                    )
                )
            session.commit()
        self._announce(changed)
        return [claim for claim in renew if claim.job_id in renewed]

    def _announce(self, job_ids: Sequence[str]) -> None:
        if job_ids and self._on_jobs_changed is not None:
            self._on_jobs_changed(job_ids)

    def _fenced(self, *job_ids: str) -> Update:
        # Only the lease holder may move the job: a worker that stalled past its lease must not
        # overwrite what the job's new owner did.
        return (
            update(Job)
            .where(Job.id.in_(job_ids), Job.state == SUBMITTING, Job.lease_owner == self._settings.worker_id)
            .execution_options(synchronize_session=False)
        )

    @staticmethod
    def _report_lost_lease(write: _Write) -> None:
        if write.slurm_job_id is not None:
            logger.warning(
                "job %s: lease lost before recording Slurm job %s; the next owner looks it up",
                write.claim.job_id,
                write.slurm_job_id,
            )
        else:
            logger.warning(
                "job %s: lease lost before recording the %s outcome", write.claim.job_id, write.outcome
            )


def dependencies_ready(job_id: ColumnElement[str]) -> ColumnElement[bool]:
    """SQL: every dependency of the job is in Slurm or completed (a plain job has none), so its
    Slurm job can be submitted with afterok on theirs."""
    dependency = aliased(Job)
    return ~exists().where(
        JobStepDependency.job_id == job_id,
        dependency.id == JobStepDependency.depends_on_id,
        dependency.state.not_in(DEPENDENCY_READY_STATES),
    )


def _dependency_slurm_ids(session: Session, step_ids: Sequence[str]) -> dict[str, dict[str, str | None]]:
    """For each step: dependency id -> the Slurm job to wait for (None once it completed)."""
    if not step_ids:
        return {}
    rows = session.execute(
        select(JobStepDependency.job_id, Job.id, Job.state, Job.slurm_job_id)
        .join(Job, Job.id == JobStepDependency.depends_on_id)
        .where(JobStepDependency.job_id.in_(step_ids))
    ).all()
    after: dict[str, dict[str, str | None]] = {step_id: {} for step_id in step_ids}
    for step_id, dependency_id, state, slurm_job_id in rows:
        # A completed job may already be gone from slurmctld: afterok on it would be refused.
        after[step_id][dependency_id] = None if state in (COMPLETED, STAGING_OUT) else slurm_job_id
    return after


def _rejection_reason(exc: JobSpecError | SlurmRejected) -> str:
    return f"{exc.field}: {exc.message}" if exc.field else exc.message
