"""The one interface the gateway uses to reach Slurm; drivers implement it.

Drivers: ``slurm.cli_driver.CliSlurmDriver`` (sbatch/squeue/sacct/scancel/sinfo, the default)
and ``slurm.rest_driver.RestSlurmDriver`` (slurmrestd v0.0.38). Both translate I/O failures into
``SlurmUnavailable`` and Slurm's refusals into ``SlurmRejected`` with a cleaned message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from slurm.batch_job import BatchJob
from slurm.observations import JobObservation, PartitionCapacity


class SlurmDriver(Protocol):
    """Submit, observe and cancel jobs; read partition capacity."""

    def submit(self, job: BatchJob) -> str:
        """Submit ``job`` as its Unix user under its account; return the Slurm job id."""
        ...

    def find_submitted(self, gateway_job_ids: Sequence[str]) -> dict[str, str]:
        """Slurm job ids of jobs carrying these gateway ids in their comment (queued or ended)."""
        ...

    def poll(self, slurm_job_ids: Sequence[str]) -> dict[str, JobObservation]:
        """One batched look at these jobs: squeue for queued ones, then sacct for the rest.

        Jobs Slurm does not know (yet) are absent from the result.
        """
        ...

    def cancel(self, slurm_job_id: str) -> None:
        """Cancel the job; cancelling a job that already ended is not an error."""
        ...

    def partitions(self) -> list[PartitionCapacity]:
        """Capacity of every partition."""
        ...

    def estimate_start(self, job: BatchJob) -> int | None:
        """When Slurm would start ``job`` now (epoch seconds), or None where it offers no estimate.

        Nothing is submitted; refusals raise SlurmRejected as ``submit`` would.
        """
        ...
