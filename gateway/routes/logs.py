"""/v1/jobs/{id}/logs: a job's stdout/stderr as byte ranges, tails, and a live SSE stream.

Visibility is exactly GET /v1/jobs/{id}'s (another tenant's or user's job is 404 before any
byte); a parameter that does not fit the job is 422 naming it; a log file replaced by a symlink
or special file is 409. A job that has not started yet has an empty log (``X-Log-State: pending``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Annotated, Any

from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.params import QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.auth import AuthenticatedPrincipal
from gateway.domain_errors import InvalidField
from gateway.job_logs import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    MAX_OFFSET,
    MAX_TAIL_LINES,
    LogRange,
    LogTarget,
    chunk_payload,
    locate_log,
    read_from,
    read_range,
    read_tail,
)
from gateway.job_service import get_job
from gateway.job_states import TERMINAL_STATES
from gateway.log_streams import KEEPALIVE_S, Ended, KeepAlive, LogText, StreamItem, Truncated, log_hub
from gateway.principal import Principal
from gateway.query_params import parse_int
from gateway.routes.jobs import JobId
from gateway.storage_models import Job, JobAttempt

# Which log, and from where: the same parameters for a read and for the live stream.
StreamParam = Annotated[str | None, QueryParameter(description="stdout (default) or stderr")]
StepParam = Annotated[str | None, QueryParameter(description="step name (required for multi-step jobs)")]
AttemptParam = Annotated[str | None, QueryParameter(description="attempt number (default: current)")]
TaskParam = Annotated[str | None, QueryParameter(description="array task (required for arrays)")]
OffsetParam = Annotated[str | None, QueryParameter(description="first byte (default 0)")]

# How often a stream waiting for its attempt to reach Slurm looks again.
WAIT_FOR_SLURM_S = 1.0


@get("/v1/jobs/{job_id:str}/logs", tags=["jobs"], summary="A byte range or the tail of a job's log")
async def read_job_log(
    job_id: JobId,
    state: State,
    principal: AuthenticatedPrincipal,
    *,
    stream: StreamParam = None,
    step: StepParam = None,
    attempt: AttemptParam = None,
    task: TaskParam = None,
    offset: OffsetParam = None,
    limit: Annotated[str | None, QueryParameter(description="at most this many bytes (1 MiB)")] = None,
    tail: Annotated[str | None, QueryParameter(description="the last N lines instead (1..10000)")] = None,
) -> Response[bytes]:
    """Bytes ``offset`` .. ``offset + limit`` (default 1 MiB, at most 16 MiB), or with ``tail``
    the last N lines; headers X-Log-Offset, X-Log-Next-Offset and X-Log-Size say where they lie."""
    target = await _locate(state, principal, job_id, stream=stream, step=step, attempt=attempt, task=task)
    if tail is not None:
        if offset is not None or limit is not None:
            raise InvalidField("tail", "give either tail or offset/limit, not both")
        lines = parse_int("tail", tail, default=0, low=1, high=MAX_TAIL_LINES)
        found = await asyncio.to_thread(read_tail, target, lines)
    else:
        start = parse_int("offset", offset, default=0, low=0, high=MAX_OFFSET)
        count = parse_int("limit", limit, default=DEFAULT_LIMIT, low=1, high=MAX_LIMIT)
        found = await asyncio.to_thread(read_range, target, start, count)
    return Response(content=found.data, media_type="application/octet-stream", headers=_range_headers(found))


@get(
    "/v1/jobs/{job_id:str}/logs/stream",
    tags=["jobs"],
    summary="A job's log as Server-Sent Events, live until the job ends (resume with Last-Event-ID)",
)
async def stream_job_log(
    job_id: JobId,
    request: Request[Any, Any, Any],
    state: State,
    principal: AuthenticatedPrincipal,
    *,
    stream: StreamParam = None,
    step: StepParam = None,
    attempt: AttemptParam = None,
    task: TaskParam = None,
    offset: OffsetParam = None,
) -> ServerSentEvent:
    """``log`` events (id: the byte offset after the chunk; data: offset and text, or base64 when
    not UTF-8), ``truncated`` when the file started over, and ``end`` with the final state."""
    target = await _locate(state, principal, job_id, stream=stream, step=step, attempt=attempt, task=task)
    resume = request.headers.get("last-event-id")
    if resume is not None:
        start = parse_int("Last-Event-ID", resume, default=0, low=0, high=MAX_OFFSET)
    else:
        start = parse_int("offset", offset, default=0, low=0, high=MAX_OFFSET)
    snapshot = await asyncio.to_thread(read_from, target, start, 0) if target.file_name else None
    size = snapshot[1] if snapshot is not None else 0
    restart = start > size
    if restart and resume is None:
        raise InvalidField("offset", f"offset {start} is past the end of the log ({size} bytes)")
    params = {"stream": stream, "step": step, "attempt": attempt, "task": task}
    relocate = partial(
        _locate_now, state.session_factory, state.config.slurm.job_root, principal, job_id, params
    )
    events = _events(state, target, 0 if restart else start, restart, relocate)
    return ServerSentEvent(events, headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _events(
    state: State,
    target: LogTarget,
    start: int,
    restart: bool,
    relocate: Callable[[], LogTarget],
) -> AsyncIterator[ServerSentEventMessage]:
    session_factory: sessionmaker[Session] = state.session_factory
    if restart:
        # Last-Event-ID beyond the file: it was truncated or replaced since the client's last event.
        yield _sse(Truncated(), 0)
    idle_s = 0.0
    while target.file_name is None and target.state not in TERMINAL_STATES:
        # Not in Slurm yet (staging, queued in the gateway): a cheap look once per second, the
        # full lookup only once the attempt has its Slurm id; keep-alives meanwhile.
        await asyncio.sleep(WAIT_FOR_SLURM_S)
        idle_s += WAIT_FOR_SLURM_S
        if idle_s >= KEEPALIVE_S:
            idle_s = 0.0
            yield _sse(KeepAlive(), start)
        if await asyncio.to_thread(_reached_slurm_or_ended, session_factory, target):
            target = await asyncio.to_thread(relocate)
    if target.file_name is None:
        yield _sse(Ended(0, target.state, target.exit_code, 0), 0)
        return
    offset = start
    states = partial(_attempt_state, session_factory, target)
    async for item in log_hub(state).follow(target, start, states):
        if isinstance(item, LogText):
            offset = item.offset + len(item.data)
        elif isinstance(item, Truncated):
            offset = 0
        yield _sse(item, offset)


def _sse(item: StreamItem, offset: int) -> ServerSentEventMessage:
    if isinstance(item, LogText):
        payload = chunk_payload(item.offset, item.data)
        return ServerSentEventMessage(event="log", id=str(offset), data=json.dumps(payload))
    if isinstance(item, Truncated):
        return ServerSentEventMessage(event="truncated", id="0", data=json.dumps({"offset": 0}))
    if isinstance(item, KeepAlive):
        return ServerSentEventMessage(comment="keep-alive")
    payload: dict[str, object] = {"state": item.state, "exit_code": item.exit_code, "offset": item.size}
    if item.error is not None:
        payload["error"] = item.error
    return ServerSentEventMessage(event="end", id=str(item.size), data=json.dumps(payload))


async def _locate(state: State, principal: Principal, job_id: str, **params: str | None) -> LogTarget:
    return await asyncio.to_thread(
        _locate_now, state.session_factory, state.config.slurm.job_root, principal, job_id, params
    )


def _locate_now(
    session_factory: sessionmaker[Session],
    job_root: str,
    principal: Principal,
    job_id: str,
    params: dict[str, str | None],
) -> LogTarget:
    """The log file now (NotFound for a job the caller may not see, as GET /v1/jobs/{id})."""
    with session_factory() as session:
        return locate_log(get_job(session, principal, job_id), job_root=job_root, **params)


def _reached_slurm_or_ended(session_factory: sessionmaker[Session], target: LogTarget) -> bool:
    """Whether the job row now has a Slurm id or has ended (one indexed two-column read)."""
    with session_factory() as session:
        row = session.execute(select(Job.slurm_job_id, Job.state).where(Job.id == target.row_id)).first()
    return row is None or row.slurm_job_id is not None or row.state in TERMINAL_STATES


def _attempt_state(session_factory: sessionmaker[Session], target: LogTarget) -> tuple[str, int | None]:
    """The streamed attempt's (state, exit code): the job row's while current, else archived."""
    with session_factory() as session:
        row = session.get(Job, target.row_id)
        if row is not None and row.attempt == target.attempt:
            return row.state, row.exit_code
        past = session.get(JobAttempt, (target.row_id, target.attempt))
        if past is None:
            return target.state, target.exit_code
        return past.state, past.exit_code


def _range_headers(found: LogRange) -> dict[str, str]:
    headers = {
        "X-Log-Offset": str(found.offset),
        "X-Log-Next-Offset": str(found.next_offset),
        "X-Log-Size": str(found.size),
        "Cache-Control": "no-store",
    }
    if not found.exists:
        headers["X-Log-State"] = "pending"
    return headers
