"""The per-process job event feed behind GET /v1/events: one reader of job_events for all subscribers.

Database triggers (migration 0005) append a row to job_events for every change a tenant can
watch. Each gateway process runs one EventFeed thread that reads new rows by id (``WHERE id >
horizon ORDER BY id``) every POLL_INTERVAL_S, and at once when PostgreSQL notifies
JOB_EVENTS_CHANNEL (a dedicated LISTEN connection; SQLite only polls), and hands each row to the
subscribers allowed to see it. So events caused through any process reach subscribers of all.

Order and resume: ids are assigned when a row is inserted but become visible when its
transaction commits, so on PostgreSQL id 11 may appear after id 12. The feed delivers ids in
order and waits (up to GAP_WAIT_S) at a missing id before skipping it (a rolled-back
transaction leaves one for good). Everything up to ``horizon`` is settled; a subscriber reads
its backlog from the database up to the horizon it registered at and then takes live events
above it, so it sees no gap and no duplicate, and a client resuming from the last id it saw
(Last-Event-ID) gets exactly the rest.

A subscriber that falls QUEUE_LIMIT events behind is closed (its stream ends); it resumes with
its last id and reads what it missed from the database.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from litestar import Litestar
from sqlalchemy import ColumnElement, Engine, and_, func, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from gateway.job_service import job_visible_to, visible_condition
from gateway.principal import Principal
from gateway.storage_models import JobEvent
from gateway.timestamps import as_utc

logger = logging.getLogger(__name__)

JOB_EVENTS_CHANNEL = "sgw_job_events"
POLL_INTERVAL_S = 0.25
# How long a missing id holds back the events after it (an uncommitted transaction's row).
GAP_WAIT_S = 2.0
# Re-read soon while waiting at a gap (transactions are short).
GAP_POLL_S = 0.05
FETCH_BATCH = 500
QUEUE_LIMIT = 10_000
LISTEN_RETRY_S = 5.0
READ_RETRY_S = 2.0
LISTEN_TIMEOUT_S = 1.0
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One job event as subscribers receive it (a JobEvent row, detached from its session)."""

    id: int
    tenant_id: str
    owner: str
    job_id: str
    parent_id: str | None
    kind: str
    state: str
    state_reason: str | None
    exit_code: int | None
    attempt: int
    progress: dict[str, Any] | None
    created_at: datetime | None

    @classmethod
    def from_row(cls, row: JobEvent) -> EventRecord:
        """Copy a JobEvent row (SQLite hands its timestamp back without a zone: UTC)."""
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            owner=row.owner,
            job_id=row.job_id,
            parent_id=row.parent_id,
            kind=row.kind,
            state=row.state,
            state_reason=row.state_reason,
            exit_code=row.exit_code,
            attempt=row.attempt,
            progress=row.progress,
            created_at=as_utc(row.created_at),
        )


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events one subscriber gets: what its principal may see, optionally one job (and its steps)."""

    principal: Principal
    job_id: str | None = None

    def matches(self, event: EventRecord) -> bool:
        """Whether the event is of the followed job (if any) and in the caller's view."""
        if self.job_id is not None and self.job_id not in (event.job_id, event.parent_id):
            return False
        return job_visible_to(self.principal, tenant_id=event.tenant_id, owner=event.owner)

    def condition(self) -> ColumnElement[bool]:
        """``matches`` as SQL, for reading the backlog."""
        visible = visible_condition(self.principal, JobEvent.tenant_id, JobEvent.owner)
        if self.job_id is None:
            return visible
        return and_(visible, or_(JobEvent.job_id == self.job_id, JobEvent.parent_id == self.job_id))


class SubscriptionClosed(Exception):
    """The subscriber's stream ended: the feed stopped or the subscriber fell too far behind."""


class _Closed:
    """Put on a subscriber's queue when its stream must end (feed stopping, subscriber too slow)."""


_CLOSED = _Closed()


