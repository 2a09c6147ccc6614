"""Live log fan-out: one reader per log file serves every subscriber of that file.

A ``LogHub`` (one per process, ``app.state.log_hub``) keeps a ``FileFeed`` per log file while
anyone watches it. The feed's task polls the file every POLL_S (the blocking open/stat/read in a
thread), reads each new byte once and hands the same chunk to every subscriber's bounded queue;
it also checks the job's state at most once per STATE_CHECK_S for all its subscribers together
(never per subscriber). It stops when its last subscriber leaves.

A subscriber that starts behind the feed (a resume from an old offset) or falls behind (its
queue filled up) reads its backlog itself, then takes the feed's chunks from where its backlog
ended: chunks overlapping what it already has are trimmed, so there is no gap and no overlap.
A file that shrinks below the feed's offset or is replaced (another inode) starts a new
generation from byte 0, which subscribers report as ``truncated``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from gateway.job_logs import MAX_CHUNK, LogFileRefused, LogTarget, read_from, split_chunks
from gateway.job_states import TERMINAL_STATES

POLL_S = 0.1
STATE_CHECK_S = 1.0
KEEPALIVE_S = 15.0
# Bytes one poll reads at most: a burst is spread over polls instead of one huge read.
READ_MAX = 1 << 20
# Chunks a subscriber may have queued (at most 16 MiB) before it is left to catch up on its own.
QUEUE_CHUNKS = 256

_log = logging.getLogger(__name__)

# (state, exit_code) of the streamed attempt; blocking (runs in a thread).
StateReader = Callable[[], tuple[str, int | None]]


@dataclass(frozen=True)
class Chunk:
    """Bytes of the file at ``offset`` in file ``generation``."""

    generation: int
    offset: int
    data: bytes


@dataclass(frozen=True)
class Ended:
    """The attempt ended and the file was read to its end: ``size`` bytes in ``generation``; or
    the file may not be read any more (``error`` says why, for the client)."""

    generation: int
    state: str
    exit_code: int | None
    size: int
    error: str | None = None


@dataclass(frozen=True)
class LogText:
    """A chunk for the client, starting at ``offset`` (the event id is ``offset + len(data)``)."""

    offset: int
    data: bytes


@dataclass(frozen=True)
class Truncated:
    """The file was truncated or replaced: what follows starts again at byte 0."""


@dataclass(frozen=True)
class KeepAlive:
    """Nothing new for KEEPALIVE_S: the route sends an SSE comment."""


StreamItem = LogText | Truncated | Ended | KeepAlive


@dataclass(eq=False)
class Subscriber:
    """One client's place in a feed: chunks queue up here; ``lagged`` once the queue overflowed."""

    queue: asyncio.Queue[Chunk | Ended | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_CHUNKS))
    lagged: bool = False


