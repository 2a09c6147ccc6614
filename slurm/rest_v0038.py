"""Slurm 22.05's slurmrestd data_parser v0.0.38: paths, request bodies and response mapping (pure).

This is the one place that knows the version-specific wire format; ``slurm.rest_driver`` only
moves bytes. What this cluster's slurmrestd (22.05.8) really does, as recorded in
tests/unit/fixtures/slurmrestd/:

- ``#SBATCH`` lines in ``script`` are ignored: every option travels in the ``job`` object, which
  must carry ``environment`` and ``current_working_directory``.
- Refusals come back as HTTP 500 with ``errors: [{error_code, error}]`` (submission) or
  ``errors: [{error_number, error, description, source}]`` (everything else). A submission that
  created a job answers 200 with ``job_id`` and possibly informational errors (2042 "held",
  2015 "partition configuration not available now": the job exists and waits).
- A bad or expired token is not a 401: reads answer 500 with error_number -1 "Unspecified
  error", submissions 500 with error_code 5005 "Zero Bytes were transmitted or received".
  Both are treated as SlurmUnavailable: the gateway's key or clock is wrong, not the user's job.
- slurmctld's ``/jobs`` reports ``exit_code`` as a raw wait status (256 = exit 1, 15 = signal
  15); slurmdbd's ``/jobs`` reports ``{status, return_code, signal}`` but says SUCCESS/0 for jobs
  that exited non-zero, so that pair is only trusted where the state agrees.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import msgspec

from slurm.array_summary import array_task_ids, summarize_array
from slurm.batch_job import GATEWAY_COMMENT_PREFIX, BatchJob
from slurm.errors import JobSpecError, SlurmOutputError, SlurmRejected, SlurmUnavailable
from slurm.job_layout import batch_log_pattern
from slurm.observations import TERMINAL_STATES, JobObservation, PartitionCapacity

PING_PATH = "/slurm/v0.0.38/ping"
SUBMIT_PATH = "/slurm/v0.0.38/job/submit"
JOBS_PATH = "/slurm/v0.0.38/jobs"
PARTITIONS_PATH = "/slurm/v0.0.38/partitions"
NODES_PATH = "/slurm/v0.0.38/nodes"
DB_JOBS_PATH = "/slurmdb/v0.0.38/jobs"

# The job's own environment is exported by the batch script; slurmrestd still requires one, and
# without PATH the script's first commands would not be found (sbatch --export=NONE parity).
BASE_ENVIRONMENT = {"PATH": "/usr/local/bin:/usr/bin:/bin"}

# Slurm error numbers (slurm_errno.h). 2000-2999 are ESLURM_* refusals of the request itself.
_REQUEST_ERRORS = range(2000, 3000)
ESLURM_INVALID_JOB_ID = 2017
ESLURM_ALREADY_DONE = 2021
ESLURM_REST_EMPTY_RESULT = 9003
# Which BatchJob / JobSpec field a refusal most likely points at.
_FIELD_BY_ERROR = {
    2000: "partition",  # ESLURM_INVALID_PARTITION_NAME
    2029: "constraints",  # ESLURM_INVALID_FEATURE
    2045: "account",  # ESLURM_INVALID_ACCOUNT
    2051: "time_limit",  # ESLURM_INVALID_TIME_LIMIT
    2066: "qos",  # ESLURM_INVALID_QOS
    2081: "array",  # ESLURM_INVALID_ARRAY
}
_MAX_MESSAGE_CHARS = 200


class RestError(msgspec.Struct, frozen=True):
    """One entry of a response's ``errors`` list, in either of the two shapes 22.05 uses."""

    number: int | None
    message: str


def job_path(slurm_job_id: str) -> str:
    """Path of one job (GET, POST update, DELETE cancel)."""
    return f"/slurm/v0.0.38/job/{quote(slurm_job_id, safe='')}"


