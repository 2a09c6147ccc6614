"""Recently read job views for GET /v1/jobs/{id}: clients poll, the database answers once per TTL.

Bounded in staleness and memory: an entry lives at most ``ttl_s`` (the gateway keeps it at or
below the reconciler's poll interval, so a view is never older than the state it shows could
be anyway) and at most ``max_entries`` views are held. Per process: with several gateway
processes on one database, a change made through another process shows here after at most
``ttl_s``; a cancel through this process shows at once (``invalidate``).

Isolation is exact: a view is keyed by job id only, but handed out only to a caller who may see
the job (same rules as the database query); anyone else falls through to the database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from gateway.expiring_cache import ExpiringLruCache
from gateway.job_schemas import JobView
from gateway.job_service import job_visible_to
from gateway.principal import Principal

DEFAULT_MAX_ENTRIES = 10_000

ViewReader = Callable[[], Awaitable[JobView]]


class JobViewCache:
    """Job views by job id, each kept at most ``ttl_s`` (0 disables the cache). Event loop only."""

    def __init__(
        self,
        *,
        ttl_s: float,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` is monotonic seconds (injectable for tests)."""
        self._ttl_s = ttl_s
        self._clock = clock
        self._views: ExpiringLruCache[str, JobView] = ExpiringLruCache(max_entries)
        self._generation = 0
        # Reads in flight, by job id and caller: concurrent misses for one job share one query.
        self._reads: dict[str, dict[Principal, asyncio.Future[JobView]]] = {}

    def lookup(self, job_id: str, principal: Principal) -> JobView | None:
        """The cached view of ``job_id`` if fresh and visible to ``principal``; else None."""
        view = self._views.get(job_id, self._clock())
        if view is None or not job_visible_to(principal, tenant_id=view.tenant_id, owner=view.owner):
            return None
        return view

    async def view(self, job_id: str, principal: Principal, read: ViewReader) -> JobView:
        """The cached view, or the one ``read`` returns (it raises NotFound for an invisible job).

        Callers missing at the same moment with the same principal await a single ``read``
        (the caller is part of the key, so a not-found is only ever shared with the same caller).
        """
        cached = self.lookup(job_id, principal)
        if cached is not None:
            return cached
        by_caller = self._reads.setdefault(job_id, {})
        pending = by_caller.get(principal)
        if pending is None:
            pending = asyncio.ensure_future(self._read_and_store(read, self._generation))
            by_caller[principal] = pending
            pending.add_done_callback(lambda done: self._forget_read(job_id, principal, done))
        # Shielded: one caller going away must not cancel the read the others wait for.
        return await asyncio.shield(pending)

    def invalidate(self, job_id: str) -> None:
        """Forget ``job_id`` after this process changed it (call once the change is committed).

        Reads already in flight may predate the change: later callers do not join them, and
        what they return is not stored.
        """
        self._generation += 1
        self._views.discard(job_id)
        self._reads.pop(job_id, None)

    async def _read_and_store(self, read: ViewReader, generation: int) -> JobView:
        view = await read()
        if self._ttl_s > 0 and generation == self._generation:
            self._views.put(view.id, view, self._clock() + self._ttl_s)
        return view

    def _forget_read(self, job_id: str, principal: Principal, done: asyncio.Future[JobView]) -> None:
        if not done.cancelled():
            # Retrieved here so that a read whose callers all went away logs no warning.
            done.exception()
        by_caller = self._reads.get(job_id)
        if by_caller is not None and by_caller.get(principal) is done:
            del by_caller[principal]
            if not by_caller:
                del self._reads[job_id]
