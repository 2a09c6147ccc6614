"""msgspec Structs of the jobs API: the JobSpec request, the JobView response and JobList pages.

Bounds live here (Meta) so a request that is structurally wrong never reaches admission; the
checks that need the tenant's policy or Slurm's syntax rules live in gateway.job_admission.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from slurm.errors import JobSpecError

# Bounds well above what the dev or a real cluster offers, low enough to stop nonsense early.
Count = Annotated[int, msgspec.Meta(ge=1, le=4096)]
GpuCount = Annotated[int, msgspec.Meta(ge=0, le=64)]
# Slurm names (partitions, QOS, GRES types, node features): a conservative allow-list.
SlurmName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
JobName = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
Argument = Annotated[str, msgspec.Meta(max_length=4096)]
ScriptBody = Annotated[str, msgspec.Meta(min_length=1, max_length=256 * 1024)]
MemoryText = Annotated[str, msgspec.Meta(min_length=1, max_length=16)]
TimeLimitText = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
ArrayText = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
EnvName = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
EnvValue = Annotated[str, msgspec.Meta(max_length=4096)]
# Kubernetes-like label keys: lower-case, digits, ".", "_", "-", "/" inside; 63 chars (the column).
LabelKey = Annotated[
    str, msgspec.Meta(min_length=1, max_length=63, pattern=r"^[a-z0-9]([a-z0-9._/-]*[a-z0-9])?$")
]
LabelValue = Annotated[str, msgspec.Meta(max_length=255, pattern=r"^[A-Za-z0-9._:/@+-]*$")]

# Programs a runtime starts (python3, /opt/julia/bin/julia) and directories it uses: no shell
# syntax, no leading "-"; slurm.runtime_validation re-checks them before rendering.
ProgramPath = Annotated[
    str, msgspec.Meta(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.+/][A-Za-z0-9_.+,=@/-]*$")
]
DirectoryPath = Annotated[
    str, msgspec.Meta(min_length=1, max_length=1024, pattern=r"^/[A-Za-z0-9_.+,=@/-]*$")
]
TimeoutSeconds = Annotated[int, msgspec.Meta(ge=10, le=3600)]

MAX_COMMAND_ARGS = 256
MAX_CONSTRAINTS = 16
MAX_ENV_VARS = 128
MAX_LABELS = 32
MAX_ATTEMPTS = 10
MAX_STEPS = 32
MAX_INPUTS = 256
MAX_OUTPUT_PATTERNS = 64
# Longest wait before an automatic retry, whatever the exponential backoff comes to.
MAX_RETRY_BACKOFF_S = 3600

# Slurm outcomes a retry policy may name (CANCELLED is deliberately absent: never retried).
# HUNG: the gateway cancelled the attempt because its heartbeat went stale.
RetryOutcome = Literal["NODE_FAIL", "PREEMPTED", "TIMEOUT", "BOOT_FAIL", "OUT_OF_MEMORY", "FAILED", "HUNG"]
RetryExitCode = Annotated[int, msgspec.Meta(ge=1, le=255)]


class MpiOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Options of runtime "mpi": ``command`` runs as nodes x tasks_per_node ranks."""

    # "srun": srun --mpi=pmix; "mpirun": Open MPI's launcher inside the allocation.
    launcher: Literal["srun", "mpirun"] = "srun"
    gpu_bind: Literal["closest", "none"] | None = None


class RayOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Options of runtime "ray": ``command`` is the driver, run once every node joined."""

    python: ProgramPath = "python3"
    # Per node; default 30 % of ``memory``; must stay below it.
    object_store_mb: Annotated[int, msgspec.Meta(ge=78, le=16 * 1024 * 1024)] | None = None
    join_timeout_s: TimeoutSeconds = 120


class JuliaOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Options of runtime "julia": ``command`` is [script.jl, args...], one worker per task."""

    julia: ProgramPath = "julia"
    # Default: the job's working directory.
    project: DirectoryPath | None = None
    # Default: <working directory>/.julia-depot (shared storage).
    depot_path: DirectoryPath | None = None
    worker_timeout_s: TimeoutSeconds = 300


class TorchrunOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Options of runtime "torchrun": ``command`` is [train.py, args...]."""

    python: ProgramPath = "python3"
    # Default: gpus_per_node, or tasks_per_node without GPUs.
    nproc_per_node: Annotated[int, msgspec.Meta(ge=1, le=256)] | None = None


class RetryPolicy(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """When the gateway submits a job again by itself (like AWS Batch's evaluateOnExit).

    An attempt that ends in a Slurm state listed in ``on_states`` is retried; a FAILED attempt
    is also retried when its exit code is in ``on_exit_codes``. The n-th retry waits
    ``backoff_s * 2**(n-1)`` seconds, at most MAX_RETRY_BACKOFF_S.
    """

    # Attempts in all, the first included: 1 means never retry.
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=MAX_ATTEMPTS)] = 1
    backoff_s: Annotated[int, msgspec.Meta(ge=0, le=MAX_RETRY_BACKOFF_S)] = 10
    # Default: the outcomes that are the cluster's fault, not the program's.
    on_states: Annotated[list[RetryOutcome], msgspec.Meta(max_length=7)] = msgspec.field(
        default_factory=lambda: ["NODE_FAIL", "BOOT_FAIL", "PREEMPTED"]
    )
    on_exit_codes: Annotated[list[RetryExitCode], msgspec.Meta(max_length=255)] = msgspec.field(
        default_factory=list
    )


class HeartbeatOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """How the gateway tells a hung attempt from a slow one.

    ``wrapper`` (default): the generated script touches the heartbeat file every few seconds,
    so a frozen node or a hung shared filesystem goes stale; ``program``: only the program
    does (``touch "$SGW_HEARTBEAT_FILE"``), so a program stuck in a loop or a deadlock goes
    stale too; ``off``: no hang detection. A running attempt whose last beat is older than
    ``stale_after_s`` (default: the gateway's ``workers.heartbeat_stale_s``, 10 s) is cancelled
    and ends ``hung``, which a retry policy may retry (outcome ``HUNG``). Nothing is judged
    before the first beat.
    """

    source: Literal["wrapper", "program", "off"] = "wrapper"
    stale_after_s: Annotated[int, msgspec.Meta(ge=5, le=7 * 24 * 3600)] | None = None


class InputSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One file the gateway copies into the job's working directory before the job may start."""

    # Where, relative to the working directory: "data/train.csv".
    path: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    # A file in the tenant's namespace ("datasets/train.csv", see /v1/files), or an object of the
    # tenant's own on S3 ("s3://bucket/key", under one of the tenant's s3_input_prefixes).
    source: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    # Expected digest; for a stored file, its recorded sha256 is checked even without this.
    sha256: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")] | None = None


OutputPattern = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


class RunSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """What one Slurm job runs: the fields a plain job and each step of a multi-step job share."""

    name: JobName
    # "script" (default), "mpi", "ray", "julia" or "torchrun"; the runtime's options, if any,
    # go in the field of the same name ("mpi": {"launcher": "mpirun"}).
    runtime: SlurmName = "script"
    mpi: MpiOptions | None = None
    ray: RayOptions | None = None
    julia: JuliaOptions | None = None
    torchrun: TorchrunOptions | None = None
    # Exactly one of command (an argv list, run as is) and script (a bash script body); the
    # runtimes other than "script" take a command.
    command: Annotated[list[Argument], msgspec.Meta(min_length=1, max_length=MAX_COMMAND_ARGS)] | None = None
    script: ScriptBody | None = None
    # Default: the tenant's first allowed partition.
    partition: SlurmName | None = None
    nodes: Count = 1
    tasks_per_node: Count = 1
    cpus_per_task: Count = 1
    gpus_per_node: GpuCount = 0
    gpu_type: SlurmName | None = None
    # Per node, Slurm style: "4G", "500M", "4000" (MB).
    memory: MemoryText | None = None
    # Slurm formats: "30", "1:00:00", "2-12", "1-00:00:00", ...
    time_limit: TimeLimitText | None = None
    constraints: Annotated[list[SlurmName], msgspec.Meta(max_length=MAX_CONSTRAINTS)] = msgspec.field(
        default_factory=list
    )
    # Default: the tenant's default QOS.
    qos: SlurmName | None = None
    env: Annotated[dict[EnvName, EnvValue], msgspec.Meta(max_length=MAX_ENV_VARS)] = msgspec.field(
        default_factory=dict
    )
    array: ArrayText | None = None
    # Whole nodes for this job only.
    exclusive: bool = False
    # At most this many leaf switches (InfiniBand locality): 1 keeps the job under one leaf.
    switches: Annotated[int, msgspec.Meta(ge=1, le=64)] | None = None
    # How long to wait for that placement before taking any (Slurm time format: "10", "1:00:00").
    switches_wait: TimeLimitText | None = None
    # None: one attempt, no automatic retry.
    retry: RetryPolicy | None = None
    heartbeat: HeartbeatOptions | None = None
    # Slurm sends SIGUSR2 this many seconds before the time limit (--signal=B:USR2@secs), to
    # checkpoint; runtimes script, mpi and torchrun pass it on to the program.
    signal_before_limit_s: Annotated[int, msgspec.Meta(ge=10, le=65535)] | None = None
    # Staged in before the job can start; the job waits in state staging_in meanwhile.
    inputs: Annotated[list[InputSpec], msgspec.Meta(max_length=MAX_INPUTS)] = msgspec.field(
        default_factory=list
    )
    # Globs ("*.csv", "model/**") over what the completed attempt wrote to $SGW_OUTPUT_DIR,
    # uploaded to the tenant's namespace under jobs/<job id>/ (a step's: jobs/<job id>/<step>/)
    # before the job counts as completed. A pattern that matches nothing fails the job.
    outputs: Annotated[list[OutputPattern], msgspec.Meta(max_length=MAX_OUTPUT_PATTERNS)] = msgspec.field(
        default_factory=list
    )


class StepSpec(RunSpec, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One step of a multi-step job: its own runtime and resources, after the steps it names.

    Each step is its own Slurm job, submitted with --dependency=afterok on the Slurm jobs of
    the steps in ``after``; it reads their outputs under $SGW_OUTPUTS_DIR/<step>.
    """

    after: Annotated[list[JobName], msgspec.Meta(max_length=MAX_STEPS)] = msgspec.field(default_factory=list)


class JobSpec(RunSpec, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """What a user asks to run (POST /v1/jobs): one program, or ``steps`` with dependencies.

    With ``steps``, only ``name``, ``labels`` and ``steps`` may be set at the top level; every
    other field belongs to each step.
    """

    labels: Annotated[dict[LabelKey, LabelValue], msgspec.Meta(max_length=MAX_LABELS)] = msgspec.field(
        default_factory=dict
    )
    steps: Annotated[list[StepSpec], msgspec.Meta(min_length=1, max_length=MAX_STEPS)] | None = None


class AttemptView(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt of a job: its Slurm job and its state (the job's own state for the current one)."""

    attempt: int
    slurm_job_id: str | None
    state: str
    state_reason: str | None
    exit_code: int | None
    submitted_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None


class OutputFileView(msgspec.Struct, frozen=True, kw_only=True):
    """One published output of a completed attempt, as its manifest recorded it."""

    path: str
    sha256: str
    size: int


class StagedFileView(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One staged file: an input as written into the working directory, or an uploaded output
    (``path`` in the tenant's namespace, downloadable from /v1/files)."""

    path: str
    sha256: str
    size: int
    source: str | None = None


class StagingView(msgspec.Struct, frozen=True, kw_only=True):
    """Stage-in and stage-out of a job or step: pending, running, done or failed (None: none)."""

    stage_in: str | None
    stage_out: str | None
    inputs: list[StagedFileView]
    outputs: list[StagedFileView]
    bytes_in: int
    bytes_out: int
    stage_in_seconds: float | None
    stage_out_seconds: float | None
    error: str | None


class ProgressView(msgspec.Struct, frozen=True, kw_only=True):
    """The latest progress the running attempt reported ($SGW_PROGRESS_FILE, read by the gateway).

    ``fraction`` is 0..1 (None: not given), ``message`` at most 500 characters, ``metrics`` the
    program's own numbers; ``reported_at`` is when the gateway first read this report.
    """

    fraction: float | None
    message: str | None
    metrics: dict[str, float]
    reported_at: datetime | None


class ArrayTaskView(msgspec.Struct, frozen=True, kw_only=True):
    """One task of a job array, as last observed."""

    task_id: int
    state: str
    exit_code: int | None = None
    reason: str | None = None


class StepView(msgspec.Struct, frozen=True, kw_only=True):
    """One step of a multi-step job: its own Slurm job, attempts, outputs and array tasks."""

    name: str
    after: list[str]
    state: str
    state_reason: str | None
    slurm_job_id: str | None
    exit_code: int | None
    attempt: int
    max_attempts: int
    attempts: list[AttemptView]
    # Under $SGW_OUTPUTS_DIR/<name> once the step completed (paths relative to it).
    outputs: list[OutputFileView] = msgspec.field(default_factory=list)
    array_tasks: list[ArrayTaskView] = msgspec.field(default_factory=list)
    staging: StagingView | None = None
    # The step's latest progress report (None until its program reports one).
    progress: ProgressView | None = None
    submitted_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None


class JobView(msgspec.Struct, frozen=True, kw_only=True):
    """A job as the API shows it: desired and observed state, times, the spec."""

    id: str
    name: str
    tenant_id: str
    owner: str
    state: str
    desired_state: str
    state_reason: str | None
    slurm_job_id: str | None
    exit_code: int | None
    # The current attempt (1 = the first), the policy's limit, and every attempt so far.
    attempt: int = 1
    max_attempts: int = 1
    attempts: list[AttemptView] = msgspec.field(default_factory=list)
    # A completed plain job's published outputs (<working dir>/outputs/main).
    outputs: list[OutputFileView] = msgspec.field(default_factory=list)
    array_tasks: list[ArrayTaskView] = msgspec.field(default_factory=list)
    # A multi-step job's steps, in the spec's order (empty for a plain job).
    steps: list[StepView] = msgspec.field(default_factory=list)
    # A plain job's stage-in and stage-out (steps carry their own).
    staging: StagingView | None = None
    # A plain job's latest progress report (None until its program reports one; steps carry their own).
    progress: ProgressView | None = None
    labels: dict[str, str]
    spec: JobSpec
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None


class JobList(msgspec.Struct, frozen=True, kw_only=True):
    """One page of jobs, newest first; ``next_cursor`` is absent on the last page."""

    items: list[JobView]
    next_cursor: str | None = None


class PartitionView(msgspec.Struct, frozen=True, kw_only=True):
    """Capacity of one partition, as of ``observed_at``."""

    name: str
    total_nodes: int
    idle_nodes: int
    allocated_nodes: int
    total_gpus: int
    allocated_gpus: int
    idle_gpus: int
    pending_jobs: int
    gpu_types: list[str]


class StartEstimate(msgspec.Struct, frozen=True, kw_only=True):
    """When Slurm expects a job of the asked shape to start (None: no estimate)."""

    partition: str
    nodes: int
    gpus_per_node: int
    time_limit_minutes: int
    expected_start: datetime | None


class PartitionList(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Partition capacity, plus a start estimate when a job shape was asked for."""

    items: list[PartitionView]
    observed_at: datetime
    estimate: StartEstimate | None = None


def decode_job_spec(body: bytes) -> JobSpec:
    """Decode a JSON request body into a JobSpec.

    Raises JobSpecError naming the offending field (a JSON path such as ``env`` or
    ``labels``) so the problem document can point at it.
    """
    try:
        return msgspec.json.decode(body, type=JobSpec)
    except msgspec.ValidationError as exc:
        field, message = _split_validation_message(str(exc))
        raise JobSpecError(field, message) from exc
    except msgspec.DecodeError as exc:
        raise JobSpecError("body", f"not valid JSON: {exc}") from exc


_PATH_MARKER = " - at `"
_KEY_MARKER = "key` in `"
_UNKNOWN_FIELD = "Object contains unknown field `"
_MISSING_FIELD = "Object missing required field `"


def _split_validation_message(text: str) -> tuple[str, str]:
    # msgspec says e.g. "Expected `int` >= 1 - at `$.nodes`", "... - at `key` in `$.labels`",
    # "... - at `$.env[...]`" or "Object contains unknown field `zzz`" (top level: no path).
    message, _, path = text.partition(_PATH_MARKER)
    if path.startswith(_KEY_MARKER):
        path = path.removeprefix(_KEY_MARKER)
        message = f"invalid key: {message}"
    field = path.rstrip("`").removeprefix("$").removeprefix(".").removesuffix("[...]")
    for prefix, explanation in (
        (_UNKNOWN_FIELD, "unknown field; see the JobSpec schema for the accepted fields"),
        (_MISSING_FIELD, "required field is missing"),
    ):
        if message.startswith(prefix):
            name = message.removeprefix(prefix).rstrip("`")
            return (f"{field}.{name}" if field else name), explanation
    return field or "body", message
