"""The jobs domain behind the API: accept (idempotently), read, list, cancel and retry.

No HTTP and no Slurm here: accepting a job only writes its row (state ``accepted``, or
``staging_in`` when it has inputs to stage first); the stager, the submitter and the reconciler
do the rest. Visibility rules, applied to every read and cancel:

- ``admin``: every job;
- ``tenant-admin``: every job of the token's tenant;
- anyone else (``user``): only their own jobs in the token's tenant.

A job outside the caller's view is "not found" (never "forbidden"), so ids leak nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec
from sqlalchemy import ColumnElement, and_, exists, false, or_, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload, selectinload

from gateway.authorization import require_role
from gateway.budget_admission import check_budget
from gateway.domain_errors import Conflict, InvalidField, JobStateConflict, NotFound, PermissionDenied
from gateway.job_admission import TenantPolicy, admit_job, job_working_dir
from gateway.job_attempts import archived_attempt, next_attempt_values
from gateway.job_schemas import JobSpec, RunSpec
from gateway.job_states import (
    ACCEPTED,
    ALL_STATES,
    CANCELLED,
    COMPLETED,
    DESIRED_CANCEL,
    DESIRED_RUN,
    PLAIN_JOB,
    STAGING_IN,
    STAGING_OUT,
    STEP,
    TERMINAL_STATES,
    WORKFLOW,
)
from gateway.principal import Principal
from gateway.staging_admission import check_staging
from gateway.storage_models import Job, JobLabel, JobStaging, JobStepDependency, Tenant, TenantMember
from gateway.timestamps import Clock, ensure_utc, utc_now
from gateway.workflow_admission import admit_workflow, dependents_closure, step_run_spec
from gateway.workflow_refresh import refresh_workflows
from slurm.batch_job import BatchJob
from staging.output_checkpoints import OutputFile, verify_published_outputs

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_IDEMPOTENCY_KEY_CHARS = 200
# Ended jobs a user may retry by hand: every ending but success.
RETRYABLE_STATES = TERMINAL_STATES - {COMPLETED}
# What a job view needs besides the row: one query per relationship, not one per job.
_VIEW_LOADS = (
    selectinload(Job.labels),
    selectinload(Job.past_attempts),
    selectinload(Job.staging),
    selectinload(Job.steps).selectinload(Job.past_attempts),
    selectinload(Job.steps).selectinload(Job.staging),
)
# Seconds without a heartbeat before a running attempt is hung, unless config or spec say otherwise.
DEFAULT_HEARTBEAT_STALE_S = 10


class Acceptance(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of accept_job: the job, and whether this call created it."""

    job: Job
    created: bool


class JobQuery(msgspec.Struct, frozen=True, kw_only=True):
    """Filters and the page asked for by GET /v1/jobs."""

    states: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    name: str | None = None
    limit: int = DEFAULT_PAGE_SIZE
    cursor: str | None = None


class JobPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of jobs, newest first, and the cursor of the next page (None: last page)."""

    jobs: list[Job]
    next_cursor: str | None


def accept_job(
    session: Session,
    principal: Principal,
    spec: JobSpec,
    *,
    job_root: str,
    idempotency_key: str | None = None,
    heartbeat_stale_s: int = DEFAULT_HEARTBEAT_STALE_S,
    s3_sources_allowed: bool = False,
    clock: Clock = utc_now,
) -> Acceptance:
    """Admit ``spec`` for the caller and store it as an ``accepted`` job (``staging_in`` when
    it has inputs).

    ``job_root`` is the shared directory under which the job's working directory will be;
    ``heartbeat_stale_s`` is the hang limit of attempts whose spec names none;
    ``s3_sources_allowed``: inputs may name s3:// URLs (the gateway's storage is S3).

    The same ``idempotency_key`` with the same canonical spec returns the job created first
    (``created`` False); with a different spec it raises Conflict. Raises PermissionDenied
    when the caller is not a member of the token's tenant, JobSpecError when the spec breaks
    the tenant's policy.
    """
    member = _submitting_member(session, principal)
    if idempotency_key is not None:
        _check_idempotency_key(idempotency_key)
    digest = spec_digest(spec)
    if idempotency_key is not None:
        earlier = _job_with_key(session, member, idempotency_key)
        if earlier is not None:
            return _replay(earlier, digest)
    tenant = member.tenant
    job_id = new_job_id()
    admission = {
        "gateway_job_id": job_id,
        "unix_user": member.unix_user,
        "account": tenant.slurm_account,
        "working_dir": job_working_dir(job_root, tenant.id, job_id),
    }
    if spec.steps is not None:
        admitted = admit_workflow(spec, _tenant_policy(tenant), **admission)
        runs: list[tuple[str, RunSpec]] = [
            (f"steps[{i}].", step) for i, step in enumerate(admitted.steps or [])
        ]
    else:
        admitted, _ = admit_job(spec, _tenant_policy(tenant), **admission)
        runs = [("", admitted)]
    check_staging(session, tenant, runs, s3_sources_allowed=s3_sources_allowed)
    now = clock()
    check_budget(session, tenant, [run for _, run in runs], now=int(now.timestamp()))
    job = Job(
        id=job_id,
        tenant_id=tenant.id,
        owner=principal.user,
        unix_user=member.unix_user,
        name=admitted.name,
        spec=msgspec.to_builtins(admitted),
        idempotency_key=idempotency_key,
        spec_digest=digest,
        kind=WORKFLOW if admitted.steps is not None else PLAIN_JOB,
        heartbeat_stale_s=None if admitted.steps is not None else stale_limit(admitted, heartbeat_stale_s),
        desired_state=DESIRED_RUN,
        state=STAGING_IN if admitted.inputs else ACCEPTED,
        attempt=1,
        submit_attempts=0,
        created_at=now,
        updated_at=now,
        staging=_new_staging(admitted, now),
        labels=[JobLabel(key=key, value=value) for key, value in sorted(admitted.labels.items())],
        past_attempts=[],
    )
    session.add(job)
    if admitted.steps is not None:
        _add_steps(session, job, admitted, now, heartbeat_stale_s)
    try:
        session.commit()
    except IntegrityError:
        # A concurrent request with the same key won the insert: answer with its job.
        session.rollback()
        if idempotency_key is None:
            raise
        earlier = _job_with_key(session, member, idempotency_key)
        if earlier is None:
            raise
        return _replay(earlier, digest)
    return Acceptance(job=job, created=True)


def _new_staging(spec: RunSpec, now: datetime) -> JobStaging | None:
    """The staging row of a job or step that has inputs or outputs (None: nothing to stage).

    Stage-out ``waiting``: the reconciler makes it ``pending`` when an attempt completes.
    """
    if not spec.inputs and not spec.outputs:
        return None
    return JobStaging(
        stage_in="pending" if spec.inputs else None,
        stage_out="waiting" if spec.outputs else None,
        updated_at=now,
    )


def stale_limit(spec: RunSpec, default_s: int) -> int | None:
    """Seconds without a heartbeat that make a running attempt of ``spec`` hung (None: unwatched)."""
    if spec.heartbeat is None:
        return default_s
    if spec.heartbeat.source == "off":
        return None
    return spec.heartbeat.stale_after_s if spec.heartbeat.stale_after_s is not None else default_s


def _add_steps(session: Session, workflow: Job, spec: JobSpec, now: datetime, heartbeat_stale_s: int) -> None:
    """One ``step`` row per step of ``workflow`` (each a Slurm job of its own) and their
    dependency rows, in the caller's transaction."""
    step_ids = {}
    for index, step in enumerate(spec.steps or []):
        step_ids[step.name] = new_job_id()
        session.add(
            Job(
                id=step_ids[step.name],
                tenant_id=workflow.tenant_id,
                owner=workflow.owner,
                unix_user=workflow.unix_user,
                name=step.name,
                spec=msgspec.to_builtins(step_run_spec(spec, step)),
                spec_digest=workflow.spec_digest,
                kind=STEP,
                parent_id=workflow.id,
                step_name=step.name,
                step_index=index,
                heartbeat_stale_s=stale_limit(step, heartbeat_stale_s),
                desired_state=DESIRED_RUN,
                state=STAGING_IN if step.inputs else ACCEPTED,
                attempt=1,
                submit_attempts=0,
                created_at=now,
                updated_at=now,
                staging=_new_staging(step, now),
            )
        )
    # The step rows must exist before rows that point at them (PostgreSQL checks at once).
    session.flush()
    for step in spec.steps or []:
        for need in step.after:
            session.add(JobStepDependency(job_id=step_ids[step.name], depends_on_id=step_ids[need]))


