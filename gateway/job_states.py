"""Gateway job states and how Slurm's observed states map onto them.

Lifecycle: [staging_in ->] accepted -> submitting -> pending -> running -> completing
[-> staging_out] -> a terminal state. ``staging_in``: the gateway copies the job's inputs into its
working directory before it may reach Slurm; ``staging_out``: Slurm reported the job completed
and the gateway uploads its outputs before calling it ``completed``.
``submit_failed`` is terminal too (Slurm refused the job); ``cancelled`` can also be reached
straight from ``accepted`` when the user cancels before the job ever reached Slurm; ``hung`` is
an attempt the gateway cancelled because its heartbeat went stale.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from slurm.observations import JobObservation

ACCEPTED = "accepted"
SUBMITTING = "submitting"
PENDING = "pending"
RUNNING = "running"
COMPLETING = "completing"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
TIMEOUT = "timeout"
NODE_FAIL = "node_fail"
OUT_OF_MEMORY = "out_of_memory"
PREEMPTED = "preempted"
SUBMIT_FAILED = "submit_failed"

HUNG = "hung"
STAGING_IN = "staging_in"
STAGING_OUT = "staging_out"

# Job row kinds (storage_models.Job.kind).
PLAIN_JOB = "job"
WORKFLOW = "workflow"
STEP = "step"

DESIRED_RUN = "run"
DESIRED_CANCEL = "cancel"

# Jobs that Slurm holds and the reconciler polls.
IN_SLURM_STATES = frozenset({PENDING, RUNNING, COMPLETING})
TERMINAL_STATES = frozenset(
    {COMPLETED, FAILED, CANCELLED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, PREEMPTED, SUBMIT_FAILED, HUNG}
)
# Jobs the gateway itself works on outside Slurm: a cancel ends them on the spot.
STAGING_STATES = frozenset({STAGING_IN, STAGING_OUT})
ALL_STATES = frozenset({ACCEPTED, SUBMITTING} | IN_SLURM_STATES | TERMINAL_STATES | STAGING_STATES)

_SLURM_TO_GATEWAY = {
    "PENDING": PENDING,
    # Allocated, nodes still booting: not running the user's code yet.
    "CONFIGURING": PENDING,
    # Requeued jobs wait in the queue again.
    "REQUEUED": PENDING,
    "REQUEUE_HOLD": PENDING,
    "REQUEUE_FED": PENDING,
    "RESV_DEL_HOLD": PENDING,
    "SPECIAL_EXIT": PENDING,
    "RUNNING": RUNNING,
    "RESIZING": RUNNING,
    "SUSPENDED": RUNNING,
    "STOPPED": RUNNING,
    "SIGNALING": RUNNING,
    "COMPLETING": COMPLETING,
    "STAGE_OUT": COMPLETING,
    "COMPLETED": COMPLETED,
    "FAILED": FAILED,
    "BOOT_FAIL": NODE_FAIL,
    "CANCELLED": CANCELLED,
    "REVOKED": CANCELLED,
    "TIMEOUT": TIMEOUT,
    "DEADLINE": TIMEOUT,
    "NODE_FAIL": NODE_FAIL,
    "OUT_OF_MEMORY": OUT_OF_MEMORY,
    "PREEMPTED": PREEMPTED,
}

# Slurm's "no reason" spellings; they carry nothing worth showing.
_EMPTY_REASONS = frozenset({"", "None", "(null)"})


class ObservedUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """The job row's new observed fields after one Slurm observation."""

    state: str
    state_reason: str | None
    exit_code: int | None
    started_at: datetime | None
    ended_at: datetime | None


def gateway_state(slurm_state: str) -> str | None:
    """The gateway state for Slurm's base state word, or None for a state we do not know."""
    # Slurm may append detail ("CANCELLED by 1000") or a "+" (requeue/held markers).
    words = slurm_state.split(maxsplit=1)
    return _SLURM_TO_GATEWAY.get(words[0].rstrip("+").upper()) if words else None


def observed_update(observation: JobObservation) -> ObservedUpdate | None:
    """Translate one observation into row fields; None when Slurm's state is unknown to us."""
    state = gateway_state(observation.state)
    if state is None:
        return None
    reason = observation.reason if observation.reason not in _EMPTY_REASONS else None
    if reason is None and observation.signal:
        reason = f"killed by signal {observation.signal}"
    return ObservedUpdate(
        state=state,
        state_reason=reason,
        exit_code=observation.exit_code if state in TERMINAL_STATES else None,
        started_at=_from_epoch(observation.start_time) if state != PENDING else None,
        ended_at=_from_epoch(observation.end_time) if state in TERMINAL_STATES else None,
    )


def _from_epoch(seconds: int | None) -> datetime | None:
    # Slurm reports 0 (or nothing) for times that have not happened.
    if not seconds:
        return None
    return datetime.fromtimestamp(seconds, tz=UTC)