class Subscription:
    """One subscriber's live queue; the feed fills it from its thread, the stream drains it."""

    def __init__(self, event_filter: EventFilter, loop: asyncio.AbstractEventLoop, after_id: int) -> None:
        self.event_filter = event_filter
        self.after_id = after_id
        self._loop = loop
        self._queue: asyncio.Queue[EventRecord | _Closed] = asyncio.Queue()
        # Counted on the feed thread so it can tell when the subscriber has fallen too far behind.
        self._pending = 0
        self._lock = threading.Lock()
        self.closed = False

    def offer(self, event: EventRecord) -> None:
        """Queue ``event`` if this subscriber wants it (feed thread)."""
        if self.closed or event.id <= self.after_id or not self.event_filter.matches(event):
            return
        with self._lock:
            self._pending += 1
            overflow = self._pending > QUEUE_LIMIT
        if overflow:
            self.close()
            return
        self._put(event)

    def close(self) -> None:
        """End the stream after what is already queued (any thread)."""
        if not self.closed:
            self.closed = True
            self._put(_CLOSED)

    def _put(self, item: EventRecord | _Closed) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:
            # The subscriber's event loop has closed: nobody is reading any more.
            self.closed = True

    async def next(self, timeout_s: float) -> EventRecord | None:
        """The next live event, or None after ``timeout_s`` without one; SubscriptionClosed at the end."""
        try:
            item = await asyncio.wait_for(self._queue.get(), timeout_s)
        except TimeoutError:
            return None
        if isinstance(item, _Closed):
            raise SubscriptionClosed
        with self._lock:
            self._pending -= 1
        return item


