"""/v1/events: the caller's job events as Server-Sent Events (gateway.job_events does the work).

Each event is ``event: job``, ``id: <event id>``, ``data: <the event as JSON>``. A client resumes
with ``Last-Event-ID`` (or ``?after=``) and gets exactly the events after that id; without
either, the stream starts with the next event. ``?job_id=`` narrows it to one job and its steps
(404 before any byte when the caller cannot see that job). A comment line every
KEEPALIVE_S keeps idle connections open through proxies.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import get
from litestar.datastructures import State
from litestar.params import HeaderParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from sqlalchemy.orm import Session, sessionmaker

from gateway.auth import AuthenticatedPrincipal
from gateway.domain_errors import InvalidField
from gateway.job_events import EventFeed, EventFilter, EventRecord
from gateway.job_service import get_job
from gateway.query_params import parse_int

KEEPALIVE_S = 15.0
EVENT_TYPE = "job"
MAX_EVENT_ID = 10**18


@get("/v1/events", tags=["events"], summary="The caller's job events, live (Server-Sent Events)")
async def stream_events(
    state: State,
    principal: AuthenticatedPrincipal,
    *,
    after: Annotated[str | None, QueryParameter(description="resume after this event id")] = None,
    job_id: Annotated[
        str | None, QueryParameter(max_length=64, description="only this job and its steps")
    ] = None,
    last_event_id: Annotated[str | None, HeaderParameter(name="Last-Event-ID")] = None,
) -> ServerSentEvent:
    """Admins see every job's events, tenant admins their tenant's, users their own jobs'."""
    field, raw = ("Last-Event-ID", last_event_id) if last_event_id is not None else ("after", after)
    after_id = parse_int(field, raw, default=0, low=0, high=MAX_EVENT_ID) if raw is not None else None
    feed: EventFeed = state.event_feed
    if after_id is not None:
        newest = await asyncio.to_thread(feed.newest_id)
        if after_id > newest:
            # A stale or mistyped id would otherwise filter out every event from now on.
            raise InvalidField(
                field, f"there is no event {after_id} (the newest is {newest}); resume from an id received"
            )
    if job_id is not None:
        session_factory: sessionmaker[Session] = state.session_factory

        def check_visible() -> None:
            with session_factory() as session:
                get_job(session, principal, job_id)

        await asyncio.to_thread(check_visible)
    events = feed.subscribe(EventFilter(principal, job_id), after_id, keepalive_s=KEEPALIVE_S)
    return ServerSentEvent(_messages(events))


async def _messages(events: AsyncIterator[EventRecord | None]) -> AsyncIterator[ServerSentEventMessage]:
    async for event in events:
        if event is None:
            yield ServerSentEventMessage(data=None, comment="keep-alive")
        else:
            yield ServerSentEventMessage(data=event_json(event), event=EVENT_TYPE, id=event.id)


def event_json(event: EventRecord) -> str:
    """The event as the stream's ``data``."""
    body: dict[str, Any] = {
        "id": event.id,
        "tenant_id": event.tenant_id,
        "owner": event.owner,
        "job_id": event.job_id,
        "parent_id": event.parent_id,
        "kind": event.kind,
        "state": event.state,
        "state_reason": event.state_reason,
        "exit_code": event.exit_code,
        "attempt": event.attempt,
        "progress": event.progress,
        "created_at": None if event.created_at is None else event.created_at.isoformat(),
    }
    return msgspec.json.encode(body).decode()
