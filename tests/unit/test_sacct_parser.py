import pytest

from slurm.errors import SlurmOutputError
from slurm.sacct_parser import accounting_observation, parse_sacct
from tests.unit.slurm_output_fixtures import recorded


def rows_by_id() -> dict:
    return {row.job_id: row for row in parse_sacct(recorded("sacct_poll.txt"))}


def test_failed_job_exit_code() -> None:
    observation = accounting_observation(rows_by_id()["128"])
    assert (observation.state, observation.exit_code, observation.signal) == ("FAILED", 3, None)
    assert (observation.start_time, observation.end_time, observation.node_list) == (
        1795325646,
        1795325646,
        "cpu01",
    )
    assert observation.gateway_job_id == "fixture-failed"
    assert observation.is_terminal


def test_killed_job_reports_the_signal() -> None:
    observation = accounting_observation(rows_by_id()["129"])
    assert (observation.state, observation.exit_code, observation.signal) == ("FAILED", 0, 9)


def test_cancelled_by_uid_is_cancelled_without_start() -> None:
    observation = accounting_observation(rows_by_id()["131"])
    assert (observation.state, observation.start_time, observation.node_list) == ("CANCELLED", None, None)
    assert observation.reason == "JobHeldUser"


def test_running_job_has_no_end_and_no_exit_code_yet() -> None:
    observation = accounting_observation(rows_by_id()["125"])
    assert (observation.state, observation.end_time, observation.exit_code) == ("RUNNING", None, None)
    # slurmdbd only learns the comment when the job ends.
    assert observation.gateway_job_id is None


def test_array_task_ids_and_raw_ids() -> None:
    rows = rows_by_id()
    assert rows["127_0"].raw_job_id == "133"
    assert rows["127_0"].parent_job_id == "127"
    assert rows["127_[1-3%1]"].parent_job_id == "127"
    assert rows["127_[1-3%1]"].state == "PENDING"


def test_foreign_comment_with_pipes_is_kept_whole() -> None:
    row = rows_by_id()["130"]
    assert (row.comment, row.gateway_job_id) == ("other|team: a|b", None)


def test_completed_record_naming_one_of_two_nodes_is_provisional() -> None:
    (row,) = parse_sacct(recorded("sacct_provisional.txt"))
    assert (row.state, row.node_count, row.node_list, row.is_complete) == ("COMPLETED", 2, "gpu01", False)
    observation = accounting_observation(row)
    assert (observation.state, observation.exit_code, observation.is_terminal) == ("COMPLETING", None, False)


def test_complete_multi_node_record_is_final() -> None:
    row = next(row for row in parse_sacct(recorded("sacct_window.txt")) if row.job_id == "49")
    assert (row.node_list, row.is_complete, row.gateway_job_id) == ("gpu[01-02]", True, "gputest1")


def test_window_listing_parses_every_line() -> None:
    rows = parse_sacct(recorded("sacct_window.txt"))
    assert len(rows) == len(recorded("sacct_window.txt").splitlines())


def test_job_steps_are_skipped() -> None:
    text = "9|9|COMPLETED|0:0|None|1|2|3|1|gpu01|\n9.batch|9.batch|COMPLETED|0:0||2|2|3|1|gpu01|\n"
    assert [row.raw_job_id for row in parse_sacct(text)] == ["9"]


def test_malformed_exit_code_is_an_error() -> None:
    line = recorded("sacct_provisional.txt").replace("|0:0|", "|zero|")
    with pytest.raises(SlurmOutputError, match="exit code"):
        parse_sacct(line)


def test_array_tasks_end_with_their_own_exit_code_or_signal() -> None:
    rows = {row.job_id: row for row in parse_sacct(recorded("sacct_array_ended.txt"))}
    assert len(rows) == 10
    failed = accounting_observation(rows["551_2"])
    killed = accounting_observation(rows["551_5"])
    assert (failed.state, failed.exit_code, failed.signal) == ("FAILED", 3, None)
    assert (killed.state, killed.exit_code, killed.signal) == ("FAILED", 0, 9)
    # The last task to start has the array's own id as its raw id.
    assert (rows["551_9"].raw_job_id, rows["551_9"].task_keys) == ("551", ["551_9"])


def test_pending_array_remainder_stands_for_each_task() -> None:
    rows = {row.job_id: row for row in parse_sacct(recorded("sacct_array_tasks.txt"))}
    remainder = rows["551_[4-9%2]"]
    assert remainder.task_keys == [f"551_{task}" for task in range(4, 10)]
    assert (remainder.state, remainder.raw_job_id, remainder.reason) == (
        "PENDING",
        "551",
        "JobArrayTaskLimit",
    )
