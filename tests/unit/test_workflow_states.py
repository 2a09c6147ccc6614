"""A multi-step job's state derived from its steps, and what a step does about its dependencies."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.step_dependencies import Abandon, DependencySnapshot, Resubmit, StepSnapshot, dependency_action
from gateway.workflow_states import StepStatus, derive_workflow_status, not_run_reason

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 22, 12, 5, tzinfo=UTC)


def status(name: str, state: str, reason: str | None = None, exit_code: int | None = None) -> StepStatus:
    ended = state in {"completed", "failed", "cancelled", "node_fail", "hung"}
    return StepStatus(
        name=name,
        state=state,
        state_reason=reason,
        exit_code=exit_code,
        started_at=T0 if state not in {"accepted", "pending"} else None,
        ended_at=T1 if ended else None,
    )


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        (("accepted", "accepted"), "accepted"),
        (("pending", "accepted"), "pending"),
        (("completed", "accepted"), "pending"),
        (("completed", "running"), "running"),
        (("failed", "running"), "running"),
        (("completed", "completed"), "completed"),
        (("staging_in", "accepted"), "staging_in"),
        (("staging_in", "pending"), "pending"),
        (("completed", "staging_out"), "staging_out"),
        (("staging_out", "running"), "running"),
        (("staging_out", "accepted"), "pending"),
    ],
)
def test_a_live_job_is_as_far_as_its_furthest_step(states: tuple[str, ...], expected: str) -> None:
    steps = [status(f"s{index}", state) for index, state in enumerate(states)]
    derived = derive_workflow_status(steps, desired_state="run")
    assert derived.state == expected
    done = sum(1 for state in states if state == "completed")
    assert derived.state_reason == (
        None if expected == "completed" else f"{done} of {len(states)} steps completed"
    )


def test_an_ended_job_blames_the_step_that_failed_not_the_ones_left_unrun() -> None:
    steps = [
        status("prepare", "completed"),
        status("train", "failed", "exit code 3", exit_code=3),
        status("report", "cancelled", not_run_reason("train", "failed")),
    ]
    derived = derive_workflow_status(steps, desired_state="run")
    assert (derived.state, derived.exit_code) == ("failed", 3)
    assert (
        derived.state_reason == "step train ended failed (exit code 3): exit code 3; 1 of 3 steps completed"
    )
    assert (derived.started_at, derived.ended_at) == (T0, T1)


def test_a_cancelled_job_is_cancelled_whatever_its_steps_ended() -> None:
    steps = [status("prepare", "completed"), status("train", "cancelled")]
    derived = derive_workflow_status(steps, desired_state="cancel")
    assert derived.state == "cancelled"
    assert derived.state_reason == "cancelled; 1 of 2 steps completed"


def snapshot(state: str, *, after: dict[str, str | None] | None = None) -> StepSnapshot:
    return StepSnapshot(job_id="step-b", state=state, attempt=1, slurm_job_id="101", submitted_after=after)


def dependency(state: str, slurm_job_id: str | None) -> DependencySnapshot:
    return DependencySnapshot(job_id="step-a", step_name="a", state=state, slurm_job_id=slurm_job_id)


def test_a_step_whose_dependency_failed_for_good_is_abandoned() -> None:
    action = dependency_action(snapshot("pending", after={"step-a": "100"}), [dependency("failed", "100")])
    assert action == Abandon(reason="not run: step a ended failed")
    assert isinstance(dependency_action(snapshot("accepted"), [dependency("hung", "100")]), Abandon)


def test_a_step_waiting_for_a_retried_dependency_is_resubmitted() -> None:
    # The dependency's attempt 2 is back in the queue (or already running) with a new Slurm id.
    for state, slurm_job_id in (("accepted", None), ("pending", "102"), ("completed", "102")):
        action = dependency_action(
            snapshot("pending", after={"step-a": "100"}), [dependency(state, slurm_job_id)]
        )
        assert isinstance(action, Resubmit)
        assert "step a was retried" in action.reason


@pytest.mark.parametrize(
    ("step", "dep"),
    [
        (snapshot("pending", after={"step-a": "100"}), dependency("running", "100")),
        # Submitted after the dependency had completed: nothing to wait for, nothing stale.
        (snapshot("pending", after={"step-a": None}), dependency("completed", "100")),
        # Not in Slurm yet, or already running: the submitter / Slurm take it from here.
        (snapshot("accepted"), dependency("accepted", None)),
        (snapshot("running", after={"step-a": "100"}), dependency("completed", "100")),
    ],
)
def test_a_step_with_healthy_dependencies_is_left_alone(step: StepSnapshot, dep: DependencySnapshot) -> None:
    assert dependency_action(step, [dep]) is None