def db_jobs_path(slurm_job_ids: Sequence[str]) -> str:
    """slurmdbd's listing restricted to these jobs (``step`` is sacct's --jobs filter here)."""
    return f"{DB_JOBS_PATH}?step={quote(','.join(slurm_job_ids), safe='')}"


def db_jobs_submitted_since_path(since_local_iso: str) -> str:
    """slurmdbd's listing of jobs submitted since ``since_local_iso`` (YYYY-MM-DDTHH:MM:SS, local time)."""
    return f"{DB_JOBS_PATH}?submit_time={quote(since_local_iso, safe='')}"


def submission_body(job: BatchJob, script: str) -> dict[str, Any]:
    """The POST /job/submit body: the script plus every option as a ``job`` property.

    ``script`` is ``slurm.batch_script.render_batch_script(job)``, which has validated ``job``;
    its #SBATCH lines are ignored by slurmrestd, so the properties repeat them. Raises
    JobSpecError for ``switches``: 22.05's parser lists required_switches and wait_for_switch
    but refuses both ("Operation not permitted"), so that placement needs the CLI driver. And
    for ``signal_before_limit_s``: 22.05 honours the "B:" (batch shell) prefix of ``signal``
    only inside sbatch and refuses "B:USR2@60" here ("Invalid SIGNAL specification"), while
    "USR2@60" never reaches the batch shell the gateway's script traps it in.
    """
    if job.switches is not None:
        raise JobSpecError(
            "switches",
            "slurmrestd 22.05 cannot place a job by leaf switches; drop 'switches' or use the cli driver",
        )
    if job.signal_before_limit_s is not None:
        raise JobSpecError(
            "signal_before_limit_s",
            "slurmrestd 22.05 cannot signal the batch script before the time limit; "
            "drop 'signal_before_limit_s' or use the cli driver",
        )
    properties: dict[str, Any] = {
        "name": job.name,
        "account": job.account,
        "partition": job.partition,
        # An integer: the [min, max] form the schema documents loses the node count in 22.05.
        "nodes": job.nodes,
        "tasks": job.nodes * job.tasks_per_node,
        "tasks_per_node": job.tasks_per_node,
        "cpus_per_task": job.cpus_per_task,
        "time_limit": job.time_limit_minutes,
        "comment": job.comment,
        # Slurm must not requeue on node failure behind the gateway's retry policy (as --no-requeue).
        "requeue": False,
        "current_working_directory": job.working_dir,
        "standard_output": batch_log_pattern(job.working_dir, "out", array=job.array is not None),
        "standard_error": batch_log_pattern(job.working_dir, "err", array=job.array is not None),
        "environment": {**BASE_ENVIRONMENT, **job.env},
    }
    optional = {
        "qos": job.qos,
        "gres": _gres(job),
        "memory_per_node": job.memory_mb_per_node,
        # "&": every listed feature is required.
        "constraints": "&".join(job.constraints) or None,
        "array": job.array,
        # Slurm job ids, each checked: the value is one string of Slurm's dependency syntax.
        "dependency": _afterok(job.dependencies),
    }
    if job.exclusive:
        # The values 22.05 accepts: "exclusive", "user", "mcs" (not "true", its schema says).
        optional["exclusive"] = "exclusive"
    properties.update({key: value for key, value in optional.items() if value is not None})
    return {"script": script, "job": properties}


def response_errors(body: Mapping[str, Any]) -> list[RestError]:
    """The ``errors`` of a decoded response body."""
    errors = []
    for entry in body.get("errors") or ():
        if not isinstance(entry, Mapping):
            continue
        number = entry.get("error_code", entry.get("error_number"))
        text = entry.get("error") or entry.get("description") or "unknown error"
        errors.append(RestError(number if isinstance(number, int) else None, _clean(str(text))))
    return errors


