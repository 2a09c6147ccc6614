from accounting.sreport_crosscheck import (
    BucketUsage,
    CrosscheckRow,
    UsageInterval,
    bucket_starts,
    compare_usage,
    format_table,
    rolled_up_until,
    rollup_last_ran,
    usage_by_bucket,
    usage_intervals,
)
from slurm.usage_records import TresCounts, UsageRecord

HOUR = 3600
T0 = 1_795_305_600  # 2026-11-22T00:00:00Z


def compare(
    ledger: dict[tuple[int, str], BucketUsage],
    sreport: dict[tuple[int, str], dict[str, int]],
    *,
    rolled_up_until: int = T0 + 10 * HOUR,
    recorded: frozenset[str] = frozenset({"acct_a"}),
    tenants: frozenset[str] = frozenset({"acct_a"}),
) -> list[CrosscheckRow]:
    return compare_usage(
        ledger,
        sreport,
        bucket_s=HOUR,
        rolled_up_until=rolled_up_until,
        recorded_accounts=recorded,
        tenant_accounts=tenants,
    )


def test_bucket_starts_are_aligned_to_utc_boundaries() -> None:
    assert bucket_starts(T0 + 100, T0 + 2 * HOUR, HOUR) == [T0, T0 + HOUR]
    assert bucket_starts(T0, T0 + HOUR + 1, HOUR) == [T0, T0 + HOUR]
    assert bucket_starts(T0, T0, HOUR) == []


def record(state: str, start: int | None, end: int | None, *, cpu: int = 2, gpu: int = 1) -> UsageRecord:
    tres = TresCounts(cpu=cpu, mem_mb=1000, gpu=gpu, node=1)
    return UsageRecord(
        cluster="dev",
        job_id_raw="7",
        job_id="7",
        state=state,
        account="acct_a",
        user="alice",
        partition="gpu",
        qos="normal",
        submit_time=T0,
        start_time=start,
        end_time=end,
        elapsed_s=0 if start is None else (end or T0 + 600) - start,
        time_limit_s=3600,
        node_count=1,
        alloc=tres,
        requested=tres,
        tasks=1,
    )


def test_final_records_count_as_billed_running_ones_until_now_others_not_at_all() -> None:
    records = [
        record("COMPLETED", T0, T0 + 100),
        record("RUNNING", T0 + 50, None),
        record("CANCELLED", T0 + 70, T0 + 70),  # cancelled while pending: Start = End
        record("PENDING", None, None),
    ]
    intervals = usage_intervals(records, now=T0 + 600)
    assert intervals == [
        UsageInterval("acct_a", T0, T0 + 100, cpu=2, gpu=1, final=True),
        UsageInterval("acct_a", T0 + 50, T0 + 600, cpu=2, gpu=1, final=False),
    ]


def test_usage_is_split_at_bucket_edges_and_running_usage_kept_apart() -> None:
    intervals = [
        UsageInterval("acct_a", T0 + HOUR - 600, T0 + HOUR + 300, cpu=2, gpu=1, final=True),
        UsageInterval("acct_a", T0 + HOUR + 1000, T0 + HOUR + 1100, cpu=4, gpu=0, final=False),
    ]
    usage = usage_by_bucket(intervals, [T0, T0 + HOUR], HOUR)
    assert usage[(T0, "acct_a")].seconds == {"cpu": 1200, "gres/gpu": 600}
    assert usage[(T0 + HOUR, "acct_a")].seconds == {"cpu": 600, "gres/gpu": 300}
    assert usage[(T0 + HOUR, "acct_a")].provisional == {"cpu": 400, "gres/gpu": 0}


def test_usage_outside_the_buckets_is_not_counted() -> None:
    intervals = [UsageInterval("acct_a", T0 - 500, T0 + 100, cpu=1, gpu=0, final=True)]
    usage = usage_by_bucket(intervals, [T0], HOUR)
    assert usage[(T0, "acct_a")].seconds["cpu"] == 100


def test_equal_sides_match() -> None:
    ledger = {(T0, "acct_a"): BucketUsage(seconds={"cpu": 720, "gres/gpu": 360})}
    rows = compare(ledger, {(T0, "acct_a"): {"cpu": 720, "gres/gpu": 360}})
    assert [(row.tres, row.reason, row.difference) for row in rows] == [
        ("cpu", "match", 0),
        ("gres/gpu", "match", 0),
    ]


def test_bucket_not_rolled_up_yet_explains_missing_sreport_usage() -> None:
    ledger = {(T0 + 10 * HOUR, "acct_a"): BucketUsage(seconds={"cpu": 720})}
    [row] = compare(ledger, {})
    assert row.reason == "not_rolled_up"
    assert row.difference == -720
    assert "hourly" in row.explanation


def test_running_usage_that_sreport_has_not_rolled_up_is_not_a_match() -> None:
    ledger = {(T0 + 10 * HOUR, "acct_a"): BucketUsage(provisional={"cpu": 500})}
    [row] = compare(ledger, {})
    assert (row.difference, row.reason) == (0, "not_rolled_up")


def test_running_jobs_explain_extra_sreport_usage() -> None:
    ledger = {
        (T0, "acct_a"): BucketUsage(seconds={"cpu": 100}, provisional={"cpu": 500}, rounding={"cpu": 3})
    }
    [row] = compare(ledger, {(T0, "acct_a"): {"cpu": 601}})
    assert row.reason == "running"
    assert row.provisional_seconds == 500


def test_small_differences_are_rounding_larger_ones_unexplained() -> None:
    ledger = {(T0, "acct_a"): BucketUsage(seconds={"cpu": 1000}, rounding={"cpu": 2})}
    [row] = compare(ledger, {(T0, "acct_a"): {"cpu": 998}})
    assert row.reason == "rounding"
    [row] = compare(ledger, {(T0, "acct_a"): {"cpu": 990}})
    assert row.reason == "unexplained"


def test_accounts_missing_from_the_ledger_are_named() -> None:
    sreport = {(T0, "other"): {"cpu": 50}, (T0, "acct_b"): {"cpu": 60}}
    rows = compare({}, sreport, tenants=frozenset({"acct_a", "acct_b"}))
    assert {row.account: row.reason for row in rows} == {"acct_b": "not_reconciled", "other": "not_a_tenant"}


def test_rollup_time_from_sacctmgr_stats() -> None:
    stats = (
        "Data since                    Sun Nov 22 11:13:10 2026 (1795345990)\n"
        "All statistics are in microseconds\n"
        "Internal DBD rollup last ran Sun Nov 22 11:13:10 2026 (1795345990)\n"
    )
    assert rollup_last_ran(stats) == 1_795_345_990
    assert rolled_up_until(1_795_345_990, now=1_795_346_000) == T0 + 11 * HOUR
    assert rollup_last_ran("no statistics") is None
    assert rolled_up_until(None, now=T0 + 11 * HOUR + 5) == T0 + 10 * HOUR


def test_table_lists_rows_and_a_summary() -> None:
    rows = compare({(T0, "acct_a"): BucketUsage(seconds={"cpu": 3600})}, {(T0, "acct_a"): {"cpu": 3600}})
    table = format_table(rows)
    assert "2026-11-22T00:00:00Z  acct_a" in table
    assert "1 rows: 1 equal, 0 explained, 0 unexplained" in table
