"""Which fabric settings a job gets: the operator's per-partition table, applied by the drivers."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from slurm.batch_job import BatchJob, PartitionFabric
from slurm.runtime_validation import validate_fabric


class PartitionFabrics:
    """Fabric settings per partition, with a default for partitions the table does not name."""

    def __init__(self, by_partition: Mapping[str, PartitionFabric], default: PartitionFabric | None) -> None:
        """Raises JobSpecError (field ``fabric.*``) for a setting that may not reach a shell."""
        for fabric in (*by_partition.values(), *((default,) if default is not None else ())):
            validate_fabric(fabric)
        self._by_partition = dict(by_partition)
        self._default = default

    def for_partition(self, partition: str) -> PartitionFabric | None:
        """The settings for ``partition`` (None: no fabric settings at all)."""
        return self._by_partition.get(partition, self._default)

    def apply(self, job: BatchJob) -> BatchJob:
        """``job`` with its partition's fabric settings."""
        return msgspec.structs.replace(job, fabric=self.for_partition(job.partition))
