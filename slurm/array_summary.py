"""Job arrays as both drivers see them: task ids from Slurm's task expressions, and one
observation for a whole array from its tasks' observations."""

from __future__ import annotations

import msgspec

from slurm.errors import SlurmOutputError
from slurm.observations import TERMINAL_STATES, ArrayTaskObservation, JobObservation

# When an array's tasks end differently, the array reports the first of these found.
_ARRAY_OUTCOME_ORDER = (
    "NODE_FAIL",
    "BOOT_FAIL",
    "OUT_OF_MEMORY",
    "TIMEOUT",
    "FAILED",
    "DEADLINE",
    "PREEMPTED",
    "REVOKED",
    "CANCELLED",
    "COMPLETED",
)


def array_task_ids(expression: str) -> list[int]:
    """The task ids an array task expression names, ascending as Slurm writes them.

    squeue and sacct print a not yet split pending remainder as "[4-9%2]", slurmctld's REST
    listing as "4-9%2" and slurmdbd's as a hex bitmap "0x3C0" (bit i set: task i); lists and
    steps ("1,3,5-7", "0-15:4") as the array was given. "%2" is the throttle, not a task.
    """
    spec = expression.removeprefix("[").removesuffix("]").split("%", maxsplit=1)[0]
    if spec.startswith("0x"):
        try:
            bitmap = int(spec, 16)
        except ValueError as exc:
            raise SlurmOutputError(f"unrecognised array task bitmap {expression[:40]!r}") from exc
        return [index for index in range(bitmap.bit_length()) if bitmap >> index & 1]
    indices: list[int] = []
    for item in spec.split(","):
        if not item:
            continue
        bounds, _, step = item.partition(":")
        first, _, last = bounds.partition("-")
        if not (first.isdigit() and (last or first).isdigit() and (step or "1").isdigit()):
            raise SlurmOutputError(f"unrecognised array task expression {expression[:40]!r}")
        indices.extend(range(int(first), int(last or first) + 1, max(int(step or 1), 1)))
    return indices


def task_keys(job_id: str) -> list[str]:
    """The ids one squeue or sacct JobID stands for: "123" itself, a task "123_4" itself, and a
    pending remainder "123_[5-9%2]" one "123_<index>" per task."""
    array_id, separator, tasks = job_id.partition("_")
    if not separator or tasks.isdigit():
        return [job_id]
    return [f"{array_id}_{index}" for index in array_task_ids(tasks)]


def summarize_array(job_id: str, tasks: list[JobObservation]) -> JobObservation:
    """One observation for a whole array: running while any task runs, pending while any pends,
    and once all ended the worst outcome among them; ``array_tasks`` lists every task.

    ``tasks`` are observations keyed as tasks ("123_4"), each task once.
    """
    summary = _summary_state(job_id, tasks)
    return msgspec.structs.replace(summary, array_tasks=array_task_observations(tasks))


def array_task_observations(tasks: list[JobObservation]) -> tuple[ArrayTaskObservation, ...]:
    """Each task's own state, by task id. A reason is kept only while the task pends: for an
    ended task sacct still reports its last pending reason (e.g. JobArrayTaskLimit)."""
    return tuple(
        sorted(
            (
                ArrayTaskObservation(
                    task_id=_task_id(task.slurm_job_id),
                    state=task.state,
                    reason=task.reason if task.state == "PENDING" else None,
                    exit_code=task.exit_code,
                    signal=task.signal,
                )
                for task in tasks
            ),
            key=lambda task: task.task_id,
        )
    )


def _summary_state(job_id: str, tasks: list[JobObservation]) -> JobObservation:
    states = {task.state for task in tasks}
    submit_times = [task.submit_time for task in tasks if task.submit_time is not None]
    start_times = [task.start_time for task in tasks if task.start_time is not None]
    if states <= TERMINAL_STATES:
        state = next((s for s in _ARRAY_OUTCOME_ORDER if s in states), tasks[0].state)
        worst = next(task for task in tasks if task.state == state)
        end_times = [task.end_time for task in tasks if task.end_time is not None]
        return JobObservation(
            slurm_job_id=job_id,
            state=state,
            exit_code=worst.exit_code,
            signal=worst.signal,
            submit_time=min(submit_times, default=None),
            start_time=min(start_times, default=None),
            end_time=max(end_times, default=None),
            gateway_job_id=worst.gateway_job_id,
        )
    active = [task for task in tasks if task.state not in TERMINAL_STATES]
    running = [task for task in active if task.state != "PENDING"]
    expected = [task.expected_start_time for task in active if task.expected_start_time is not None]
    return JobObservation(
        slurm_job_id=job_id,
        state=running[0].state if running else "PENDING",
        reason=None if running else active[0].reason,
        submit_time=min(submit_times, default=None),
        start_time=min(start_times, default=None),
        expected_start_time=None if running else min(expected, default=None),
        gateway_job_id=tasks[0].gateway_job_id,
    )


def _task_id(task_key: str) -> int:
    _, _, index = task_key.partition("_")
    if not index.isdigit():
        raise SlurmOutputError(f"not an array task id: {task_key[:30]!r}")
    return int(index)
