"""Mapping Slurm's observed states onto gateway states and row fields."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.job_states import (
    ALL_STATES,
    COMPLETED,
    FAILED,
    IN_SLURM_STATES,
    PENDING,
    RUNNING,
    TERMINAL_STATES,
    gateway_state,
    observed_update,
)
from slurm.observations import TERMINAL_STATES as SLURM_TERMINAL_STATES
from slurm.observations import JobObservation

START = 1_763_790_000
END = START + 42


@pytest.mark.parametrize(
    ("slurm_state", "expected"),
    [
        ("PENDING", "pending"),
        ("CONFIGURING", "pending"),
        ("REQUEUED", "pending"),
        ("RUNNING", "running"),
        ("SUSPENDED", "running"),
        ("COMPLETING", "completing"),
        ("COMPLETED", "completed"),
        ("FAILED", "failed"),
        ("CANCELLED", "cancelled"),
        # sacct spells a cancel by a user this way; the driver usually strips the suffix.
        ("CANCELLED by 1000", "cancelled"),
        ("TIMEOUT", "timeout"),
        ("NODE_FAIL", "node_fail"),
        ("BOOT_FAIL", "node_fail"),
        ("OUT_OF_MEMORY", "out_of_memory"),
        ("PREEMPTED", "preempted"),
        ("DEADLINE", "timeout"),
        ("REVOKED", "cancelled"),
    ],
)
def test_slurm_states_map_to_gateway_states(slurm_state: str, expected: str) -> None:
    assert gateway_state(slurm_state) == expected


def test_unknown_or_empty_states_map_to_nothing() -> None:
    assert gateway_state("WIBBLE") is None
    assert gateway_state("") is None
    assert observed_update(JobObservation(slurm_job_id="1", state="WIBBLE")) is None


def test_every_slurm_terminal_state_maps_to_a_gateway_terminal_state() -> None:
    for slurm_state in SLURM_TERMINAL_STATES:
        assert gateway_state(slurm_state) in TERMINAL_STATES, slurm_state


def test_state_sets_partition_the_lifecycle() -> None:
    assert not IN_SLURM_STATES & TERMINAL_STATES
    assert IN_SLURM_STATES | TERMINAL_STATES < ALL_STATES


def test_a_pending_job_keeps_its_reason_and_has_no_times() -> None:
    update = observed_update(
        JobObservation(slurm_job_id="7", state="PENDING", reason="Resources", start_time=START + 600)
    )
    assert update is not None
    assert (update.state, update.state_reason) == (PENDING, "Resources")
    # Slurm fills StartTime with its estimate for pending jobs: that is not a start.
    assert (update.started_at, update.ended_at, update.exit_code) == (None, None, None)


def test_a_running_job_has_a_start_but_no_end_or_exit_code() -> None:
    update = observed_update(
        JobObservation(slurm_job_id="7", state="RUNNING", reason="None", start_time=START, exit_code=0)
    )
    assert update is not None
    assert update.state == RUNNING
    assert update.state_reason is None
    assert update.started_at == datetime.fromtimestamp(START, tz=UTC)
    assert (update.ended_at, update.exit_code) == (None, None)


def test_a_finished_job_has_times_and_exit_code() -> None:
    update = observed_update(
        JobObservation(slurm_job_id="7", state="COMPLETED", exit_code=0, start_time=START, end_time=END)
    )
    assert update is not None
    assert update.state == COMPLETED
    assert update.exit_code == 0
    assert update.ended_at == datetime.fromtimestamp(END, tz=UTC)


def test_a_signalled_job_says_which_signal() -> None:
    update = observed_update(
        JobObservation(
            slurm_job_id="7", state="FAILED", exit_code=0, signal=9, start_time=START, end_time=END
        )
    )
    assert update is not None
    assert (update.state, update.state_reason) == (FAILED, "killed by signal 9")


def test_zero_times_mean_not_yet() -> None:
    update = observed_update(JobObservation(slurm_job_id="7", state="FAILED", start_time=0, end_time=0))
    assert update is not None
    assert (update.started_at, update.ended_at) == (None, None)
