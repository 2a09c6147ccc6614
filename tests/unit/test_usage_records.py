import pytest

from accounting.usage_pricing import billable_interval
from slurm.errors import SlurmOutputError
from slurm.usage_records import (
    USAGE_ENV_OVERRIDES,
    USAGE_FIELDS,
    TresCounts,
    UsageRecord,
    iter_usage_records,
    parse_tres,
    parse_usage_records,
    usage_argv,
    usage_argv_for_jobs,
)
from tests.unit.slurm_output_fixtures import recorded

# sacct_usage_mixed.txt: taken while the requeued job 2163 ran again and GPU job 2174 ran;
# sacct_usage_settled.txt: the same window after both ended (2174 cancelled while running).


def records(name: str) -> dict[tuple[str, int], UsageRecord]:
    parsed = parse_usage_records(recorded(name))
    by_run = {(record.job_id, record.submit_time): record for record in parsed}
    assert len(by_run) == len(parsed)
    return by_run


def only(name: str, job_id: str) -> UsageRecord:
    (record,) = [record for (shown, _), record in records(name).items() if shown == job_id]
    return record


def test_argv_always_asks_for_every_run_of_every_allocation_in_utc() -> None:
    argv = usage_argv(1795305600, 1795392000)
    assert argv[:7] == [
        "sacct",
        "--duplicates",
        "--allocations",
        "--allusers",
        "--parsable2",
        "--noheader",
        "--noconvert",
    ]
    assert argv[7:11] == ["--starttime", "2026-11-22T00:00:00", "--endtime", "2026-11-23T00:00:00"]
    assert argv[11] == "--format=" + ",".join(USAGE_FIELDS)
    assert not [arg for arg in argv if arg.startswith(("--state", "-s"))]
    assert USAGE_ENV_OVERRIDES == {"TZ": "UTC", "SLURM_TIME_FORMAT": "%s"}


def test_completed_gpu_job() -> None:
    record = only("sacct_usage_settled.txt", "2160")
    assert record.identity == ("dev", "2160", 1795346191)
    assert (record.state, record.account, record.user, record.partition, record.qos) == (
        "COMPLETED",
        "h1acct",
        "alice",
        "gpu",
        "normal",
    )
    assert (record.start_time, record.end_time, record.elapsed_s, record.time_limit_s) == (
        1795346191,
        1795346194,
        3,
        300,
    )
    assert record.alloc == TresCounts(cpu=2, mem_mb=1000, gpu=2, node=1)
    assert record.requested == record.alloc
    assert (record.node_count, record.tasks, record.is_final) == (1, 1, True)


def test_cpu_job_has_no_gpus() -> None:
    record = only("sacct_usage_settled.txt", "2161")
    assert (record.partition, record.elapsed_s) == ("cpu", 2)
    assert record.alloc == TresCounts(cpu=1, mem_mb=500, gpu=0, node=1)


def test_requeued_job_is_two_runs_with_one_raw_id_and_their_own_submit_times() -> None:
    runs = sorted(
        (record for record in records("sacct_usage_settled.txt").values() if record.job_id_raw == "2163"),
        key=lambda record: record.submit_time,
    )
    assert [(run.state, run.submit_time, run.start_time, run.end_time, run.elapsed_s) for run in runs] == [
        ("REQUEUED", 1795346191, 1795346191, 1795346200, 9),
        # The new run's Submit is the moment of the requeue.
        ("COMPLETED", 1795346200, 1795346323, 1795346363, 40),
    ]
    assert runs[0].identity != runs[1].identity
    assert all(run.is_final for run in runs)


def test_requeued_job_running_again_is_provisional_while_its_first_run_is_final() -> None:
    earlier = records("sacct_usage_mixed.txt")[("2163", 1795346191)]
    again = records("sacct_usage_mixed.txt")[("2163", 1795346200)]
    assert (earlier.state, earlier.is_final) == ("REQUEUED", True)
    assert (again.state, again.start_time, again.end_time, again.elapsed_s) == (
        "RUNNING",
        1795346323,
        None,
        11,
    )
    assert not again.is_final


def test_running_gpu_job_then_cancelled() -> None:
    running = only("sacct_usage_mixed.txt", "2174")
    assert (running.state, running.end_time, running.elapsed_s, running.time_limit_s) == (
        "RUNNING",
        None,
        131,
        1800,
    )
    assert running.alloc == TresCounts(cpu=1, mem_mb=1024, gpu=1, node=1)
    assert not running.is_final
    cancelled = only("sacct_usage_settled.txt", "2174")
    assert cancelled.identity == running.identity
    assert (cancelled.state, cancelled.start_time, cancelled.end_time, cancelled.elapsed_s) == (
        "CANCELLED",
        1795346203,
        1795346368,
        165,
    )
    assert cancelled.is_final


def test_cancelled_before_start_has_no_start_and_no_allocation() -> None:
    record = only("sacct_usage_settled.txt", "2165")
    assert (record.state, record.start_time, record.end_time, record.elapsed_s) == (
        "CANCELLED",
        None,
        1795346249,
        0,
    )
    assert record.time_limit_s is None
    assert record.alloc == TresCounts()
    assert record.requested == TresCounts(cpu=1, mem_mb=200, gpu=1, node=1)
    assert record.is_final


def test_cancelled_moments_after_submission_never_started_despite_its_start_time() -> None:
    # sacct prints Start = End for it; AllocTRES is empty.
    record = only("sacct_usage_cancelled_at_once.txt", "2208")
    assert (record.state, record.start_time, record.end_time, record.elapsed_s) == (
        "CANCELLED",
        None,
        1795346474,
        0,
    )
    assert record.alloc == TresCounts()


