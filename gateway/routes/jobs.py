"""/v1/jobs: submit, read, list, cancel and retry jobs (thin: gateway.job_service does the work).

Errors: a JobSpec that does not decode or breaks policy is 422 naming the field; a bad query
parameter or Idempotency-Key is 422 naming it; another tenant's (or, for plain users, another
user's) job is 404; a caller who is not a member of the token's tenant cannot submit (403);
retrying a job that has not ended unsuccessfully is 409 with its ``state`` in the problem.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.params import HeaderParameter, PathParameter, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED
from sqlalchemy.orm import Session, sessionmaker

from gateway.auth import AuthenticatedPrincipal
from gateway.job_retry_policy import max_attempts
from gateway.job_schemas import (
    ArrayTaskView,
    AttemptView,
    JobList,
    JobSpec,
    JobView,
    OutputFileView,
    ProgressView,
    RetryPolicy,
    StagedFileView,
    StagingView,
    StepView,
    decode_job_spec,
)
from gateway.job_service import (
    DEFAULT_PAGE_SIZE,
    JobQuery,
    accept_job,
    get_job,
    list_jobs,
    parse_label_filters,
    request_cancel,
    request_retry,
)
from gateway.job_states import WORKFLOW
from gateway.job_view_cache import JobViewCache
from gateway.storage_models import Job, JobAttempt, JobStaging
from gateway.timestamps import as_utc, ensure_utc

IDEMPOTENCY_HEADER = "Idempotency-Key"
STATE_FILTER_HELP = "comma-separated states (any of them)"
LABEL_FILTER_HELP = "key=value; repeat to require several labels"
JobId = Annotated[str, PathParameter(max_length=64, description="gateway job id")]


@post("/v1/jobs", tags=["jobs"], summary="Submit a job (answers 202 once stored; Slurm is reached later)")
async def submit_job(
    request: Request[Any, Any, Any],
    state: State,
    principal: AuthenticatedPrincipal,
    idempotency_key: Annotated[str | None, HeaderParameter(name=IDEMPOTENCY_HEADER)] = None,
) -> Response[JobView]:
    """Store the job as ``accepted`` and return it: 202 when created, 200 when an
    Idempotency-Key replays an earlier identical request (same id)."""
    spec = decode_job_spec(await request.body())
    session_factory: sessionmaker[Session] = state.session_factory
    job_root: str = state.config.slurm.job_root
    heartbeat_stale_s: int = state.config.workers.heartbeat_stale_s
    s3_sources_allowed = state.object_store.backend == "s3"

    def accept() -> tuple[JobView, bool]:
        with session_factory() as session:
            acceptance = accept_job(
                session,
                principal,
                spec,
                job_root=job_root,
                idempotency_key=idempotency_key,
                heartbeat_stale_s=heartbeat_stale_s,
                s3_sources_allowed=s3_sources_allowed,
            )
            return job_view(acceptance.job), acceptance.created

    view, created = await asyncio.to_thread(accept)
    workers = getattr(state, "job_workers", None)
    if created and workers is not None:
        workers.submitter.wake()
        workers.stager.wake()
    return Response(
        content=view,
        status_code=HTTP_202_ACCEPTED if created else HTTP_200_OK,
        headers={"Location": f"/v1/jobs/{view.id}"},
    )


@get("/v1/jobs/{job_id:str}", tags=["jobs"], summary="One job, as last observed (never calls Slurm)")
async def read_job(job_id: JobId, state: State, principal: AuthenticatedPrincipal) -> JobView:
    """The job, if the caller may see it; 404 otherwise. Pollers are answered from a short-lived
    per-process cache (gateway.job_view_cache), at most ``server.job_status_cache_s`` old."""
    cache: JobViewCache = state.job_view_cache
    session_factory: sessionmaker[Session] = state.session_factory

    def read() -> JobView:
        with session_factory() as session:
            return job_view(get_job(session, principal, job_id))

    return await cache.view(job_id, principal, lambda: asyncio.to_thread(read))


@get("/v1/jobs", tags=["jobs"], summary="The caller's visible jobs, newest first, cursor-paginated")
async def list_visible_jobs(
    state: State,
    principal: AuthenticatedPrincipal,
    *,
    job_state: Annotated[str | None, QueryParameter(name="state", description=STATE_FILTER_HELP)] = None,
    label: Annotated[list[str] | None, QueryParameter(description=LABEL_FILTER_HELP)] = None,
    name: Annotated[str | None, QueryParameter(description="exact job name")] = None,
    limit: Annotated[int, QueryParameter(description="page size, 1 to 200")] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, QueryParameter(description="next_cursor of the previous page")] = None,
) -> JobList:
    """Filter by state, labels and name; follow ``next_cursor`` for the next page."""
    query = JobQuery(
        states=tuple(part for part in (job_state or "").split(",") if part),
        labels=parse_label_filters(label or []),
        name=name,
        limit=limit,
        cursor=cursor,
    )
    session_factory: sessionmaker[Session] = state.session_factory

    def page() -> JobList:
        with session_factory() as session:
            result = list_jobs(session, principal, query)
            return JobList(items=[job_view(job) for job in result.jobs], next_cursor=result.next_cursor)

    return await asyncio.to_thread(page)


@delete("/v1/jobs/{job_id:str}", tags=["jobs"], status_code=HTTP_202_ACCEPTED, summary="Cancel a job")
async def cancel_job(job_id: JobId, state: State, principal: AuthenticatedPrincipal) -> JobView:
    """Ask for cancellation (idempotent): a job not yet in Slurm is cancelled at once, one in
    Slurm gets desired_state ``cancel`` and is cancelled by the reconciler."""
    session_factory: sessionmaker[Session] = state.session_factory

    def cancel() -> JobView:
        with session_factory() as session:
            return job_view(request_cancel(session, principal, job_id))

    try:
        return await asyncio.to_thread(cancel)
    finally:
        # After the commit, so a GET from this process shows the cancel at once.
        state.job_view_cache.invalidate(job_id)


@post(
    "/v1/jobs/{job_id:str}/retry",
    tags=["jobs"],
    status_code=HTTP_202_ACCEPTED,
    summary="Start a new attempt of a job that ended unsuccessfully",
)
async def retry_job(job_id: JobId, state: State, principal: AuthenticatedPrincipal) -> JobView:
    """Allowed once the job ended failed, cancelled, timeout, node_fail, out_of_memory,
    preempted, submit_failed or hung (409 otherwise); not limited by the policy's max_attempts.
    A multi-step job re-runs only its unsuccessful steps, completed steps whose outputs no longer
    verify, and the steps after them; the job's ``state_reason`` says which."""
    session_factory: sessionmaker[Session] = state.session_factory
    job_root: str = state.config.slurm.job_root

    def retry() -> JobView:
        with session_factory() as session:
            return job_view(request_retry(session, principal, job_id, job_root=job_root))

    try:
        view = await asyncio.to_thread(retry)
    finally:
        state.job_view_cache.invalidate(job_id)
    workers = getattr(state, "job_workers", None)
    if workers is not None:
        workers.submitter.wake()
    return view