def submitted_job_id(status: int, body: Mapping[str, Any]) -> str:
    """The job id of a /job/submit answer; SlurmRejected or SlurmUnavailable when none was created."""
    job_id = body.get("job_id")
    if isinstance(job_id, int) and job_id > 0:
        return str(job_id)
    errors = response_errors(body)
    refusal = next((error for error in errors if error.number in _REQUEST_ERRORS), None)
    if refusal is not None:
        raise SlurmRejected(
            f"Slurm refused the job: {refusal.message}", field=_FIELD_BY_ERROR.get(refusal.number)
        )
    raise SlurmUnavailable(f"slurmrestd did not submit the job: {_summary(status, errors)}")


def checked_listing(status: int, body: Mapping[str, Any], key: str, what: str) -> list[Mapping[str, Any]]:
    """The ``key`` list of a read answer; SlurmUnavailable when slurmrestd reports errors.

    Reads never fail for user reasons, so any error (a bad token included) is unavailability,
    except slurmdbd's "Nothing found with query" for jobs it has no record of (yet): empty.
    """
    errors = [error for error in response_errors(body) if error.number != ESLURM_REST_EMPTY_RESULT]
    if status != 200 or errors:
        raise SlurmUnavailable(f"slurmrestd could not {what}: {_summary(status, errors)}")
    items = body.get(key)
    if not isinstance(items, list):
        raise SlurmOutputError(f"slurmrestd answer to {what} has no {key!r} list")
    return [item for item in items if isinstance(item, Mapping)]


def check_cancelled(status: int, body: Mapping[str, Any]) -> None:
    """Accept a DELETE /job/{id} answer; jobs that are unknown or already over count as cancelled."""
    errors = response_errors(body)
    if all(error.number in (ESLURM_INVALID_JOB_ID, ESLURM_ALREADY_DONE) for error in errors) and (
        status == 200 or errors
    ):
        return
    raise SlurmUnavailable(f"slurmrestd could not cancel the job: {_summary(status, errors)}")


def live_observation(record: Mapping[str, Any]) -> JobObservation:
    """A JobObservation from one slurmctld ``/jobs`` record (queued or recently ended)."""
    state = _base_state(record.get("job_state"))
    terminal = state in TERMINAL_STATES
    exit_code, signal = _wait_status(record.get("exit_code")) if terminal else (None, None)
    start = _epoch(record.get("start_time"))
    return JobObservation(
        slurm_job_id=str(record["job_id"]),
        state=state,
        reason=_reason(record.get("state_reason")),
        exit_code=exit_code,
        signal=signal,
        node_list=record.get("nodes") or None,
        submit_time=_epoch(record.get("submit_time")),
        # For a pending job slurmctld's start_time is its start estimate, not a start.
        start_time=None if state == "PENDING" else start,
        end_time=_epoch(record.get("end_time")) if terminal else None,
        expected_start_time=start if state == "PENDING" else None,
        gateway_job_id=live_gateway_id(record),
    )


def accounting_observation(record: Mapping[str, Any]) -> JobObservation:
    """A JobObservation from one slurmdbd ``/jobs`` record (ended, or not yet purged)."""
    state_info = record.get("state") or {}
    state = _base_state(state_info.get("current"))
    times = record.get("time") or {}
    exit_code, signal = _db_exit(record.get("exit_code"), state)
    nodes = record.get("nodes")
    return JobObservation(
        slurm_job_id=str(record["job_id"]),
        state=state,
        reason=_reason(state_info.get("reason")),
        exit_code=exit_code,
        signal=signal,
        node_list=None if nodes in (None, "", "None assigned") else nodes,
        submit_time=_epoch(times.get("submission")),
        start_time=_epoch(times.get("start")),
        end_time=_epoch(times.get("end")) if state in TERMINAL_STATES else None,
        gateway_job_id=accounting_gateway_id(record),
    )


def live_keys(record: Mapping[str, Any]) -> list[str]:
    """Slurm's ids for one slurmctld record: "123", "123_4" for an array task, or one per task
    of an array's not yet started remainder (array_task_string "5-9%2")."""
    return _task_keys(
        record["job_id"],
        record.get("array_job_id"),
        record.get("array_task_id"),
        record.get("array_task_string"),
    )


