"""One observation for a whole job array from its tasks' observations (both drivers use it)."""

from __future__ import annotations

from slurm.observations import TERMINAL_STATES, JobObservation

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


def summarize_array(job_id: str, tasks: list[JobObservation]) -> JobObservation:
    """One observation for a whole array: running while any task runs,
    pending while any pends, and once all ended the worst outcome among them."""
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