def job_view(job: Job) -> JobView:
    """The API view of a stored job (a plain job, or a multi-step job with its steps)."""
    spec = msgspec.convert(job.spec, JobSpec)
    is_workflow = job.kind == WORKFLOW
    after = {step.name: list(step.after) for step in spec.steps or []}
    return JobView(
        id=job.id,
        name=job.name,
        tenant_id=job.tenant_id,
        owner=job.owner,
        state=job.state,
        desired_state=job.desired_state,
        state_reason=job.state_reason,
        slurm_job_id=job.slurm_job_id,
        exit_code=job.exit_code,
        attempt=job.attempt,
        max_attempts=max_attempts(spec.retry),
        attempts=[] if is_workflow else _attempt_views(job),
        outputs=_output_views(job),
        array_tasks=_array_task_views(job),
        steps=[_step_view(step, after.get(step.step_name or "", [])) for step in job.steps]
        if is_workflow
        else [],
        staging=_staging_view(job.staging),
        progress=_progress_view(job),
        labels={label.key: label.value for label in job.labels},
        spec=spec,
        created_at=ensure_utc(job.created_at),
        updated_at=ensure_utc(job.updated_at),
        submitted_at=as_utc(job.submitted_at),
        started_at=as_utc(job.started_at),
        ended_at=as_utc(job.ended_at),
    )


def _step_view(step: Job, after: list[str]) -> StepView:
    retry = step.spec.get("retry")
    return StepView(
        name=step.step_name or "",
        after=after,
        state=step.state,
        state_reason=step.state_reason,
        slurm_job_id=step.slurm_job_id,
        exit_code=step.exit_code,
        attempt=step.attempt,
        max_attempts=max_attempts(msgspec.convert(retry, RetryPolicy) if retry is not None else None),
        attempts=_attempt_views(step),
        outputs=_output_views(step),
        array_tasks=_array_task_views(step),
        staging=_staging_view(step.staging),
        progress=_progress_view(step),
        submitted_at=as_utc(step.submitted_at),
        started_at=as_utc(step.started_at),
        ended_at=as_utc(step.ended_at),
    )


def _attempt_views(job: Job) -> list[AttemptView]:
    return [*(_attempt_view(past) for past in job.past_attempts), _attempt_view(job)]


def _output_views(job: Job) -> list[OutputFileView]:
    return msgspec.convert(job.outputs or [], list[OutputFileView])


def _progress_view(job: Job) -> ProgressView | None:
    if job.progress is None:
        return None
    progress = job.progress
    return ProgressView(
        fraction=progress.get("fraction"),
        message=progress.get("message"),
        metrics=progress.get("metrics") or {},
        reported_at=as_utc(job.progress_at),
    )


def _staging_view(staging: JobStaging | None) -> StagingView | None:
    if staging is None:
        return None
    return StagingView(
        stage_in=staging.stage_in,
        stage_out=staging.stage_out,
        inputs=msgspec.convert(staging.staged_in or [], list[StagedFileView]),
        outputs=msgspec.convert(staging.staged_out or [], list[StagedFileView]),
        bytes_in=staging.bytes_in,
        bytes_out=staging.bytes_out,
        stage_in_seconds=_seconds(staging.stage_in_started_at, staging.stage_in_ended_at),
        stage_out_seconds=_seconds(staging.stage_out_started_at, staging.stage_out_ended_at),
        error=staging.error,
    )


def _seconds(started: datetime | None, ended: datetime | None) -> float | None:
    if started is None or ended is None:
        return None
    return (ensure_utc(ended) - ensure_utc(started)).total_seconds()


def _array_task_views(job: Job) -> list[ArrayTaskView]:
    return msgspec.convert(job.array_tasks or [], list[ArrayTaskView])


def _attempt_view(attempt: Job | JobAttempt) -> AttemptView:
    # The job row describes the current attempt with the same fields an archived attempt has.
    return AttemptView(
        attempt=attempt.attempt,
        slurm_job_id=attempt.slurm_job_id,
        state=attempt.state,
        state_reason=attempt.state_reason,
        exit_code=attempt.exit_code,
        submitted_at=as_utc(attempt.submitted_at),
        started_at=as_utc(attempt.started_at),
        ended_at=as_utc(attempt.ended_at),
    )
