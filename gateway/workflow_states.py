"""A multi-step job's state, derived from its steps' (pure; the reconciler stores the result).

- every step completed: ``completed``;
- any step running or completing: ``running``;
- every step ended, some unsuccessfully: the user's cancel makes it ``cancelled``; otherwise it
  takes the state of the first step (in the spec's order) that failed by itself, not one left
  unrun because a dependency failed;
- a step uploading its outputs while every other ended: ``staging_out``;
- otherwise it is waiting: ``staging_in`` while steps' inputs are being staged and no step got
  further, ``accepted`` while no step got further than that, else ``pending``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

import msgspec

from gateway.job_states import (
    ACCEPTED,
    CANCELLED,
    COMPLETED,
    COMPLETING,
    DESIRED_CANCEL,
    PENDING,
    RUNNING,
    STAGING_IN,
    STAGING_OUT,
    SUBMITTING,
    TERMINAL_STATES,
)
from gateway.timestamps import as_utc

# The reason of a step the gateway cancelled because a step it needs ended unsuccessfully.
NOT_RUN_PREFIX = "not run: "


class StepStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What the derivation needs of one step."""

    name: str
    state: str
    state_reason: str | None
    exit_code: int | None
    started_at: datetime | None
    ended_at: datetime | None


class WorkflowStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The derived fields of the workflow's own row."""

    state: str
    state_reason: str | None
    exit_code: int | None
    started_at: datetime | None
    ended_at: datetime | None


class _StepRow(Protocol):
    step_name: str | None
    state: str
    state_reason: str | None
    exit_code: int | None
    started_at: datetime | None
    ended_at: datetime | None


def step_status(row: _StepRow) -> StepStatus:
    """The StepStatus of a stored step (a Job row, or a query row with the same columns)."""
    return StepStatus(
        name=row.step_name or "",
        state=row.state,
        state_reason=row.state_reason,
        exit_code=row.exit_code,
        started_at=as_utc(row.started_at),
        ended_at=as_utc(row.ended_at),
    )


def not_run_reason(dependency: str, dependency_state: str) -> str:
    """The reason a step is cancelled without running: ``dependency`` ended ``dependency_state``."""
    return f"{NOT_RUN_PREFIX}step {dependency} ended {dependency_state}"


def derive_workflow_status(steps: Sequence[StepStatus], *, desired_state: str) -> WorkflowStatus:
    """The workflow's state from its steps' (in the spec's order)."""
    states = [step.state for step in steps]
    started = [step.started_at for step in steps if step.started_at is not None]
    started_at = min(started, default=None)
    completed = sum(1 for state in states if state == COMPLETED)
    progress = f"{completed} of {len(steps)} steps completed"
    if all(state in TERMINAL_STATES for state in states):
        ended_at = max((step.ended_at for step in steps if step.ended_at is not None), default=None)
        if completed == len(steps):
            return WorkflowStatus(
                state=COMPLETED, state_reason=None, exit_code=0, started_at=started_at, ended_at=ended_at
            )
        if desired_state == DESIRED_CANCEL:
            return WorkflowStatus(
                state=CANCELLED,
                state_reason=f"cancelled; {progress}",
                exit_code=None,
                started_at=started_at,
                ended_at=ended_at,
            )
        culprit = _first_failure(steps)
        detail = f" (exit code {culprit.exit_code})" if culprit.exit_code else ""
        reason = f"step {culprit.name} ended {culprit.state}{detail}"
        if culprit.state_reason:
            reason += f": {culprit.state_reason}"
        return WorkflowStatus(
            state=culprit.state,
            state_reason=f"{reason}; {progress}",
            exit_code=culprit.exit_code,
            started_at=started_at,
            ended_at=ended_at,
        )
    if any(state in (RUNNING, COMPLETING) for state in states):
        state = RUNNING
    elif all(state in TERMINAL_STATES or state == STAGING_OUT for state in states):
        state = STAGING_OUT
    elif all(state in (ACCEPTED, SUBMITTING, STAGING_IN) for state in states):
        state = STAGING_IN if STAGING_IN in states else ACCEPTED
    else:
        state = PENDING
    return WorkflowStatus(
        state=state, state_reason=progress, exit_code=None, started_at=started_at, ended_at=None
    )


def _first_failure(steps: Sequence[StepStatus]) -> StepStatus:
    failed = [step for step in steps if step.state not in (COMPLETED,)]
    own = [step for step in failed if not (step.state_reason or "").startswith(NOT_RUN_PREFIX)]
    return (own or failed)[0]