def estimate_job(
    session: Session,
    principal: Principal,
    *,
    job_root: str,
    partition: str | None,
    nodes: int,
    gpus_per_node: int,
    time_limit: str | None,
) -> BatchJob:
    """A BatchJob of the asked shape, as the caller would submit it (for a start estimate).

    Same membership and policy checks as accept_job; nothing is stored.
    """
    member = _submitting_member(session, principal)
    tenant = member.tenant
    shape = JobSpec(
        name="start-estimate",
        command=["true"],
        partition=partition,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        time_limit=time_limit,
    )
    _, batch_job = admit_job(
        shape,
        _tenant_policy(tenant),
        gateway_job_id="start-estimate",
        unix_user=member.unix_user,
        account=tenant.slurm_account,
        working_dir=job_working_dir(job_root, tenant.id, "start-estimate"),
    )
    return batch_job


def get_job(session: Session, principal: Principal, job_id: str) -> Job:
    """The job ``job_id`` if the caller may see it; NotFound otherwise."""
    job = session.scalars(
        select(Job)
        # Steps are shown inside their job, never on their own.
        .where(Job.id == job_id, Job.parent_id.is_(None), _visible_to(principal))
        .options(*_VIEW_LOADS)
    ).one_or_none()
    if job is None:
        raise NotFound(f"job {job_id!r} not found")
    return job


def list_jobs(session: Session, principal: Principal, query: JobQuery) -> JobPage:
    """The caller's visible jobs matching ``query``, newest first, one page at a time."""
    if not 1 <= query.limit <= MAX_PAGE_SIZE:
        raise InvalidField("limit", f"limit must be between 1 and {MAX_PAGE_SIZE}")
    for state in query.states:
        if state not in ALL_STATES:
            raise InvalidField("state", f"unknown state {state!r}; one of: {', '.join(sorted(ALL_STATES))}")
    conditions: list[ColumnElement[bool]] = [Job.parent_id.is_(None), _visible_to(principal)]
    if query.states:
        conditions.append(Job.state.in_(query.states))
    if query.name is not None:
        conditions.append(Job.name == query.name)
    for key, value in query.labels:
        conditions.append(
            exists().where(JobLabel.job_id == Job.id, JobLabel.key == key, JobLabel.value == value)
        )
    if query.cursor is not None:
        created_at, last_id = decode_cursor(query.cursor)
        conditions.append(
            or_(Job.created_at < created_at, and_(Job.created_at == created_at, Job.id < last_id))
        )
    rows = list(
        session.scalars(
            select(Job)
            .where(*conditions)
            .order_by(Job.created_at.desc(), Job.id.desc())
            .limit(query.limit + 1)
            .options(*_VIEW_LOADS)
        )
    )
    page = rows[: query.limit]
    next_cursor = encode_cursor(page[-1]) if len(rows) > query.limit else None
    return JobPage(jobs=page, next_cursor=next_cursor)


def request_cancel(session: Session, principal: Principal, job_id: str, *, clock: Clock = utc_now) -> Job:
    """Ask for ``job_id`` to be cancelled (idempotent); returns the job as it is now.

    A job still ``accepted`` and never tried is cancelled on the spot and never reaches Slurm;
    any other live job gets desired state ``cancel``: the submitter first checks whether an
    earlier, failed-looking attempt reached Slurm after all, and the reconciler runs scancel.
    A multi-step job cancels each of its steps that has not ended. Ended jobs stay as they are.
    """
    job = get_job(session, principal, job_id)
    if job.state in TERMINAL_STATES:
        return job
    now = clock()
    if job.kind == WORKFLOW:
        session.execute(
            update(Job).where(Job.id == job_id).values(desired_state=DESIRED_CANCEL, updated_at=now)
        )
        for step in job.steps:
            if step.state not in TERMINAL_STATES:
                _cancel_row(session, step.id, now)
        session.flush()
        refresh_workflows(session, now, only=[job_id])
    else:
        _cancel_row(session, job_id, now)
    session.commit()
    session.expire_all()
    return get_job(session, principal, job_id)


def _cancel_row(session: Session, job_id: str, now: datetime) -> None:
    # Conditional on state and attempts, so a submitter claiming the job at the same moment
    # either finds it cancelled or sees the desired state and acts on it; the stager's own
    # updates are conditional on the staging state, so a cancelled transfer is never recorded.
    outside_slurm = (
        ((Job.state == ACCEPTED) & (Job.submit_attempts == 0), "cancelled before it was submitted to Slurm"),
        (Job.state == STAGING_IN, "cancelled while its inputs were being staged"),
        (Job.state == STAGING_OUT, "cancelled while its outputs were being uploaded; none were kept"),
    )
    for condition, reason in outside_slurm:
        cancelled = session.execute(
            update(Job)
            .where(Job.id == job_id, condition)
            .values(
                desired_state=DESIRED_CANCEL,
                state=CANCELLED,
                state_reason=reason,
                ended_at=now,
                updated_at=now,
            )
        ).rowcount
        if cancelled:
            return
    session.execute(update(Job).where(Job.id == job_id).values(desired_state=DESIRED_CANCEL, updated_at=now))


