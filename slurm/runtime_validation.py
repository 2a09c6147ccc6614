"""Validation of a BatchJob's runtime options, placement and partition fabric (allow-lists).

Runtime options reach the generated shell (program paths, directories) or the arithmetic of
the launch lines (counts), so they are checked as strictly as #SBATCH values; each
JobSpecError names the JobSpec field (``ray.python``, ``switches``) and says how to fix it.
"""

from __future__ import annotations

import re

from slurm.batch_job import (
    BatchJob,
    JuliaRuntime,
    MpiRuntime,
    PartitionFabric,
    RayRuntime,
    ScriptRuntime,
    TorchrunRuntime,
)
from slurm.errors import JobSpecError

# Program names or paths: no whitespace, quotes, "$", "#" or other shell syntax, no leading "-".
PROGRAM_PATTERN = re.compile(r"[A-Za-z0-9_.+/][A-Za-z0-9_.+,=@/-]{0,255}", re.ASCII)
# Directories (Julia project and depot): absolute, the working directory's alphabet.
DIRECTORY_PATTERN = re.compile(r"/[A-Za-z0-9_.+,=@/-]{0,1023}", re.ASCII)
INTERFACE_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,15}", re.ASCII)
# UCX_NET_DEVICES "mlx5_0:1,mlx5_1:1", NCCL_IB_HCA "=mlx5_0" or "^mlx5_2", NCCL_SOCKET_IFNAME "^lo,docker".
FABRIC_VALUE_PATTERN = re.compile(r"[A-Za-z0-9_.:,=^-]{1,256}", re.ASCII)
# Fabric variables may be lower-case (OMPI_MCA_btl); they come from the operator, not users.
FABRIC_ENV_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}", re.ASCII)
FABRIC_ENV_VALUE_PATTERN = re.compile(r"[A-Za-z0-9_.:,=^/+@-]{0,1024}", re.ASCII)
# Ray refuses an object store below 75 MiB.
MIN_OBJECT_STORE_MB = 78
MAX_TIMEOUT_S = 3600
MIN_TIMEOUT_S = 10
MAX_NPROC_PER_NODE = 256
MAX_SWITCHES = 64
MAX_SWITCHES_WAIT_MINUTES = 7 * 1440
RUNTIME_NAMES = {
    ScriptRuntime: "script",
    MpiRuntime: "mpi",
    RayRuntime: "ray",
    JuliaRuntime: "julia",
    TorchrunRuntime: "torchrun",
}


# The step wrapper passes USR2 on to the program's process; in these runtimes that is a shell
# whose default action on USR2 ends it and, with it, the node daemons it watches.
NO_USR2_RUNTIMES = (RayRuntime, JuliaRuntime)


def validate_runtime(job: BatchJob) -> None:
    """Check the runtime's options against the job; ScriptRuntime has none."""
    runtime = job.runtime
    name = RUNTIME_NAMES[type(runtime)]
    if job.signal_before_limit_s is not None and isinstance(runtime, NO_USR2_RUNTIMES):
        raise JobSpecError(
            "signal_before_limit_s",
            f"runtime {name!r} cannot pass a signal on to its program; it works for script, mpi and torchrun",
        )
    if isinstance(runtime, ScriptRuntime):
        return
    if job.command is None or job.script is not None:
        raise JobSpecError(
            "command", f"runtime {name!r} runs a command (an argv list); give 'command', not 'script'"
        )
    if job.command and job.command[0].startswith("-"):
        raise JobSpecError("command[0]", f"runtime {name!r} needs a program or script first, not an option")
    if isinstance(runtime, RayRuntime):
        _check_ray(job, runtime)
    elif isinstance(runtime, JuliaRuntime):
        _check_julia(runtime)
    elif isinstance(runtime, TorchrunRuntime):
        check_program("torchrun.python", runtime.python)
        if runtime.nproc_per_node is not None:
            _check_range("torchrun.nproc_per_node", runtime.nproc_per_node, 1, MAX_NPROC_PER_NODE)


