"""What the drivers observe in Slurm, as plain records (no HTTP, no storage)."""

from __future__ import annotations

import msgspec


class ArrayTaskObservation(msgspec.Struct, frozen=True, kw_only=True):
    """One task of a job array, as the same poll saw it."""

    task_id: int
    # Slurm's base state word, as in JobObservation.state.
    state: str
    reason: str | None = None
    exit_code: int | None = None
    signal: int | None = None


class JobObservation(msgspec.Struct, frozen=True, kw_only=True):
    """One Slurm job's state as seen by one poll (squeue while queued, sacct after)."""

    slurm_job_id: str
    # Slurm's base state word: PENDING, RUNNING, COMPLETING, COMPLETED, FAILED, CANCELLED,
    # TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, PREEMPTED, ... ("CANCELLED by 0" becomes CANCELLED).
    state: str
    reason: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    node_list: str | None = None
    # Epoch seconds (UTC); None when Slurm has none yet.
    submit_time: int | None = None
    start_time: int | None = None
    end_time: int | None = None
    # Start estimate Slurm offers for a pending job, epoch seconds.
    expected_start_time: int | None = None
    # The gateway job id carried in --comment, when the job is one of ours.
    gateway_job_id: str | None = None
    # For a job array (this observation summarises it): every task Slurm reported, by task id.
    # Pending tasks Slurm still holds as one record ("123_[4-9]") count one entry per index.
    array_tasks: tuple[ArrayTaskObservation, ...] = ()

    @property
    def is_terminal(self) -> bool:
        """Whether the job can no longer change state."""
        return self.state in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
    }
)


class PartitionCapacity(msgspec.Struct, frozen=True, kw_only=True):
    """Capacity of one partition right now."""

    name: str
    total_nodes: int
    idle_nodes: int
    allocated_nodes: int
    total_gpus: int
    allocated_gpus: int
    idle_gpus: int
    pending_jobs: int
    gpu_types: tuple[str, ...] = ()
