import pytest

from slurm.errors import SlurmOutputError
from slurm.squeue_parser import count_pending_by_partition, parse_squeue, queue_observation
from tests.unit.slurm_output_fixtures import recorded


def rows_by_id() -> dict:
    return {row.job_id: row for row in parse_squeue(recorded("squeue_poll.txt"))}


def test_running_multi_node_job() -> None:
    row = rows_by_id()["125"]
    assert (row.state, row.node_count, row.node_list, row.partitions) == (
        "RUNNING",
        2,
        "gpu[01-02]",
        ("gpu",),
    )
    assert (row.submit_time, row.start_time, row.gateway_job_id) == (
        1795325645,
        1795325646,
        "fixture-running",
    )


def test_running_observation_has_start_but_no_end() -> None:
    observation = queue_observation(rows_by_id()["125"])
    assert (observation.start_time, observation.end_time, observation.expected_start_time) == (
        1795325646,
        None,
        None,
    )
    assert observation.reason is None


def test_pending_job_has_reason_and_no_times() -> None:
    observation = queue_observation(rows_by_id()["126"])
    assert (observation.state, observation.reason) == ("PENDING", "Resources")
    assert (observation.start_time, observation.expected_start_time, observation.node_list) == (
        None,
        None,
        None,
    )


def test_pending_start_time_is_the_expected_start() -> None:
    line = recorded("squeue_poll.txt").splitlines()[-1].replace("|RUNNING|", "|PENDING|", 1)
    observation = queue_observation(parse_squeue(line)[0])
    assert (observation.start_time, observation.expected_start_time) == (None, 1795325646)


def test_array_tasks_are_listed_per_task() -> None:
    rows = rows_by_id()
    assert {"127_0", "127_1", "127_2", "127_3"} <= rows.keys()
    assert rows["127_1"].reason == "JobArrayTaskLimit"
    assert rows["127_1"].parent_job_id == "127"
    assert rows["127_0"].state == "RUNNING"


def test_foreign_comment_with_pipes_is_kept_whole_and_not_ours() -> None:
    row = rows_by_id()["130"]
    assert row.comment == "other|team: a|b"
    assert row.gateway_job_id is None
    assert row.partitions == ("cpu",)


def test_missing_comment_and_node_list() -> None:
    row = rows_by_id()["131"]
    assert (row.comment, row.node_list, row.state, row.reason) == (None, None, "CANCELLED", "JobHeldUser")


def test_ended_jobs_keep_their_end_time() -> None:
    observation = queue_observation(rows_by_id()["128"])
    assert (observation.state, observation.end_time) == ("FAILED", 1795325646)


def test_whole_queue_listing_parses() -> None:
    rows = parse_squeue(recorded("squeue_all.txt"))
    assert len(rows) == len(recorded("squeue_all.txt").splitlines())
    assert any(row.job_id == "57_2" and row.gateway_job_id == "fx-array" for row in rows)


def test_pending_counts_per_partition() -> None:
    assert count_pending_by_partition(recorded("squeue_pending_partitions.txt")) == {"cpu": 3, "gpu": 2}


def test_job_waiting_for_two_partitions_counts_in_both() -> None:
    assert count_pending_by_partition("gpu,cpu\ncpu\n") == {"gpu": 1, "cpu": 2}


def test_line_with_too_few_fields_is_an_error() -> None:
    with pytest.raises(SlurmOutputError, match="unexpected squeue line"):
        parse_squeue("125|RUNNING|None\n")


def test_time_not_in_epoch_format_is_an_error() -> None:
    line = recorded("squeue_poll.txt").splitlines()[-1].replace("1795325645", "2026-11-22T05:34:05", 1)
    with pytest.raises(SlurmOutputError, match="epoch"):
        parse_squeue(line)


def test_without_array_the_pending_tasks_are_one_row_standing_for_each_task() -> None:
    # squeue without --array (the poll passes it) prints the not yet split tasks as one range.
    rows = {row.job_id: row for row in parse_squeue(recorded("squeue_array_range.txt"))}
    remainder = rows["551_[6-9%2]"]
    assert remainder.task_keys == ["551_6", "551_7", "551_8", "551_9"]
    assert (remainder.state, remainder.reason, remainder.parent_job_id) == (
        "PENDING",
        "JobArrayTaskLimit",
        "551",
    )
    assert rows["551_2"].task_keys == ["551_2"]
    assert rows["551_2"].state == "FAILED"


def test_with_array_every_task_has_its_own_row() -> None:
    rows = parse_squeue(recorded("squeue_array_tasks.txt"))
    keys = [key for row in rows for key in row.task_keys]
    assert sorted(keys, key=lambda key: int(key.split("_")[1])) == [f"551_{task}" for task in range(10)]
    assert rows[0].task_keys == [rows[0].job_id]


def test_held_arrays_given_as_lists_and_steps_stand_for_each_task() -> None:
    # --array=0-15:4%2 and --array=1,3,5-7, held, as squeue without --array prints them.
    rows = {row.parent_job_id: row for row in parse_squeue(recorded("squeue_array_lists.txt"))}
    assert rows["594"].task_keys == ["594_0", "594_4", "594_8", "594_12"]
    assert rows["593"].task_keys == ["593_1", "593_3", "593_5", "593_6", "593_7"]


def test_unreadable_task_range_is_an_error() -> None:
    (row,) = parse_squeue(recorded("squeue_array_lists.txt").splitlines()[1].replace("5-7", "5-x"))
    with pytest.raises(SlurmOutputError, match="array task expression"):
        _ = row.task_keys
