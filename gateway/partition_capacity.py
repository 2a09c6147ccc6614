"""Partition capacity and start estimates, cached so API traffic never becomes Slurm traffic.

Every request shares one snapshot of ``driver.partitions()`` that is at most ``ttl_s`` old; a
lock makes concurrent requests on an expired snapshot wait for ONE refresh instead of each
calling sinfo. Start estimates (``sbatch --test-only`` behind ``driver.estimate_start``) are
cached per job shape the same way and serialized, which also rate-limits them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

import msgspec

from slurm.batch_job import BatchJob
from slurm.observations import PartitionCapacity

DEFAULT_CAPACITY_TTL_S = 5.0
DEFAULT_ESTIMATE_TTL_S = 15.0
# Bounds the estimate cache: shapes are user-chosen, so their number must not grow unbounded.
MAX_CACHED_ESTIMATES = 256


class CapacitySource(Protocol):
    """The slice of the Slurm driver this module needs."""

    def partitions(self) -> list[PartitionCapacity]:
        """Capacity of every partition."""
        ...

    def estimate_start(self, job: BatchJob) -> int | None:
        """Epoch seconds when Slurm expects ``job`` could start, or None."""
        ...


class CapacitySnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Every partition's capacity as of ``observed_at``."""

    partitions: tuple[PartitionCapacity, ...]
    observed_at: datetime


class EstimateShape(msgspec.Struct, frozen=True, kw_only=True):
    """What a start estimate depends on (the cache key)."""

    partition: str
    nodes: int
    gpus_per_node: int
    time_limit_minutes: int
    account: str
    unix_user: str


class PartitionCapacityCache:
    """Shared, time-limited cache of partition capacity and start estimates."""

    def __init__(
        self,
        source: CapacitySource,
        *,
        capacity_ttl_s: float = DEFAULT_CAPACITY_TTL_S,
        estimate_ttl_s: float = DEFAULT_ESTIMATE_TTL_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Cache ``source``'s answers for the given times."""
        self._source = source
        self._capacity_ttl_s = capacity_ttl_s
        self._estimate_ttl_s = estimate_ttl_s
        self._monotonic = monotonic
        self._capacity_lock = threading.Lock()
        self._estimate_lock = threading.Lock()
        self._snapshot: tuple[float, CapacitySnapshot] | None = None
        self._estimates: dict[EstimateShape, tuple[float, int | None]] = {}

    def capacity(self) -> CapacitySnapshot:
        """The current snapshot, refreshed from Slurm when older than the TTL.

        Raises SlurmUnavailable (from the driver) when a refresh is due and Slurm is down.
        """
        with self._capacity_lock:
            now = self._monotonic()
            if self._snapshot is None or now - self._snapshot[0] >= self._capacity_ttl_s:
                partitions = tuple(self._source.partitions())
                self._snapshot = (now, CapacitySnapshot(partitions=partitions, observed_at=datetime.now(UTC)))
            return self._snapshot[1]

    def estimate_start(self, shape: EstimateShape, job: BatchJob) -> int | None:
        """Slurm's start estimate for ``job``, cached under ``shape``."""
        with self._estimate_lock:
            now = self._monotonic()
            cached = self._estimates.get(shape)
            if cached is not None and now - cached[0] < self._estimate_ttl_s:
                return cached[1]
            estimate = self._source.estimate_start(job)
            if len(self._estimates) >= MAX_CACHED_ESTIMATES:
                ttl_s = self._estimate_ttl_s
                fresh = {key: value for key, value in self._estimates.items() if now - value[0] < ttl_s}
                self._estimates = fresh
            self._estimates[shape] = (now, estimate)
            return estimate
