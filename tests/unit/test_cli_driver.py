import pytest

from slurm.cli_driver import (
    parse_sbatch_parsable,
    parse_test_only_start,
    poll_observations,
    unsettled_job_ids,
)
from slurm.errors import SlurmOutputError
from slurm.observations import JobObservation
from slurm.sacct_parser import parse_sacct
from slurm.squeue_parser import parse_squeue
from tests.unit.slurm_output_fixtures import recorded


def test_parsable_job_id() -> None:
    assert parse_sbatch_parsable(recorded("sbatch_parsable.stdout")) == "162"


def test_parsable_job_id_with_cluster() -> None:
    assert parse_sbatch_parsable("4242;dev\n") == "4242"


@pytest.mark.parametrize("output", ["", "Submitted batch job 12\n", "12;\n"])
def test_unexpected_sbatch_output_is_an_error(output: str) -> None:
    with pytest.raises(SlurmOutputError):
        parse_sbatch_parsable(output)


def test_test_only_start_estimate() -> None:
    assert parse_test_only_start(recorded("sbatch_test_only.stderr")) == 1795325666


def test_test_only_without_estimate() -> None:
    assert parse_test_only_start("sbatch: warning: nothing\n") is None


def poll_recorded(squeue: str, sacct: str, requested: list[str]) -> dict[str, JobObservation]:
    """What poll returns for these recorded answers (sacct only for what squeue leaves open)."""
    queued = parse_squeue(squeue)
    unsettled = unsettled_job_ids(requested, queued)
    return poll_observations(requested, queued, parse_sacct(sacct) if unsettled else [])


def task_states(observation: JobObservation) -> dict[int, tuple[str, str | None, int | None, int | None]]:
    return {t.task_id: (t.state, t.reason, t.exit_code, t.signal) for t in observation.array_tasks}


# The recording: --array=0-9%2, task 2 exits 3, task 5 is killed by SIGKILL.
PENDING_TASK = ("PENDING", "JobArrayTaskLimit", None, None)
COMPLETED_TASK = ("COMPLETED", None, 0, None)


def test_a_running_array_reports_every_task_with_its_own_state() -> None:
    # squeue: 0-3 ended (then read from sacct), 4-5 running, 6-9 pending.
    observed = poll_recorded(recorded("squeue_array_tasks.txt"), recorded("sacct_array_tasks.txt"), ["551"])
    array = observed["551"]
    assert (array.state, array.reason, array.exit_code, array.gateway_job_id) == (
        "RUNNING",
        None,
        None,
        "fixture-tasks",
    )
    assert [task.task_id for task in array.array_tasks] == list(range(10))
    assert task_states(array) == {
        0: COMPLETED_TASK,
        1: COMPLETED_TASK,
        2: ("FAILED", None, 3, None),
        3: COMPLETED_TASK,
        4: ("RUNNING", None, None, None),
        5: ("RUNNING", None, None, None),
        **{task: PENDING_TASK for task in range(6, 10)},
    }
    assert set(observed) == {"551", *(f"551_{task}" for task in range(10))}


def test_an_ended_array_reports_each_exit_code_and_signal() -> None:
    observed = poll_recorded(recorded("squeue_array_ended.txt"), recorded("sacct_array_ended.txt"), ["551"])
    array = observed["551"]
    assert (array.state, array.is_terminal) == ("FAILED", True)
    tasks = task_states(array)
    assert (tasks[2], tasks[5]) == (("FAILED", None, 3, None), ("FAILED", None, 0, 9))
    assert {tasks[task] for task in (0, 1, 3, 4, 6, 7, 8, 9)} == {COMPLETED_TASK}


def test_tasks_squeue_forgot_come_once_from_sacct() -> None:
    # slurmctld purges each ended task after MinJobAge: here 0-3 are gone from squeue.
    squeue = "".join(
        line + "\n"
        for line in recorded("squeue_array_tasks.txt").splitlines()
        if not line.startswith(("551_0|", "551_1|", "551_2|", "551_3|"))
    )
    observed = poll_recorded(squeue, recorded("sacct_array_tasks.txt"), ["551"])
    tasks = task_states(observed["551"])
    assert [task.task_id for task in observed["551"].array_tasks] == list(range(10))
    assert (tasks[0], tasks[2], tasks[4], tasks[9]) == (
        COMPLETED_TASK,
        ("FAILED", None, 3, None),
        ("RUNNING", None, None, None),
        PENDING_TASK,
    )


def test_a_pending_range_counts_each_index_with_the_range_state_and_reason() -> None:
    # sacct's range row "551_[4-9%2]" (reason None there) must not replace squeue's tasks, and
    # squeue's own range row (without --array) counts one task per index.
    observed = poll_recorded(recorded("squeue_array_range.txt"), recorded("sacct_array_tasks.txt"), ["551"])
    tasks = task_states(observed["551"])
    assert [task.task_id for task in observed["551"].array_tasks] == list(range(10))
    assert {tasks[task] for task in range(6, 10)} == {PENDING_TASK}
    assert observed["551_7"].slurm_job_id == "551_7"
    assert "551_[6-9%2]" not in observed and "551_[4-9%2]" not in observed


def test_only_plain_jobs_and_tasks_squeue_shows_unended_are_settled_without_sacct() -> None:
    queued = parse_squeue(recorded("squeue_array_tasks.txt") + recorded("squeue_poll.txt"))
    # 551 is an array (always sacct); 551_4 runs; 551_2 and 128 ended; 125 runs; 999 unknown.
    assert unsettled_job_ids(["551", "551_4", "551_2", "125", "128", "999"], queued) == [
        "551",
        "551_2",
        "128",
        "999",
    ]