class EventFeed:
    """Reads job_events in id order in one thread and fans each event out to the subscribers."""

    def __init__(self, engine: Engine, *, poll_interval_s: float = POLL_INTERVAL_S) -> None:
        """``engine``: the gateway's database; a PostgreSQL one is also LISTENed to."""
        self._engine = engine
        self._session_factory = sessionmaker(engine, expire_on_commit=False)
        self._poll_interval_s = poll_interval_s
        self._lock = threading.Lock()
        self._subscriptions: set[Subscription] = set()
        # None until the feed has read where job_events ends (the table may not exist yet).
        self._horizon: int | None = None
        # The id after the horizon first found missing, and when (monotonic).
        self._gap_since: float | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Begin at the newest stored event and start the reader (and, on PostgreSQL, the listener).

        A database that cannot be read yet (down, or not migrated) does not stop the app: the
        reader keeps trying."""
        try:
            self._find_end()
        except SQLAlchemyError:
            logger.warning("cannot read job_events yet; the event feed will keep trying")
        self._threads.append(threading.Thread(target=self._read_loop, name="job-event-feed", daemon=True))
        if self._engine.dialect.name == "postgresql":
            self._threads.append(
                threading.Thread(target=self._listen_loop, name="job-event-listener", daemon=True)
            )
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop the threads and end every subscriber's stream."""
        self._stopping.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(STOP_TIMEOUT_S)
        with self._lock:
            subscriptions = list(self._subscriptions)
            self._subscriptions.clear()
        for subscription in subscriptions:
            subscription.close()

    def wake(self) -> None:
        """Read new events now rather than at the next poll."""
        self._wake.set()

    def backlog(self, event_filter: EventFilter, after_id: int, up_to: int) -> list[EventRecord]:
        """Stored events ``after_id < id <= up_to`` the filter admits, oldest first, at most FETCH_BATCH."""
        with self._session_factory() as session:
            rows = session.scalars(
                select(JobEvent)
                .where(JobEvent.id > after_id, JobEvent.id <= up_to, event_filter.condition())
                .order_by(JobEvent.id)
                .limit(FETCH_BATCH)
            ).all()
            return [EventRecord.from_row(row) for row in rows]

    async def subscribe(
        self, event_filter: EventFilter, after_id: int | None, *, keepalive_s: float | None = None
    ) -> AsyncIterator[EventRecord | None]:
        """Events for ``event_filter``: the stored ones after ``after_id`` (None: none, live only),
        then live ones, in id order without gap or duplicate. With ``keepalive_s``, yields None
        after that long without an event. Ends when the feed stops or the subscriber lags."""
        loop = asyncio.get_running_loop()
        if self._horizon is None:
            # The reader has not found the table's end yet (database down at start-up): find it
            # here, or a resuming subscriber would get neither backlog nor the events before it.
            await asyncio.to_thread(self._find_end)
        with self._lock:
            registered_at = self._horizon or 0
            subscription = Subscription(event_filter, loop, max(after_id or 0, registered_at))
            self._subscriptions.add(subscription)
        try:
            position = registered_at if after_id is None else after_id
            while position < registered_at:
                page = await asyncio.to_thread(self.backlog, event_filter, position, registered_at)
                if not page:
                    break
                for stored in page:
                    yield stored
                position = page[-1].id
            wait_s = keepalive_s if keepalive_s is not None else 3600.0
            while True:
                try:
                    live = await subscription.next(wait_s)
                except SubscriptionClosed:
                    return
                if live is not None or keepalive_s is not None:
                    yield live
        finally:
            with self._lock:
                self._subscriptions.discard(subscription)

    def newest_id(self) -> int:
        """The id of the newest stored event (0: none), read from the database: another process
        may have handed a client an id this one has not read yet."""
        with self._session_factory() as session:
            return session.scalar(select(func.max(JobEvent.id))) or 0

    def _find_end(self) -> None:
        with self._session_factory() as session:
            end = session.scalar(select(func.max(JobEvent.id))) or 0
        with self._lock:
            self._horizon = end

    def _read_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                wait_s = self._read_once()
            except SQLAlchemyError as exc:
                logger.warning("reading job events failed (%s); retrying", type(exc).__name__)
                wait_s = READ_RETRY_S
            self._wake.wait(wait_s)
            self._wake.clear()

    def _read_once(self) -> float:
        """Fan out the settled new events; returns how long to wait before the next read."""
        if self._horizon is None:
            self._find_end()
            return self._poll_interval_s
        with self._session_factory() as session:
            rows = session.scalars(
                select(JobEvent).where(JobEvent.id > self._horizon).order_by(JobEvent.id).limit(FETCH_BATCH)
            ).all()
            events = [EventRecord.from_row(row) for row in rows]
        for event in events:
            if event.id != self._horizon + 1 and not self._gap_expired():
                return GAP_POLL_S
            self._gap_since = None
            with self._lock:
                self._horizon = event.id
                subscriptions: Sequence[Subscription] = list(self._subscriptions)
            for subscription in subscriptions:
                subscription.offer(event)
        return 0.0 if len(events) == FETCH_BATCH else self._poll_interval_s

    def _gap_expired(self) -> bool:
        now = time.monotonic()
        if self._gap_since is None:
            self._gap_since = now
        return now - self._gap_since >= GAP_WAIT_S

    def _listen_loop(self) -> None:
        connect_args, connect_kwargs = self._engine.dialect.create_connect_args(self._engine.url)
        while not self._stopping.is_set():
            try:
                with psycopg.connect(*connect_args, **connect_kwargs, autocommit=True) as connection:
                    connection.execute(f"LISTEN {JOB_EVENTS_CHANNEL}")
                    # Anything committed while not listening is caught by this read.
                    self.wake()
                    while not self._stopping.is_set():
                        # The timeout bounds how long stop() waits for this thread.
                        for _notification in connection.notifies(timeout=LISTEN_TIMEOUT_S):
                            self.wake()
            except psycopg.Error:
                logger.warning("listening for job events failed; polling only until it reconnects")
                self._stopping.wait(LISTEN_RETRY_S)


@asynccontextmanager
async def job_events_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Start the event feed (``app.state.event_feed``) with the app, stop it on shutdown.

    Runs after the resources lifespan (it reads ``app.state.database_engine``)."""
    feed = EventFeed(app.state.database_engine)
    await asyncio.to_thread(feed.start)
    app.state.event_feed = feed
    try:
        yield
    finally:
        await asyncio.to_thread(feed.stop)