def request_retry(
    session: Session, principal: Principal, job_id: str, *, job_root: str, clock: Clock = utc_now
) -> Job:
    """Start a new attempt of an ended, unsuccessful job; returns the job as it is now.

    Allowed from RETRYABLE_STATES (JobStateConflict otherwise, e.g. running or completed),
    whatever the retry policy's ``max_attempts``: a retry asked for by hand is not counted
    against it. The ended attempt is archived and the job goes back to ``accepted`` (desired
    state ``run`` again), for the submitter to submit as attempt n + 1.

    For a multi-step job, only the steps that ended unsuccessfully, completed steps whose
    recorded outputs no longer verify (under ``job_root``), and every step depending on those
    start a new attempt; completed steps with verified outputs are skipped.
    """
    job = get_job(session, principal, job_id)
    if job.state not in RETRYABLE_STATES:
        raise JobStateConflict(
            job.state,
            f"job {job_id!r} is {job.state}; only a job that ended "
            f"{', '.join(sorted(RETRYABLE_STATES))} can be retried",
        )
    now = clock()
    if job.kind == WORKFLOW:
        _retry_steps(session, principal, job, job_root=job_root, now=now)
        session.commit()
        session.expire_all()
        return get_job(session, principal, job_id)
    reason = f"retry of attempt {job.attempt} requested by {principal.user}"
    if not _start_next_attempt(session, job, reason, now):
        session.rollback()
        session.refresh(job)
        raise JobStateConflict(job.state, f"job {job_id!r} changed meanwhile (now {job.state}); try again")
    session.commit()
    session.expire(job)
    return get_job(session, principal, job_id)


def _start_next_attempt(session: Session, job: Job, reason: str, now: datetime) -> bool:
    """Archive ``job``'s ended attempt and make the next one current; False if it changed meanwhile."""
    ended = archived_attempt(job)
    # Conditional on the state and attempt we read: two retries at once start one attempt.
    started = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.state == job.state, Job.attempt == job.attempt)
        .values(
            desired_state=DESIRED_RUN, **next_attempt_values(attempt=job.attempt + 1, reason=reason, now=now)
        )
    ).rowcount
    if started:
        session.add(ended)
        if job.staging is not None:
            _reset_staging(session, job.id, job.staging, now)
    return bool(started)


def _reset_staging(session: Session, job_id: str, staging: JobStaging, now: datetime) -> None:
    """A new attempt stages in again only if the last stage-in never finished, and uploads the
    outputs of whichever attempt completes next."""
    if staging.stage_in not in (None, "done"):
        staging.stage_in = "pending"
        session.execute(update(Job).where(Job.id == job_id).values(state=STAGING_IN))
    if staging.stage_out is not None:
        staging.stage_out = "waiting"
    staging.error = None
    staging.lease_owner = None
    staging.lease_expires_at = None
    staging.updated_at = now


def _retry_steps(
    session: Session, principal: Principal, workflow: Job, *, job_root: str, now: datetime
) -> None:
    spec = msgspec.convert(workflow.spec, JobSpec)
    after = {step.name: list(step.after) for step in spec.steps or []}
    working_dir = job_working_dir(job_root, workflow.tenant_id, workflow.id)
    steps = {step.step_name or "": step for step in workflow.steps}
    why: dict[str, str] = {}
    for name, step in steps.items():
        if step.state in RETRYABLE_STATES:
            why[name] = f"it ended {step.state}"
        elif step.state == COMPLETED:
            problem = _checkpoint_problem(working_dir, step)
            if problem is not None:
                why[name] = f"its checkpoint does not verify: {problem}"
    rerun = dependents_closure(after, why)
    skipped = sorted(set(steps) - rerun)
    for name in sorted(rerun):
        reason = f"retry requested by {principal.user}: " + why.get(name, "a step it runs after is re-run")
        if not _start_next_attempt(session, steps[name], reason, now):
            session.rollback()
            raise JobStateConflict(workflow.state, f"job {workflow.id!r} changed meanwhile; try again")
    summary = f"retry requested by {principal.user}: re-running {', '.join(sorted(rerun))}"
    if skipped:
        summary += f"; skipping {', '.join(skipped)} (outputs verified)"
    session.execute(
        update(Job)
        .where(Job.id == workflow.id, Job.state == workflow.state)
        .values(
            desired_state=DESIRED_RUN,
            state=ACCEPTED,
            state_reason=summary,
            exit_code=None,
            ended_at=None,
            updated_at=now,
        )
    )


