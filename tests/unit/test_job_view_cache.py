"""JobViewCache: who gets a cached view, how long it lives, cancels, and shared reads."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import msgspec
import pytest

from gateway.domain_errors import NotFound
from gateway.job_schemas import JobSpec, JobView
from gateway.job_service import job_visible_to
from gateway.job_view_cache import JobViewCache
from gateway.principal import Principal, Role

NOW = datetime(2024, 1, 1, tzinfo=UTC)


def view(job_id: str = "job-1", *, tenant: str = "t1", owner: str = "alice", desired: str = "run") -> JobView:
    return JobView(
        id=job_id,
        name="n",
        tenant_id=tenant,
        owner=owner,
        state="running",
        desired_state=desired,
        state_reason=None,
        slurm_job_id="42",
        exit_code=None,
        labels={},
        spec=JobSpec(name="n", command=["true"]),
        created_at=NOW,
        updated_at=NOW,
        submitted_at=None,
        started_at=None,
        ended_at=None,
    )


def principal(user: str, tenant: str | None, *roles: Role) -> Principal:
    return Principal(user=user, tenant_id=tenant, roles=frozenset(roles))


ALICE = principal("alice", "t1", "user")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingReader:
    """A database read stand-in: returns ``result`` (or raises it) and counts calls."""

    def __init__(self, result: JobView | Exception, *, gate: asyncio.Event | None = None) -> None:
        self.result = result
        self.calls = 0
        self.gate = gate

    async def __call__(self) -> JobView:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def cached(cache: JobViewCache, job: JobView, who: Principal = ALICE) -> None:
    asyncio.run(cache.view(job.id, who, CountingReader(job)))


@pytest.mark.parametrize(
    ("caller", "visible"),
    [
        (principal("alice", "t1", "user"), True),
        (principal("carol", "t1", "user"), False),
        (principal("alice", "t2", "user"), False),
        (principal("ta", "t1", "tenant-admin"), True),
        (principal("tb", "t2", "tenant-admin"), False),
        (principal("root", None, "admin"), True),
        (principal("fin", None, "finance"), False),
    ],
)
def test_cached_view_only_goes_to_callers_who_may_see_the_job(caller: Principal, visible: bool) -> None:
    assert job_visible_to(caller, tenant_id="t1", owner="alice") is visible
    cache = JobViewCache(ttl_s=1.0)
    cached(cache, view())
    assert (cache.lookup("job-1", caller) is not None) is visible


def test_view_expires_after_ttl() -> None:
    clock = FakeClock()
    cache = JobViewCache(ttl_s=1.0, clock=clock)
    cached(cache, view())
    clock.now += 0.999
    assert cache.lookup("job-1", ALICE) == view()
    clock.now += 0.001
    assert cache.lookup("job-1", ALICE) is None


def test_zero_ttl_never_caches() -> None:
    cache = JobViewCache(ttl_s=0)
    cached(cache, view())
    assert cache.lookup("job-1", ALICE) is None


def test_memory_is_bounded_by_max_entries() -> None:
    cache = JobViewCache(ttl_s=10.0, max_entries=2)
    for number in range(3):
        cached(cache, view(f"job-{number}"))
    assert [cache.lookup(f"job-{number}", ALICE) is not None for number in range(3)] == [False, True, True]


def test_hit_does_not_read_the_database() -> None:
    async def scenario() -> int:
        cache = JobViewCache(ttl_s=1.0)
        reader = CountingReader(view())
        for _ in range(3):
            assert await cache.view("job-1", ALICE, reader) == view()
        return reader.calls

    assert asyncio.run(scenario()) == 1


def test_invalidate_forgets_and_drops_reads_that_may_predate_the_change() -> None:
    async def scenario() -> tuple[str, str, int]:
        cache = JobViewCache(ttl_s=10.0)
        gate = asyncio.Event()
        before_cancel = CountingReader(view(), gate=gate)
        stale_read = asyncio.ensure_future(cache.view("job-1", ALICE, before_cancel))
        await asyncio.sleep(0)
        cache.invalidate("job-1")  # the cancel committed while that read was in flight
        after_cancel = CountingReader(view(desired="cancel"))
        fresh = await cache.view("job-1", ALICE, after_cancel)
        gate.set()
        await stale_read
        again = await cache.view("job-1", ALICE, CountingReader(view()))
        return fresh.desired_state, again.desired_state, after_cancel.calls

    assert asyncio.run(scenario()) == ("cancel", "cancel", 1)


def test_concurrent_misses_of_one_caller_share_one_read() -> None:
    async def scenario() -> tuple[int, int]:
        cache = JobViewCache(ttl_s=1.0)
        gate = asyncio.Event()
        reader = CountingReader(view(), gate=gate)
        waiting = [asyncio.ensure_future(cache.view("job-1", ALICE, reader)) for _ in range(5)]
        await asyncio.sleep(0)
        gate.set()
        views = await asyncio.gather(*waiting)
        return reader.calls, len({id(found) for found in views})

    assert asyncio.run(scenario()) == (1, 1)


def test_not_found_is_neither_cached_nor_shared_with_other_callers() -> None:
    async def scenario() -> tuple[int, JobView]:
        cache = JobViewCache(ttl_s=1.0)
        gate = asyncio.Event()
        missing = CountingReader(NotFound("job 'job-1' not found"), gate=gate)
        carol = principal("carol", "t1", "user")
        carols_read = asyncio.ensure_future(cache.view("job-1", carol, missing))
        await asyncio.sleep(0)
        alices_read = asyncio.ensure_future(cache.view("job-1", ALICE, CountingReader(view())))
        gate.set()
        with pytest.raises(NotFound):
            await carols_read
        with pytest.raises(NotFound):
            await cache.view("job-1", carol, missing)
        return missing.calls, await alices_read

    calls, alices = asyncio.run(scenario())
    assert calls == 2
    assert msgspec.to_builtins(alices) == msgspec.to_builtins(view())


def test_a_caller_going_away_does_not_cancel_the_shared_read() -> None:
    async def scenario() -> JobView:
        cache = JobViewCache(ttl_s=1.0)
        gate = asyncio.Event()
        reader = CountingReader(view(), gate=gate)
        leaving = asyncio.ensure_future(cache.view("job-1", ALICE, reader))
        staying = asyncio.ensure_future(cache.view("job-1", ALICE, reader))
        await asyncio.sleep(0)
        leaving.cancel()
        gate.set()
        return await staying

    assert asyncio.run(scenario()) == view()