def accounting_keys(record: Mapping[str, Any]) -> list[str]:
    """Slurm's ids for one slurmdbd record, as ``live_keys``."""
    array = record.get("array") or {}
    return _task_keys(record["job_id"], array.get("job_id"), array.get("task_id"), array.get("task"))


def live_gateway_id(record: Mapping[str, Any]) -> str | None:
    """The gateway job id in a slurmctld record's comment, if the job is one of ours."""
    return _gateway_id(record.get("comment"))


def accounting_gateway_id(record: Mapping[str, Any]) -> str | None:
    """The gateway job id in a slurmdbd record's comment (an object there), if the job is one of ours."""
    comment = record.get("comment")
    return _gateway_id(comment.get("job") if isinstance(comment, Mapping) else None)


def observations_for(
    slurm_job_ids: Iterable[str], records: Iterable[tuple[list[str], JobObservation]]
) -> dict[str, JobObservation]:
    """Observations of the requested ids from (Slurm ids, observation) pairs.

    As the CLI driver: a requested plain job or array task ("123_4") maps to its record; a
    requested array id maps to a summary of its tasks, and each task is reported too.
    """
    by_key: dict[str, JobObservation] = {}
    tasks_by_array: dict[str, dict[str, JobObservation]] = {}
    for keys, observation in records:
        for key in keys:
            by_key[key] = msgspec.structs.replace(observation, slurm_job_id=key)
            array_id, _, task = key.partition("_")
            if task:
                tasks_by_array.setdefault(array_id, {})[key] = by_key[key]
    found: dict[str, JobObservation] = {}
    for job_id in slurm_job_ids:
        # Tasks first: slurmdbd may still hold an array's pending meta record under the bare id
        # after its tasks ran, and that record knows nothing of them.
        if job_id in tasks_by_array:
            tasks = tasks_by_array[job_id]
            found.update(tasks)
            found[job_id] = summarize_array(job_id, list(tasks.values()))
        elif job_id in by_key:
            found[job_id] = by_key[job_id]
    return found


def partition_capacities(
    partitions: Sequence[Mapping[str, Any]],
    nodes: Sequence[Mapping[str, Any]],
    jobs: Sequence[Mapping[str, Any]],
) -> list[PartitionCapacity]:
    """PartitionCapacity per partition from /partitions, /nodes and /jobs (sinfo's A/I counting).

    Allocated nodes are allocated, mixed or completing ones; idle nodes are idle and neither
    drained nor down. Idle GPUs are the unallocated GPUs of nodes that can take jobs.
    """
    pending: dict[str, int] = {}
    for job in jobs:
        if _base_state(job.get("job_state")) == "PENDING":
            # Per task, as squeue --array counts an array's pending remainder.
            tasks = len(live_keys(job))
            for name in str(job.get("partition") or "").split(","):
                pending[name] = pending.get(name, 0) + tasks
    capacities = []
    for partition in partitions:
        name = str(partition["name"])
        members = [node for node in nodes if name in (node.get("partitions") or ())]
        total_gpus = allocated_gpus = idle_gpus = idle_nodes = allocated_nodes = 0
        gpu_types: set[str] = set()
        for node in members:
            node_gpus, types = _gpu_count(node.get("gres"))
            used_gpus, _ = _gpu_count(node.get("gres_used"))
            gpu_types.update(types)
            total_gpus += node_gpus
            allocated_gpus += used_gpus
            usable = _node_is_usable(node)
            if usable:
                idle_gpus += max(node_gpus - used_gpus, 0)
            state = str(node.get("state") or "").lower()
            if state in ("allocated", "mixed", "completing"):
                allocated_nodes += 1
            elif state == "idle" and usable:
                idle_nodes += 1
        capacities.append(
            PartitionCapacity(
                name=name,
                total_nodes=len(members),
                idle_nodes=idle_nodes,
                allocated_nodes=allocated_nodes,
                total_gpus=total_gpus,
                allocated_gpus=allocated_gpus,
                idle_gpus=idle_gpus,
                pending_jobs=pending.get(name, 0),
                gpu_types=tuple(sorted(gpu_types)),
            )
        )
    return capacities