def validate_placement(job: BatchJob) -> None:
    """``exclusive`` is a bool; ``switches`` a leaf count; ``switches_wait_minutes`` needs it."""
    if not isinstance(job.exclusive, bool):
        raise JobSpecError("exclusive", "must be true or false")
    if job.switches is not None:
        _check_range("switches", job.switches, 1, MAX_SWITCHES)
    if job.switches_wait_minutes is not None:
        if job.switches is None:
            raise JobSpecError(
                "switches_wait", "a wait for switches needs 'switches'; set it or drop the wait"
            )
        _check_range("switches_wait", job.switches_wait_minutes, 1, MAX_SWITCHES_WAIT_MINUTES)


def validate_fabric(fabric: PartitionFabric) -> None:
    """Check the operator's fabric settings as strictly as user input: they reach the shell too."""
    if fabric.interface is not None and not INTERFACE_PATTERN.fullmatch(fabric.interface):
        raise JobSpecError("fabric.interface", f"{fabric.interface!r} is not a network interface name")
    for field, value in (
        ("ucx_net_devices", fabric.ucx_net_devices),
        ("nccl_ib_hca", fabric.nccl_ib_hca),
        ("nccl_socket_ifname", fabric.nccl_socket_ifname),
    ):
        if value is not None and not FABRIC_VALUE_PATTERN.fullmatch(value):
            raise JobSpecError(f"fabric.{field}", f"{value!r} has characters not allowed in a fabric setting")
    for name, value in fabric.env.items():
        if not FABRIC_ENV_NAME_PATTERN.fullmatch(name) or name.startswith(("LD_", "SLURM_", "BASH")):
            raise JobSpecError("fabric.env", f"{name!r} is not an allowed variable name")
        if not FABRIC_ENV_VALUE_PATTERN.fullmatch(value):
            raise JobSpecError(f"fabric.env.{name}", "has characters not allowed in a fabric setting")


def check_program(field: str, value: str) -> str:
    """A program name or path the runtime starts (python3, /opt/julia/bin/julia)."""
    if not isinstance(value, str) or not PROGRAM_PATTERN.fullmatch(value):
        raise JobSpecError(
            field,
            "must be a program name or path of letters, digits and _ . + , = @ / - (not starting with -)",
        )
    return value


def check_directory(field: str, value: str) -> str:
    """An absolute directory without '..' components or shell syntax."""
    if not isinstance(value, str) or not DIRECTORY_PATTERN.fullmatch(value) or ".." in value.split("/"):
        raise JobSpecError(
            field, "must be an absolute path of letters, digits and _ . + , = @ / - without '..'"
        )
    return value


def _check_ray(job: BatchJob, runtime: RayRuntime) -> None:
    check_program("ray.python", runtime.python)
    _check_range("ray.join_timeout_s", runtime.join_timeout_s, MIN_TIMEOUT_S, MAX_TIMEOUT_S)
    if runtime.object_store_mb is not None:
        memory = job.memory_mb_per_node
        upper = memory - 1 if memory is not None else 1024 * 1024
        _check_range("ray.object_store_mb", runtime.object_store_mb, MIN_OBJECT_STORE_MB, upper)
    elif job.memory_mb_per_node is not None and job.memory_mb_per_node * 0.3 < MIN_OBJECT_STORE_MB:
        raise JobSpecError("memory", "a Ray job needs at least 260M per node (the object store takes 30 %)")


def _check_julia(runtime: JuliaRuntime) -> None:
    check_program("julia.julia", runtime.julia)
    if runtime.project is not None:
        check_directory("julia.project", runtime.project)
    if runtime.depot_path is not None:
        check_directory("julia.depot_path", runtime.depot_path)
    _check_range("julia.worker_timeout_s", runtime.worker_timeout_s, MIN_TIMEOUT_S, MAX_TIMEOUT_S)


def _check_range(field: str, value: int, minimum: int, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise JobSpecError(field, "must be a whole number")
    if not minimum <= value <= maximum:
        raise JobSpecError(field, f"must be between {minimum} and {maximum}, not {value}")
