"""/v1/partitions: cluster capacity, plus a start estimate for a job shape when one is asked.

Capacity comes from a snapshot shared by every request (gateway.partition_capacity), so this
endpoint does not turn API traffic into sinfo calls. The estimate runs as the caller's Unix user
under the tenant's account (sbatch --test-only) and is cached per shape.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

from litestar import get
from litestar.datastructures import State
from litestar.params import QueryParameter
from sqlalchemy.orm import Session, sessionmaker

from gateway.auth import AuthenticatedPrincipal
from gateway.job_schemas import PartitionList, PartitionView, StartEstimate
from gateway.job_service import estimate_job
from gateway.partition_capacity import EstimateShape, PartitionCapacityCache
from gateway.principal import Principal


@get("/v1/partitions", tags=["partitions"], summary="Partition capacity and an optional start estimate")
async def list_partitions(
    state: State,
    principal: AuthenticatedPrincipal,
    *,
    partition: Annotated[str | None, QueryParameter(description="default: the tenant's first")] = None,
    nodes: Annotated[int | None, QueryParameter(ge=1, le=4096)] = None,
    gpus_per_node: Annotated[int | None, QueryParameter(ge=0, le=64)] = None,
    time_limit: Annotated[str | None, QueryParameter(description="Slurm format; default 60 min")] = None,
) -> PartitionList:
    """Capacity of every partition; with ``nodes``, ``gpus_per_node`` or ``time_limit`` also
    when Slurm expects a job of that shape (in ``partition``, default the tenant's first) to start.
    """
    cache: PartitionCapacityCache = state.partition_capacity
    snapshot = await asyncio.to_thread(cache.capacity)
    estimate = None
    if nodes is not None or gpus_per_node is not None or time_limit is not None:
        estimate = await asyncio.to_thread(
            _estimate,
            state,
            principal,
            partition=partition,
            nodes=nodes or 1,
            gpus_per_node=gpus_per_node or 0,
            time_limit=time_limit,
        )
    return PartitionList(
        items=[
            PartitionView(
                name=capacity.name,
                total_nodes=capacity.total_nodes,
                idle_nodes=capacity.idle_nodes,
                allocated_nodes=capacity.allocated_nodes,
                total_gpus=capacity.total_gpus,
                allocated_gpus=capacity.allocated_gpus,
                idle_gpus=capacity.idle_gpus,
                pending_jobs=capacity.pending_jobs,
                gpu_types=list(capacity.gpu_types),
            )
            for capacity in snapshot.partitions
        ],
        observed_at=snapshot.observed_at,
        estimate=estimate,
    )


def _estimate(
    state: State,
    principal: Principal,
    *,
    partition: str | None,
    nodes: int,
    gpus_per_node: int,
    time_limit: str | None,
) -> StartEstimate:
    session_factory: sessionmaker[Session] = state.session_factory
    cache: PartitionCapacityCache = state.partition_capacity
    with session_factory() as session:
        job = estimate_job(
            session,
            principal,
            job_root=state.config.slurm.job_root,
            partition=partition,
            nodes=nodes,
            gpus_per_node=gpus_per_node,
            time_limit=time_limit,
        )
    shape = EstimateShape(
        partition=job.partition,
        nodes=job.nodes,
        gpus_per_node=job.gpus_per_node,
        time_limit_minutes=job.time_limit_minutes,
        account=job.account,
        unix_user=job.unix_user,
    )
    expected = cache.estimate_start(shape, job)
    return StartEstimate(
        partition=job.partition,
        nodes=job.nodes,
        gpus_per_node=job.gpus_per_node,
        time_limit_minutes=job.time_limit_minutes,
        expected_start=datetime.fromtimestamp(expected, tz=UTC) if expected is not None else None,
    )
