"""The jobs domain behind the API: accept (idempotently), read, list, cancel and retry.

No HTTP and no Slurm here: accepting a job only writes its row (state ``accepted``); the
submitter and the reconciler talk to Slurm. Visibility rules, applied to every read and cancel:

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
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import msgspec
from sqlalchemy import ColumnElement, and_, exists, false, or_, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload, selectinload

from gateway.authorization import require_role
from gateway.domain_errors import Conflict, InvalidField, JobStateConflict, NotFound, PermissionDenied
from gateway.job_admission import TenantPolicy, admit_job, job_working_dir
from gateway.job_attempts import archived_attempt, next_attempt_values
from gateway.job_schemas import JobSpec
from gateway.job_states import (
    ACCEPTED,
    ALL_STATES,
    CANCELLED,
    COMPLETED,
    DESIRED_CANCEL,
    DESIRED_RUN,
    TERMINAL_STATES,
)
from gateway.principal import Principal
from gateway.storage_models import Job, JobLabel, Tenant, TenantMember
from slurm.batch_job import BatchJob

Clock = Callable[[], datetime]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_IDEMPOTENCY_KEY_CHARS = 200
# Ended jobs a user may retry by hand: every ending but success.
RETRYABLE_STATES = TERMINAL_STATES - {COMPLETED}


def utc_now() -> datetime:
    """The current time, timezone-aware UTC (what every stored timestamp uses)."""
    return datetime.now(UTC)


def ensure_utc(moment: datetime) -> datetime:
    """``moment`` as aware UTC: SQLite hands stored UTC timestamps back without a zone."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def as_utc(moment: datetime | None) -> datetime | None:
    """ensure_utc for optional timestamps."""
    return None if moment is None else ensure_utc(moment)


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
    clock: Clock = utc_now,
) -> Acceptance:
    """Admit ``spec`` for the caller and store it as an ``accepted`` job.

    ``job_root`` is the shared directory under which the job's working directory will be.

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
    admitted, _ = admit_job(
        spec,
        _tenant_policy(tenant),
        gateway_job_id=job_id,
        unix_user=member.unix_user,
        account=tenant.slurm_account,
        working_dir=job_working_dir(job_root, tenant.id, job_id),
    )
    now = clock()
    job = Job(
        id=job_id,
        tenant_id=tenant.id,
        owner=principal.user,
        unix_user=member.unix_user,
        name=admitted.name,
        spec=msgspec.to_builtins(admitted),
        idempotency_key=idempotency_key,
        spec_digest=digest,
        desired_state=DESIRED_RUN,
        state=ACCEPTED,
        attempt=1,
        submit_attempts=0,
        created_at=now,
        updated_at=now,
        labels=[JobLabel(key=key, value=value) for key, value in sorted(admitted.labels.items())],
        past_attempts=[],
    )
    session.add(job)
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
        .where(Job.id == job_id, _visible_to(principal))
        .options(selectinload(Job.labels), selectinload(Job.past_attempts))
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
    conditions: list[ColumnElement[bool]] = [_visible_to(principal)]
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
            .options(selectinload(Job.labels), selectinload(Job.past_attempts))
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
    Ended jobs stay as they are.
    """
    job = get_job(session, principal, job_id)
    if job.state in TERMINAL_STATES:
        return job
    now = clock()
    # Conditional on state and attempts, so a submitter claiming the job at the same moment
    # either finds it cancelled or sees the desired state and acts on it.
    cancelled_before_submission = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == ACCEPTED, Job.submit_attempts == 0)
        .values(
            desired_state=DESIRED_CANCEL,
            state=CANCELLED,
            state_reason="cancelled before it was submitted to Slurm",
            ended_at=now,
            updated_at=now,
        )
    ).rowcount
    if not cancelled_before_submission:
        session.execute(
            update(Job).where(Job.id == job_id).values(desired_state=DESIRED_CANCEL, updated_at=now)
        )
    session.commit()
    session.refresh(job)
    return job


def request_retry(session: Session, principal: Principal, job_id: str, *, clock: Clock = utc_now) -> Job:
    """Start a new attempt of an ended, unsuccessful job; returns the job as it is now.

    Allowed from RETRYABLE_STATES (JobStateConflict otherwise, e.g. running or completed),
    whatever the retry policy's ``max_attempts``: a retry asked for by hand is not counted
    against it. The ended attempt is archived and the job goes back to ``accepted`` (desired
    state ``run`` again), for the submitter to submit as attempt n + 1.
    """
    job = get_job(session, principal, job_id)
    if job.state not in RETRYABLE_STATES:
        raise JobStateConflict(
            job.state,
            f"job {job_id!r} is {job.state}; only a job that ended "
            f"{', '.join(sorted(RETRYABLE_STATES))} can be retried",
        )
    ended = archived_attempt(job)
    now = clock()
    reason = f"retry of attempt {job.attempt} requested by {principal.user}"
    # Conditional on the state and attempt we read: two retries at once start one attempt.
    started = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == job.state, Job.attempt == job.attempt)
        .values(
            desired_state=DESIRED_RUN, **next_attempt_values(attempt=job.attempt + 1, reason=reason, now=now)
        )
    ).rowcount
    if not started:
        session.rollback()
        session.refresh(job)
        raise JobStateConflict(job.state, f"job {job_id!r} changed meanwhile (now {job.state}); try again")
    session.add(ended)
    session.commit()
    session.expire(job)
    return get_job(session, principal, job_id)


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


def _visible_to(principal: Principal) -> ColumnElement[bool]:
    # Keep in step with job_visible_to (the same rules, for rows already in memory).
    if principal.has_role("admin"):
        return true()
    if principal.tenant_id is None:
        return false()
    if principal.has_role("tenant-admin"):
        return Job.tenant_id == principal.tenant_id
    return and_(Job.tenant_id == principal.tenant_id, Job.owner == principal.user)


def parse_label_filters(values: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``key=value`` strings from ``?label=`` into pairs; InvalidField for one without '='."""
    pairs = []
    for value in values:
        key, separator, label_value = value.partition("=")
        if not separator or not key:
            raise InvalidField("label", f"{value!r} is not key=value")
        pairs.append((key, label_value))
    return tuple(pairs)
