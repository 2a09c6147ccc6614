"""Admission: a JobSpec plus the tenant's policy becomes a normalized spec, then a BatchJob.

Pure functions (no database, no Slurm, no HTTP). Every refusal is a JobSpecError naming the
JobSpec field and saying how to fix it. ``admit_job`` runs in the request (policy checks, then
the same validation the renderers apply, so a stored job is one Slurm can be given); the
submitter later calls ``batch_job_from_spec`` on the stored, admitted spec.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import TypeVar

import msgspec

from gateway.job_schemas import JobSpec, RunSpec
from slurm.batch_job import BatchJob, Runtime
from slurm.errors import JobSpecError
from slurm.job_layout import DEFAULT_STEP_NAME
from slurm.job_validation import MAX_MEMORY_MB_PER_NODE, validate_array_spec, validate_batch_job
from slurm.time_limits import parse_time_limit

# Each runtime but "script" has an options field of its own name in the JobSpec.
RUNTIME_OPTION_FIELDS = ("mpi", "ray", "julia", "torchrun")
SUPPORTED_RUNTIMES = frozenset({"script", *RUNTIME_OPTION_FIELDS})
# Used when the spec gives none; one hour keeps forgotten jobs from holding nodes for days.
DEFAULT_TIME_LIMIT = "60"

SpecT = TypeVar("SpecT", bound=RunSpec)

_MEMORY_PATTERN = re.compile(r"^(?P<amount>[0-9]{1,12})(?P<unit>[KMGT]?)B?$", re.IGNORECASE)
_MB_PER_UNIT = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}


class TenantPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """What a tenant may use: partitions (first = default) and QOS."""

    allowed_partitions: tuple[str, ...]
    allowed_qos: tuple[str, ...]
    default_qos: str | None = None


def admit_job(
    spec: JobSpec,
    policy: TenantPolicy,
    *,
    gateway_job_id: str,
    unix_user: str,
    account: str,
    working_dir: str,
) -> tuple[JobSpec, BatchJob]:
    """Admit ``spec`` (see admit_job_spec) and validate the BatchJob it becomes.

    Returns the admitted spec (what to store) and its BatchJob; raises JobSpecError.
    """
    admitted = admit_job_spec(spec, policy)
    batch_job = batch_job_from_spec(
        admitted, gateway_job_id=gateway_job_id, unix_user=unix_user, account=account, working_dir=working_dir
    )
    validate_batch_job(batch_job)
    return admitted, batch_job


def job_working_dir(job_root: str, tenant_id: str, gateway_job_id: str) -> str:
    """The job's directory on shared storage: ``<job_root>/<tenant>/<job id>``."""
    return str(PurePosixPath(job_root) / tenant_id / gateway_job_id)


def admit_job_spec(spec: SpecT, policy: TenantPolicy) -> SpecT:
    """Check ``spec`` against the tenant's policy and return it with defaults resolved.

    Fills in the partition (the tenant's first), the QOS (the tenant's default), the time limit
    (DEFAULT_TIME_LIMIT) and the normalized array expression. Raises JobSpecError.
    """
    _check_runtime(spec)
    if (spec.command is None) == (spec.script is None):
        raise JobSpecError("command", "give exactly one of 'command' (an argv list) and 'script' (a body)")
    if spec.switches_wait is not None:
        if spec.switches is None:
            raise JobSpecError("switches_wait", "a wait needs 'switches'; set it or drop the wait")
        _switches_wait_minutes(spec.switches_wait)
    time_limit = spec.time_limit if spec.time_limit is not None else DEFAULT_TIME_LIMIT
    parse_time_limit(time_limit)
    if spec.memory is not None:
        memory_mb(spec.memory)
    return msgspec.structs.replace(
        spec,
        partition=_resolve_partition(spec.partition, policy.allowed_partitions),
        qos=_resolve_qos(spec.qos, policy),
        time_limit=time_limit,
        array=validate_array_spec(spec.array) if spec.array is not None else None,
    )


