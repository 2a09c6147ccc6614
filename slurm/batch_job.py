"""The domain description of one Slurm batch submission, independent of HTTP and storage.

The gateway turns an API JobSpec plus the tenant's policy into a BatchJob; the drivers in this
package turn a BatchJob into a Slurm job. Every field here has already passed the gateway's
schema validation; the renderers still re-check everything that reaches a shell or an #SBATCH
line (control characters, env names), because generated shell is a security boundary.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from slurm.job_layout import DEFAULT_STEP_NAME

# Every Slurm job the gateway submits carries "<prefix><gateway job id>" in --comment, so after a
# crash between sbatch and recording the Slurm id the job is found in Slurm, not submitted twice.
GATEWAY_COMMENT_PREFIX = "sgw:"
# Attempts after the first add "<separator><attempt>" ("sgw:job-1f2e:a2"), so the lookup for one
# attempt never mistakes another attempt's Slurm job for its own ("#" would end an #SBATCH value).
ATTEMPT_SEPARATOR = ":a"


def attempt_comment_key(gateway_job_id: str, attempt: int) -> str:
    """What follows GATEWAY_COMMENT_PREFIX in the comment of ``attempt`` of the job.

    Attempt 1 keeps the bare gateway id (jobs submitted before attempts existed look the same);
    this is also the key ``SlurmDriver.find_submitted`` matches and parsers report.
    """
    return gateway_job_id if attempt == 1 else f"{gateway_job_id}{ATTEMPT_SEPARATOR}{attempt}"


class ScriptRuntime(msgspec.Struct, frozen=True, kw_only=True, tag="script", tag_field="kind"):
    """Run ``command`` or ``script`` as is, in the batch step."""


class MpiRuntime(msgspec.Struct, frozen=True, kw_only=True, tag="mpi", tag_field="kind"):
    """Run ``command`` as an MPI program: nodes x tasks_per_node ranks."""

    # "srun": srun --mpi=pmix (Slurm wires ranks up); "mpirun": Open MPI's launcher in the job.
    launcher: Literal["srun", "mpirun"] = "srun"
    # srun --gpu-bind: "closest" binds each rank to the GPUs nearest its CPUs.
    gpu_bind: Literal["closest", "none"] | None = None


class RayRuntime(msgspec.Struct, frozen=True, kw_only=True, tag="ray", tag_field="kind"):
    """A Ray cluster over the job's nodes; ``command`` is the driver, run on the first node."""

    # The Python that runs Ray's CLI module (python -m ray.scripts.scripts), on every node.
    python: str = "python3"
    # Plasma object store per node; None: 30 % of memory_mb_per_node (when given).
    object_store_mb: int | None = None
    # How long to wait for every node to join before giving up.
    join_timeout_s: int = 120


class JuliaRuntime(msgspec.Struct, frozen=True, kw_only=True, tag="julia", tag_field="kind"):
    """``command`` = [script.jl, args...]: driver in the batch step, one worker per task."""

    julia: str = "julia"
    # The Julia project (directory with Project.toml); None: the working directory.
    project: str | None = None
    # JULIA_DEPOT_PATH, on storage every node sees; None: <working_dir>/.julia-depot.
    depot_path: str | None = None
    # Seconds a worker may take to connect back (JULIA_WORKER_TIMEOUT) and to start.
    worker_timeout_s: int = 300


class TorchrunRuntime(msgspec.Struct, frozen=True, kw_only=True, tag="torchrun", tag_field="kind"):
    """``command`` = [train.py, args...] under torch.distributed.run, one launcher per node."""

    python: str = "python3"
    # Processes per node; None: gpus_per_node when GPUs are asked for, else tasks_per_node.
    nproc_per_node: int | None = None


# Who touches the attempt's heartbeat file: the generated wrapper, only the program, or nobody.
HeartbeatSource = Literal["wrapper", "program", "off"]

Runtime = ScriptRuntime | MpiRuntime | RayRuntime | JuliaRuntime | TorchrunRuntime


class PartitionFabric(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """How jobs on one partition use its network, from the gateway's configuration (not users).

    ``interface`` carries Ray, torch rendezvous and Julia worker traffic (its IPv4 address on
    each node); the other fields become the UCX/NCCL variables and any extra settings in ``env``
    (e.g. Open MPI's transport selection), exported before the runtime starts.
    """

    interface: str | None = None
    ucx_net_devices: str | None = None
    nccl_ib_hca: str | None = None
    nccl_socket_ifname: str | None = None
    env: dict[str, str] = msgspec.field(default_factory=dict)


class BatchJob(msgspec.Struct, frozen=True, kw_only=True):
    """One job, ready for a driver to submit."""

    gateway_job_id: str
    name: str
    unix_user: str
    account: str
    partition: str
    # Directory on storage every node sees (never /tmp: each dev node has a private /tmp).
    working_dir: str
    time_limit_minutes: int
    # Exactly one of script (a bash script body) and command (an argv list) is set.
    script: str | None = None
    command: tuple[str, ...] | None = None
    qos: str | None = None
    nodes: int = 1
    tasks_per_node: int = 1
    cpus_per_task: int = 1
    gpus_per_node: int = 0
    gpu_type: str | None = None
    memory_mb_per_node: int | None = None
    constraints: tuple[str, ...] = ()
    env: dict[str, str] = msgspec.field(default_factory=dict)
    # Slurm array expression, e.g. "0-99%8"; validated by slurm.job_validation.
    array: str | None = None
    runtime: Runtime = msgspec.field(default_factory=ScriptRuntime)
    # Whole nodes for this job only (--exclusive).
    exclusive: bool = False
    # --switches=<count>[@<wait>]: at most this many leaf switches, waiting up to the given
    # minutes for such a placement before taking any.
    switches: int | None = None
    switches_wait_minutes: int | None = None
    # Set by the driver from the partition's configuration, never from the job spec.
    fabric: PartitionFabric | None = None
    # Which attempt of the gateway job this submission is (1 = the first).
    attempt: int = 1
    # The step this job runs (slurm.job_layout): names its outputs, attempt dir and heartbeat.
    step_name: str = DEFAULT_STEP_NAME
    # Slurm job ids this job waits for (--dependency=afterok:<id>:<id>); ended ones are left out.
    dependencies: tuple[str, ...] = ()
    heartbeat: HeartbeatSource = "wrapper"
    # Seconds between the wrapper's touches of the heartbeat file.
    heartbeat_interval_s: int = 2
    # --signal=B:USR2@<seconds>: warn the job this long before its time limit.
    signal_before_limit_s: int | None = None

    @property
    def comment(self) -> str:
        """The --comment value that identifies this attempt of the job in Slurm."""
        return f"{GATEWAY_COMMENT_PREFIX}{attempt_comment_key(self.gateway_job_id, self.attempt)}"