class FileFeed:
    """The single reader of one log file; see the module docstring."""

    def __init__(self, hub: LogHub, target: LogTarget, start: int, read_state: StateReader) -> None:
        self.hub = hub
        self.target = target
        self.offset = start
        self.generation = 0
        self.final: Ended | None = None
        # Subscribers fed now; ``followers`` also counts those catching up on their own.
        self.subscribers: set[Subscriber] = set()
        self.followers = 0
        self._read_state = read_state
        self._inode: int | None = None
        self._terminal: tuple[str, int | None] | None = (
            (target.state, target.exit_code) if target.state in TERMINAL_STATES else None
        )
        self._state_checked_at = float("-inf")
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Poll until the attempt ended and its file was read to the end (or the task is cancelled)."""
        failures = 0
        while self.final is None:
            try:
                caught_up = await self._poll()
                failures = 0
            except LogFileRefused as exc:
                # The job's user put something else in the log's place: it will not be followed.
                state, exit_code = self._terminal or (self.target.state, self.target.exit_code)
                self.final = Ended(self.generation, state, exit_code, self.offset, error=str(exc))
                self._deliver(self.final)
                return
            except Exception:
                # A database or file system hiccup: keep trying, say why (once per streak).
                if failures == 0:
                    _log.warning("reading log %s failed", self.target.file_name, exc_info=True)
                failures += 1
                caught_up = True
            if caught_up:
                await asyncio.sleep(min(POLL_S * 2**failures, STATE_CHECK_S))

    async def _poll(self) -> bool:
        now = time.monotonic()
        if self._terminal is None and now - self._state_checked_at >= STATE_CHECK_S:
            self._state_checked_at = now
            state, exit_code = await asyncio.to_thread(self._read_state)
            if state in TERMINAL_STATES:
                self._terminal = (state, exit_code)
        # Known terminal before this read: the read below then sees every byte the job wrote.
        terminal = self._terminal
        snapshot = await asyncio.to_thread(read_from, self.target, self.offset, READ_MAX)
        if snapshot is None:
            if terminal is not None:
                self._finish(terminal, 0)
            return True
        inode, size, data = snapshot
        if size < self.offset or (self._inode is not None and inode != self._inode):
            self.generation += 1
            self.offset = 0
            self._inode = inode
            return False
        self._inode = inode
        if data:
            self.hub.reads += 1
            self._publish(data)
        if terminal is not None and self.offset >= size:
            self._finish(terminal, self.offset)
        return self.offset >= size

    def _publish(self, data: bytes) -> None:
        for start in range(0, len(data), MAX_CHUNK):
            chunk = Chunk(self.generation, self.offset, data[start : start + MAX_CHUNK])
            self.offset += len(chunk.data)
            self._deliver(chunk)

    def _finish(self, terminal: tuple[str, int | None], size: int) -> None:
        self.final = Ended(self.generation, terminal[0], terminal[1], size)
        self._deliver(self.final)

    def close(self) -> None:
        """End every subscriber's stream (the hub shuts down)."""
        for subscriber in list(self.subscribers):
            # A full queue must not swallow the end marker: the stream is ending anyway, so the
            # chunks still queued are dropped (the client resumes from its last event id).
            while not subscriber.queue.empty():
                subscriber.queue.get_nowait()
            subscriber.queue.put_nowait(None)

    def _deliver(self, item: Chunk | Ended | None) -> None:
        for subscriber in list(self.subscribers):
            try:
                subscriber.queue.put_nowait(item)
            except asyncio.QueueFull:
                # Too slow to keep up: it leaves the feed and catches up by reading itself.
                subscriber.lagged = True
                self.subscribers.discard(subscriber)


class LogHub:
    """The per-process set of file feeds, keyed by log file path."""

    def __init__(self) -> None:
        self.feeds: dict[tuple[str, str], FileFeed] = {}
        # Reads of new bytes by feeds (one per block, however many subscribers), and of backlogs.
        self.reads = 0
        self.backlog_reads = 0
        self._closed = False

    async def follow(
        self, target: LogTarget, offset: int, read_state: StateReader, *, keepalive_s: float = KEEPALIVE_S
    ) -> AsyncIterator[StreamItem]:
        """The file's bytes from ``offset`` as LogText items cut on UTF-8 boundaries, Truncated
        when the file started over, KeepAlive when idle, and Ended last."""
        assert target.file_name is not None, "only an attempt with a Slurm id has a log file"
        feed = self._feed(target, offset, read_state)
        subscriber = Subscriber()
        follower = _Follower(self, feed, subscriber, offset)
        try:
            async for item in follower.items(keepalive_s):
                yield item
        finally:
            self._leave(feed, subscriber)

    async def close(self) -> None:
        """Stop every feed (app shutdown); their subscribers' streams end."""
        self._closed = True
        for feed in list(self.feeds.values()):
            feed.close()
            if feed.task is not None:
                feed.task.cancel()
                with suppress(asyncio.CancelledError):
                    await feed.task
        self.feeds.clear()

    def _feed(self, target: LogTarget, offset: int, read_state: StateReader) -> FileFeed:
        if self._closed:
            raise RuntimeError("the log hub is shut down")
        key = (target.working_dir, target.file_name or "")
        feed = self.feeds.get(key)
        if feed is None:
            feed = FileFeed(self, target, offset, read_state)
            self.feeds[key] = feed
            feed.task = asyncio.create_task(feed.run(), name=f"log feed {target.file_name}")
        feed.followers += 1
        return feed

    def _leave(self, feed: FileFeed, subscriber: Subscriber) -> None:
        feed.subscribers.discard(subscriber)
        feed.followers -= 1
        if feed.followers:
            return
        key = (feed.target.working_dir, feed.target.file_name or "")
        if self.feeds.get(key) is feed:
            del self.feeds[key]
        if feed.task is not None:
            feed.task.cancel()