def _checkpoint_problem(working_dir: str, step: Job) -> str | None:
    """None when the completed step's recorded outputs still verify; otherwise why not."""
    if step.outputs is None:
        return "its outputs were never recorded"
    files = msgspec.convert(step.outputs, list[OutputFile])
    try:
        return verify_published_outputs(working_dir, step.step_name or "", step.attempt, files)
    except OSError as exc:
        return f"its outputs could not be read ({exc.strerror})"


def spec_digest(spec: JobSpec) -> str:
    """sha256 of the canonical JSON of ``spec`` (sorted keys, defaults filled in)."""
    return hashlib.sha256(msgspec.json.encode(spec, order="sorted")).hexdigest()


def new_job_id() -> str:
    """A fresh, unguessable gateway job id."""
    return f"job-{uuid.uuid4().hex}"


def encode_cursor(job: Job) -> str:
    """The opaque cursor that continues a listing after ``job``."""
    raw = msgspec.json.encode([ensure_utc(job.created_at).isoformat(), job.id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(created_at, id) from a cursor made by encode_cursor; InvalidField if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at_text, job_id = msgspec.json.decode(raw, type=tuple[str, str])
        created_at = datetime.fromisoformat(created_at_text)
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise InvalidField("cursor", "not a cursor from a previous page; start again without it") from exc
    return created_at.astimezone(UTC), job_id


def _submitting_member(session: Session, principal: Principal) -> TenantMember:
    require_role(principal, "user", "tenant-admin")
    if principal.tenant_id is None:
        raise PermissionDenied("submitting a job needs a token issued for a tenant")
    # The tenant comes in the same query: every caller needs its policy and account.
    member = session.get(
        TenantMember, (principal.tenant_id, principal.user), options=[joinedload(TenantMember.tenant)]
    )
    if member is None:
        raise PermissionDenied(
            f"user {principal.user!r} is not a member of tenant {principal.tenant_id!r}; ask a tenant admin"
        )
    return member


def _tenant_policy(tenant: Tenant) -> TenantPolicy:
    return TenantPolicy(
        allowed_partitions=tuple(tenant.allowed_partitions),
        allowed_qos=tuple(tenant.allowed_qos),
        default_qos=tenant.default_qos,
    )


def _check_idempotency_key(key: str) -> None:
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS or not key.isascii() or not key.isprintable():
        raise InvalidField(
            "Idempotency-Key", f"use 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters"
        )


def _job_with_key(session: Session, member: TenantMember, key: str) -> Job | None:
    return session.scalars(
        select(Job)
        .where(Job.tenant_id == member.tenant_id, Job.owner == member.user, Job.idempotency_key == key)
        .options(selectinload(Job.labels))
    ).one_or_none()


def _replay(earlier: Job, digest: str) -> Acceptance:
    if earlier.spec_digest != digest:
        raise Conflict(
            "this Idempotency-Key was already used with a different job spec; use a new key for a new job"
        )
    return Acceptance(job=earlier, created=False)


def job_visible_to(principal: Principal, *, tenant_id: str, owner: str) -> bool:
    """Whether a job of ``tenant_id`` owned by ``owner`` is in the caller's view (as in SQL below)."""
    if principal.has_role("admin"):
        return True
    if principal.tenant_id is None or principal.tenant_id != tenant_id:
        return False
    return principal.has_role("tenant-admin") or principal.user == owner


def visible_condition(
    principal: Principal, tenant_id: ColumnElement[str], owner: ColumnElement[str]
) -> ColumnElement[bool]:
    """job_visible_to as SQL over a table's tenant and owner columns (jobs, job events)."""
    # Keep in step with job_visible_to (the same rules, for rows already in memory).
    if principal.has_role("admin"):
        return true()
    if principal.tenant_id is None:
        return false()
    if principal.has_role("tenant-admin"):
        return tenant_id == principal.tenant_id
    return and_(tenant_id == principal.tenant_id, owner == principal.user)


def _visible_to(principal: Principal) -> ColumnElement[bool]:
    return visible_condition(principal, Job.tenant_id, Job.owner)


def parse_label_filters(values: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``key=value`` strings from ``?label=`` into pairs; InvalidField for one without '='."""
    pairs = []
    for value in values:
        key, separator, label_value = value.partition("=")
        if not separator or not key:
            raise InvalidField("label", f"{value!r} is not key=value")
        pairs.append((key, label_value))
    return tuple(pairs)