def batch_job_from_spec(
    spec: RunSpec,
    *,
    gateway_job_id: str,
    unix_user: str,
    account: str,
    working_dir: str,
    attempt: int = 1,
    step_name: str = DEFAULT_STEP_NAME,
    dependencies: tuple[str, ...] = (),
) -> BatchJob:
    """The BatchJob for ``attempt`` of an admitted spec (see admit_job_spec); raises JobSpecError.

    ``step_name`` names the step's outputs and heartbeat (slurm.job_layout); ``dependencies``
    are the Slurm job ids it must wait for (afterok).
    """
    if spec.partition is None or spec.time_limit is None:
        raise JobSpecError("partition" if spec.partition is None else "time_limit", "spec was not admitted")
    return BatchJob(
        gateway_job_id=gateway_job_id,
        name=spec.name,
        unix_user=unix_user,
        account=account,
        partition=spec.partition,
        working_dir=working_dir,
        time_limit_minutes=parse_time_limit(spec.time_limit),
        script=spec.script,
        command=tuple(spec.command) if spec.command is not None else None,
        qos=spec.qos,
        nodes=spec.nodes,
        tasks_per_node=spec.tasks_per_node,
        cpus_per_task=spec.cpus_per_task,
        gpus_per_node=spec.gpus_per_node,
        gpu_type=spec.gpu_type,
        memory_mb_per_node=memory_mb(spec.memory) if spec.memory is not None else None,
        constraints=tuple(spec.constraints),
        env=dict(spec.env),
        array=spec.array,
        runtime=_runtime(spec),
        exclusive=spec.exclusive,
        switches=spec.switches,
        switches_wait_minutes=(
            _switches_wait_minutes(spec.switches_wait) if spec.switches_wait is not None else None
        ),
        attempt=attempt,
        step_name=step_name,
        dependencies=dependencies,
        heartbeat=spec.heartbeat.source if spec.heartbeat is not None else "wrapper",
        signal_before_limit_s=spec.signal_before_limit_s,
    )


def memory_mb(text: str) -> int:
    """Megabytes for a Slurm-style memory size ("4G", "500M", "4000" = MB, "512K" rounds up)."""
    match = _MEMORY_PATTERN.match(text.strip())
    if match is None:
        raise JobSpecError("memory", f"{text!r} is not a memory size; use e.g. '500M' or '4G'")
    megabytes = math.ceil(int(match["amount"]) * _MB_PER_UNIT[match["unit"].upper()])
    if megabytes < 1:
        raise JobSpecError("memory", "memory must be at least 1M")
    if megabytes > MAX_MEMORY_MB_PER_NODE:
        limit_tb = MAX_MEMORY_MB_PER_NODE // (1024 * 1024)
        raise JobSpecError("memory", f"memory must be at most {limit_tb}T per node")
    return megabytes


def _check_runtime(spec: RunSpec) -> None:
    if spec.runtime not in SUPPORTED_RUNTIMES:
        supported = ", ".join(sorted(SUPPORTED_RUNTIMES))
        raise JobSpecError("runtime", f"unknown runtime {spec.runtime!r}; supported: {supported}")
    for field in RUNTIME_OPTION_FIELDS:
        if getattr(spec, field) is not None and spec.runtime != field:
            raise JobSpecError(field, f'options for runtime {field!r} need "runtime": "{field}"')
    if spec.runtime != "script" and spec.command is None:
        raise JobSpecError(
            "command", f"runtime {spec.runtime!r} runs a command (an argv list); give 'command', not 'script'"
        )


def _switches_wait_minutes(text: str) -> int:
    try:
        return parse_time_limit(text)
    except JobSpecError as exc:
        raise JobSpecError("switches_wait", exc.message.replace("time limit", "wait")) from exc


def _runtime(spec: RunSpec) -> Runtime:
    # The API's option structs mirror the domain's runtime structs field for field.
    options = getattr(spec, spec.runtime, None) if spec.runtime != "script" else None
    fields = msgspec.to_builtins(options) if options is not None else {}
    return msgspec.convert({**fields, "kind": spec.runtime}, Runtime)


def _resolve_partition(partition: str | None, allowed: Sequence[str]) -> str:
    if not allowed:
        raise JobSpecError("partition", "this tenant may not use any partition; ask your tenant admin")
    if partition is None:
        return allowed[0]
    if partition not in allowed:
        choices = ", ".join(allowed)
        raise JobSpecError(
            "partition", f"partition {partition!r} is not allowed for this tenant; allowed: {choices}"
        )
    return partition


def _resolve_qos(qos: str | None, policy: TenantPolicy) -> str | None:
    if qos is None:
        return policy.default_qos
    if qos not in policy.allowed_qos:
        allowed = ", ".join(policy.allowed_qos) or "none"
        raise JobSpecError("qos", f"QOS {qos!r} is not allowed for this tenant; allowed: {allowed}")
    return qos