class _Follower:
    """One subscriber's walk through the file: backlog reads, then the feed's chunks."""

    def __init__(self, hub: LogHub, feed: FileFeed, subscriber: Subscriber, offset: int) -> None:
        self._hub = hub
        self._feed = feed
        self._subscriber = subscriber
        self._generation = feed.generation
        # Bytes received so far (sent, plus ``held``: an incomplete UTF-8 sequence at the end).
        self._position = offset
        self._held = b""

    async def items(self, keepalive_s: float) -> AsyncIterator[StreamItem]:
        while True:
            joined = await self._join()
            for item in joined:
                yield item
            if joined and isinstance(joined[-1], Ended):
                return
            while not self._subscriber.lagged or not self._subscriber.queue.empty():
                try:
                    entry = await asyncio.wait_for(self._subscriber.queue.get(), keepalive_s)
                except TimeoutError:
                    yield KeepAlive()
                    continue
                if entry is None:
                    return
                if isinstance(entry, Ended):
                    for item in await self._end(entry):
                        yield item
                    return
                for item in await self._take(entry):
                    yield item

    async def _join(self) -> list[StreamItem]:
        """(Re)join the feed and read what lies between our position and the feed's offset."""
        self._subscriber.lagged = False
        self._feed.subscribers.add(self._subscriber)
        if self._feed.final is not None:
            return await self._end(self._feed.final)
        if self._feed.generation != self._generation:
            return [*self._restart(self._feed.generation), *await self._backlog(self._feed.offset)]
        return await self._backlog(self._feed.offset)

    async def _take(self, chunk: Chunk) -> list[StreamItem]:
        items: list[StreamItem] = []
        if chunk.generation != self._generation:
            items.extend(self._restart(chunk.generation))
        if chunk.offset > self._position:
            items.extend(await self._backlog(chunk.offset))
        end = chunk.offset + len(chunk.data)
        if end <= self._position:
            return items
        return [*items, *self._receive(chunk.data[self._position - chunk.offset :])]

    async def _end(self, ended: Ended) -> list[StreamItem]:
        items: list[StreamItem] = []
        if ended.generation != self._generation:
            items.extend(self._restart(ended.generation))
        items.extend(await self._backlog(ended.size))
        items.extend(self._flush(final=True))
        return [*items, ended]

    def _restart(self, generation: int) -> list[StreamItem]:
        self._generation = generation
        self._position = 0
        self._held = b""
        return [Truncated()]

    async def _backlog(self, until: int) -> list[StreamItem]:
        """Read ``position .. until`` ourselves (the feed is past it); stops early if the file
        is shorter now (the feed will report the truncation)."""
        items: list[StreamItem] = []
        while self._position < until:
            wanted = min(READ_MAX, until - self._position)
            snapshot = await asyncio.to_thread(read_from, self._feed.target, self._position, wanted)
            self._hub.backlog_reads += 1
            if snapshot is None or not snapshot[2]:
                break
            items.extend(self._receive(snapshot[2]))
        return items

    def _receive(self, data: bytes) -> list[StreamItem]:
        self._position += len(data)
        self._held += data
        return self._flush(final=False)

    def _flush(self, *, final: bool) -> list[StreamItem]:
        chunks, used = split_chunks(self._held, final=final)
        start = self._position - len(self._held)
        items: list[StreamItem] = []
        for chunk in chunks:
            items.append(LogText(start, chunk))
            start += len(chunk)
        self._held = self._held[used:]
        return items


def log_hub(state: Any) -> LogHub:
    """The process's hub, ``state.log_hub``, which log_hub_lifespan sets (and closes)."""
    hub: LogHub = state.log_hub
    return hub


@asynccontextmanager
async def log_hub_lifespan(app: Any) -> AsyncIterator[None]:
    """Litestar lifespan: ``app.state.log_hub`` for the app's life; its feeds stop at shutdown."""
    hub = LogHub()
    app.state.log_hub = hub
    try:
        yield
    finally:
        await hub.close()