def test_array_tasks_are_records_of_their_own() -> None:
    settled = records("sacct_usage_settled.txt")
    tasks = [record for (job_id, _), record in settled.items() if job_id.startswith("2162_")]
    assert sorted(task.job_id for task in tasks) == [f"2162_{index}" for index in range(8)]
    assert len({task.job_id_raw for task in tasks}) == 8
    # The array's own id ends up on its last task.
    assert only("sacct_usage_settled.txt", "2162_7").job_id_raw == "2162"
    assert all(task.tasks == 1 and task.is_final and task.elapsed_s == 4 for task in tasks)


def test_pending_array_remainder_counts_each_task() -> None:
    pending = only("sacct_usage_mixed.txt", "2186_[0-3]")
    assert (pending.state, pending.tasks, pending.start_time, pending.time_limit_s) == (
        "PENDING",
        4,
        None,
        None,
    )
    assert pending.alloc == TresCounts()
    assert not pending.is_final
    cancelled = only("sacct_usage_settled.txt", "2186_[0-3]")
    assert (cancelled.state, cancelled.tasks, cancelled.start_time, cancelled.is_final) == (
        "CANCELLED",
        4,
        None,
        True,
    )


def test_het_job_components_are_separate_records() -> None:
    cpu_part = only("sacct_usage_settled.txt", "2166+0")
    gpu_part = only("sacct_usage_settled.txt", "2166+1")
    assert (cpu_part.job_id_raw, cpu_part.partition, cpu_part.alloc.gpu) == ("2166", "cpu", 0)
    assert (gpu_part.job_id_raw, gpu_part.partition, gpu_part.alloc.gpu) == ("2167", "gpu", 1)


def test_requeue_hold_leaves_a_final_requeued_run() -> None:
    record = only("sacct_usage_settled.txt", "2187")
    assert (record.state, record.elapsed_s, record.is_final) == ("REQUEUED", 3, True)


def test_iterator_streams_lines_and_skips_blank_ones() -> None:
    lines = iter(["", *recorded("sacct_usage_settled.txt").splitlines(keepends=True), "\n"])
    streamed = iter_usage_records(lines)
    first = next(streamed)
    assert first.job_id == "2160"
    assert len(list(streamed)) == len(parse_usage_records(recorded("sacct_usage_settled.txt"))) - 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("billing=2,cpu=2,gres/gpu=2,mem=1000M,node=1", TresCounts(cpu=2, mem_mb=1000, gpu=2, node=1)),
        # Clusters that account typed GPUs list both: the GPU counts once.
        ("billing=2,cpu=2,gres/gpu:h100=1,gres/gpu=1,mem=1000M,node=1", TresCounts(2, 1000, 1, 1)),
        ("cpu=4,gres/gpu:h100=2,gres/gpu:a100=1,mem=2G,node=2", TresCounts(4, 2048, 3, 2)),
        ("cpu=1,mem=1536K,energy=5,fs/disk=3,gres/mps=100", TresCounts(cpu=1, mem_mb=2)),
        ("cpu=1,mem=1T,node=1", TresCounts(cpu=1, mem_mb=1048576, node=1)),
        ("mem=512", TresCounts(mem_mb=512)),
        ("", TresCounts()),
    ],
)
def test_parse_tres(text: str, expected: TresCounts) -> None:
    assert parse_tres(text) == expected


@pytest.mark.parametrize("text", ["cpu", "cpu=", "cpu=two", "mem=lotsM", "gres/gpu=-1", "=3", "mem=NaNG"])
def test_malformed_tres_is_refused(text: str) -> None:
    with pytest.raises(SlurmOutputError):
        parse_tres(text)


def good_line() -> str:
    return recorded("sacct_usage_settled.txt").splitlines()[0]


@pytest.mark.parametrize(
    "line",
    [
        good_line() + "|extra",
        good_line().rsplit("|", 1)[0],
        good_line().replace("|1795346191|", "|2026-11-22T11:16:31|", 1),
        good_line().replace("dev|2160|", "dev|x2160|"),
        good_line().replace("|3|5|1|", "|3|soon|1|"),
    ],
)
def test_malformed_lines_are_refused(line: str) -> None:
    with pytest.raises(SlurmOutputError):
        parse_usage_records(line)


def test_a_resized_job_is_two_final_records_billed_one_after_the_other() -> None:
    before, after = parse_usage_records(recorded("sacct_usage_resized.txt"))
    assert (before.state, before.is_final, before.alloc.node, before.alloc.cpu) == ("RESIZING", True, 2, 2)
    assert (after.state, after.is_final, after.alloc.node, after.alloc.cpu) == ("CANCELLED", True, 1, 1)
    # The resized record keeps the first Start, but its allocation began at the resize.
    assert after.start_time == before.start_time
    assert after.submit_time == before.end_time
    assert billable_interval(before) == (before.start_time, before.end_time)
    assert billable_interval(after) == (after.submit_time, after.end_time)


def test_a_reread_by_job_id_has_no_window_and_only_raw_ids() -> None:
    argv = usage_argv_for_jobs(["2355", "2168"])
    assert "--jobs=2355,2168" in argv and "--duplicates" in argv and "--allusers" in argv
    assert not any(arg.startswith(("--starttime", "--endtime", "--state")) for arg in argv)
    with pytest.raises(ValueError, match="raw numeric"):
        usage_argv_for_jobs(["2162_0"])