def _task_keys(job_id: object, array_job_id: object, task_id: object, task_string: object) -> list[str]:
    if not array_job_id:
        return [str(job_id)]
    if isinstance(task_id, int):
        return [f"{array_job_id}_{task_id}"]
    return [f"{array_job_id}_{index}" for index in array_task_ids(str(task_string or ""))]


def _afterok(dependencies: Sequence[str]) -> str | None:
    if not dependencies:
        return None
    for job_id in dependencies:
        if not job_id.isascii() or not job_id.isdigit():
            raise JobSpecError("dependencies", f"not a Slurm job id: {job_id[:30]!r}")
    return "afterok:" + ":".join(dependencies)


def _gres(job: BatchJob) -> str | None:
    if job.gpus_per_node == 0:
        return None
    if job.gpu_type is None:
        return f"gpu:{job.gpus_per_node}"
    return f"gpu:{job.gpu_type}:{job.gpus_per_node}"


def _gpu_count(gres: object) -> tuple[int, set[str]]:
    """GPUs in a node's gres or gres_used string, e.g. "gpu:h100:4" or "gpu:h100:2(IDX:0-1)"."""
    total = 0
    types: set[str] = set()
    for item in str(gres or "").split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] != "gpu" or len(parts) < 2:
            continue
        count = parts[-1]
        if count.isdigit():
            total += int(count)
            if len(parts) == 3:
                types.add(parts[1])
    return total, types


def _node_is_usable(node: Mapping[str, Any]) -> bool:
    state = str(node.get("state") or "").lower()
    flags = {str(flag).upper() for flag in node.get("state_flags") or ()}
    return state not in ("down", "unknown", "future") and not flags & {
        "DRAIN",
        "DRAINED",
        "DRAINING",
        "MAINTENANCE",
        "NOT_RESPONDING",
        "POWERED_DOWN",
    }


def _base_state(value: object) -> str:
    # "CANCELLED by 0" and flag suffixes are not part of the state word.
    words = str(value or "").split()
    if not words:
        raise SlurmOutputError("slurmrestd job record has no state")
    return words[0].upper()


def _reason(value: object) -> str | None:
    return None if value in (None, "", "None") else str(value)


def _epoch(value: object) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def _wait_status(value: object) -> tuple[int | None, int | None]:
    """(exit code, signal) of a raw wait status, as sacct prints ExitCode "code:signal"."""
    if not isinstance(value, int) or value < 0:
        return None, None
    return (value >> 8) & 0xFF, (value & 0x7F) or None


def _db_exit(value: object, state: str) -> tuple[int | None, int | None]:
    if not isinstance(value, Mapping):
        return None, None
    signal_info = value.get("signal")
    signal = signal_info.get("signal_id") if isinstance(signal_info, Mapping) else None
    return_code = value.get("return_code")
    if value.get("status") == "SUCCESS" and state != "COMPLETED":
        # 22.05 reports SUCCESS/0 for jobs that exited non-zero: unknown rather than wrong.
        return None, signal
    return (return_code if isinstance(return_code, int) else (0 if signal else None)), signal


def _gateway_id(comment: object) -> str | None:
    if isinstance(comment, str) and comment.startswith(GATEWAY_COMMENT_PREFIX):
        return comment.removeprefix(GATEWAY_COMMENT_PREFIX) or None
    return None


def _summary(status: int, errors: list[RestError]) -> str:
    if not errors:
        return f"HTTP {status}"
    first = errors[0]
    number = f" (Slurm error {first.number})" if first.number is not None else ""
    return f"{first.message}{number}, HTTP {status}"


def _clean(text: str) -> str:
    cleaned = " ".join(text.split())
    if len(cleaned) > _MAX_MESSAGE_CHARS:
        cleaned = cleaned[: _MAX_MESSAGE_CHARS - 1] + "…"
    return cleaned
