"""Storing multi-step jobs' derived states (gateway.workflow_states) in their own rows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gateway.job_states import STEP, TERMINAL_STATES, WORKFLOW
from gateway.storage_models import Job
from gateway.timestamps import as_utc
from gateway.workflow_states import StepStatus, derive_workflow_status, step_status


def refresh_workflows(session: Session, now: datetime, *, only: Sequence[str] | None = None) -> int:
    """Store the derived state of every live multi-step job (or of those in ``only``), in the
    caller's transaction; returns how many rows changed. Two queries, whatever the count.

    Columns are read, not ORM objects, so updates made earlier in the same session are seen.
    """
    conditions = [Job.kind == WORKFLOW, Job.state.not_in(TERMINAL_STATES)]
    if only is not None:
        conditions.append(Job.id.in_(only))
    workflows = session.execute(
        select(
            Job.id,
            Job.desired_state,
            Job.state,
            Job.state_reason,
            Job.exit_code,
            Job.started_at,
            Job.ended_at,
        ).where(*conditions)
    ).all()
    if not workflows:
        return 0
    steps = session.execute(
        select(
            Job.parent_id,
            Job.step_name,
            Job.state,
            Job.state_reason,
            Job.exit_code,
            Job.started_at,
            Job.ended_at,
        )
        .where(Job.kind == STEP, Job.parent_id.in_([workflow.id for workflow in workflows]))
        .order_by(Job.step_index)
    ).all()
    by_workflow: dict[str, list[StepStatus]] = {}
    for row in steps:
        by_workflow.setdefault(row.parent_id, []).append(step_status(row))
    changed = 0
    for workflow in workflows:
        status = derive_workflow_status(
            by_workflow.get(workflow.id, []), desired_state=workflow.desired_state
        )
        stored = (
            workflow.state,
            workflow.state_reason,
            workflow.exit_code,
            as_utc(workflow.started_at),
            as_utc(workflow.ended_at),
        )
        if stored == (
            status.state,
            status.state_reason,
            status.exit_code,
            status.started_at,
            status.ended_at,
        ):
            continue
        # Conditional on the state read: a concurrent writer (a retry by hand) wins.
        changed += session.execute(
            update(Job)
            .where(Job.id == workflow.id, Job.state == workflow.state)
            .values(**msgspec.structs.asdict(status), updated_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
    return changed
