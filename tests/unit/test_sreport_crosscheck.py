from accounting.sreport_crosscheck import (
    BucketUsage,
    CrosscheckRow,
    RecordUsage,
    UsageSpan,
    bucket_starts,
    compare_usage,
    format_table,
    record_usage,
    rolled_up_until,
    rollup_last_ran,
    split_span,
    usage_by_bucket,
)
from slurm.usage_records import TresCounts, UsageRecord

HOUR = 3600
T0 = 1_795_305_600  # 2026-11-22T00:00:00Z
TWO_HOURS = [T0, T0 + HOUR]


def compare(
    usage: dict[tuple[int, str], BucketUsage],
    sreport: dict[tuple[int, str], dict[str, int]],
    *,
    rolled_up_until: int = T0 + 10 * HOUR,
) -> list[CrosscheckRow]:
    return compare_usage(usage, sreport, bucket_s=HOUR, rolled_up_until=rolled_up_until)


def entry(start: int, end: int, *, cpu: int = 2, gpu: int = 1, account: str = "acct_a") -> UsageSpan:
    """A ledger entry's usage: ``cpu`` and ``gpu`` held over [start, end); negative for a reversal."""
    return UsageSpan(account, start, end, cpu * (end - start), gpu * (end - start))


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


def test_bucket_starts_are_aligned_to_utc_boundaries() -> None:
    assert bucket_starts(T0 + 100, T0 + 2 * HOUR, HOUR) == [T0, T0 + HOUR]
    assert bucket_starts(T0, T0 + HOUR + 1, HOUR) == [T0, T0 + HOUR]
    assert bucket_starts(T0, T0, HOUR) == []


def test_an_entry_spanning_two_hour_buckets_splits_exactly() -> None:
    span = entry(T0 + HOUR - 600, T0 + HOUR + 300, cpu=3, gpu=1)
    assert list(split_span(span, TWO_HOURS, HOUR)) == [
        (T0, {"cpu": 1800, "gres/gpu": 600}),
        (T0 + HOUR, {"cpu": 900, "gres/gpu": 300}),
    ]
    usage = usage_by_bucket([span], [], TWO_HOURS, HOUR)
    assert usage[(T0, "acct_a")].seconds == {"cpu": 1800, "gres/gpu": 600}
    assert usage[(T0 + HOUR, "acct_a")].seconds == {"cpu": 900, "gres/gpu": 300}
    assert usage[(T0, "acct_a")].rounding == {"cpu": 3, "gres/gpu": 1}


def test_uneven_seconds_still_add_up_and_reversals_negate_piece_by_piece() -> None:
    # Not a whole TRES count per second (no real entry is): the pieces still add up exactly.
    span = UsageSpan("acct_a", T0 + HOUR - 1, T0 + HOUR + 2, 10, 0)
    reversal = UsageSpan("acct_a", T0 + HOUR - 1, T0 + HOUR + 2, -10, 0)
    pieces = [seconds["cpu"] for _, seconds in split_span(span, TWO_HOURS, HOUR)]
    reversed_pieces = [seconds["cpu"] for _, seconds in split_span(reversal, TWO_HOURS, HOUR)]
    assert sum(pieces) == 10
    assert reversed_pieces == [-piece for piece in pieces]


def test_usage_outside_the_buckets_is_not_counted() -> None:
    usage = usage_by_bucket([entry(T0 - 500, T0 + 100, cpu=1, gpu=0)], [], [T0], HOUR)
    assert usage[(T0, "acct_a")].seconds == {"cpu": 100, "gres/gpu": 0}


def test_a_reversal_nets_out_and_its_replacement_counts() -> None:
    posted = entry(T0, T0 + 1000, cpu=2)
    reversal = UsageSpan("acct_a", T0, T0 + 1000, -posted.cpu_seconds, -posted.gpu_seconds)
    replacement = entry(T0, T0 + 600, cpu=2)
    usage = usage_by_bucket([posted, reversal, replacement], [], [T0], HOUR)
    assert usage[(T0, "acct_a")].seconds == {"cpu": 1200, "gres/gpu": 600}
    assert usage[(T0, "acct_a")].rounding == {"cpu": 2, "gres/gpu": 1}
    [cpu, gpu] = compare(usage, {(T0, "acct_a"): {"cpu": 1200, "gres/gpu": 600}})
    assert (cpu.reason, gpu.reason) == ("match", "match")


def test_a_doubled_entry_is_unexplained() -> None:
    usage = usage_by_bucket([entry(T0, T0 + 1000), entry(T0, T0 + 1000)], [], [T0], HOUR)
    [cpu, gpu] = compare(usage, {(T0, "acct_a"): {"cpu": 2000, "gres/gpu": 1000}})
    assert (cpu.difference, cpu.reason) == (-2000, "unexplained")
    assert gpu.reason == "unexplained"


def test_records_explain_only_what_the_ledger_lacks() -> None:
    running = record_usage(record("RUNNING", T0 + 50, None), posted=False, now=T0 + 600)
    posted = record_usage(record("COMPLETED", T0, T0 + 100), posted=True, now=T0 + 600)
    unposted = record_usage(record("COMPLETED", T0 + 100, T0 + 400, gpu=0), posted=False, now=T0 + 600)
    assert running == RecordUsage(
        UsageSpan("acct_a", T0 + 50, T0 + 600, 1100, 550), final=False, posted=False
    )
    assert record_usage(record("CANCELLED", T0 + 70, T0 + 70), posted=False, now=T0 + 600) is None
    assert record_usage(record("PENDING", None, None), posted=False, now=T0 + 600) is None
    assert running is not None and posted is not None and unposted is not None
    usage = usage_by_bucket([], [running, posted, unposted], [T0], HOUR)[(T0, "acct_a")]
    assert usage.seconds == {}
    assert usage.provisional == {"cpu": 1100, "gres/gpu": 550}
    assert usage.unposted == {"cpu": 600, "gres/gpu": 0}
    assert usage.seen


def test_equal_sides_match() -> None:
    usage = {(T0, "acct_a"): BucketUsage(seconds={"cpu": 720, "gres/gpu": 360}, seen=True)}
    rows = compare(usage, {(T0, "acct_a"): {"cpu": 720, "gres/gpu": 360}})
    assert [(row.tres, row.reason, row.difference) for row in rows] == [
        ("cpu", "match", 0),
        ("gres/gpu", "match", 0),
    ]


def test_bucket_not_rolled_up_yet_explains_missing_sreport_usage() -> None:
    usage = {(T0 + 10 * HOUR, "acct_a"): BucketUsage(seconds={"cpu": 720}, seen=True)}
    [row] = compare(usage, {})
    assert row.reason == "not_rolled_up"
    assert row.difference == -720
    assert "hourly" in row.explanation


def test_running_usage_that_sreport_has_not_rolled_up_is_not_a_match() -> None:
    usage = {(T0 + 10 * HOUR, "acct_a"): BucketUsage(provisional={"cpu": 500}, seen=True)}
    [row] = compare(usage, {})
    assert (row.difference, row.reason) == (0, "not_rolled_up")


def test_running_jobs_explain_extra_sreport_usage() -> None:
    usage = {
        (T0, "acct_a"): BucketUsage(
            seconds={"cpu": 100}, provisional={"cpu": 500}, rounding={"cpu": 3}, seen=True
        )
    }
    [row] = compare(usage, {(T0, "acct_a"): {"cpu": 601}})
    assert row.reason == "running"
    assert row.provisional_seconds == 500


def test_small_differences_are_rounding_larger_ones_unexplained() -> None:
    usage = {(T0, "acct_a"): BucketUsage(seconds={"cpu": 1000}, rounding={"cpu": 2}, seen=True)}
    [row] = compare(usage, {(T0, "acct_a"): {"cpu": 998}})
    assert row.reason == "rounding"
    [row] = compare(usage, {(T0, "acct_a"): {"cpu": 990}})
    assert row.reason == "unexplained"


def test_a_provisional_record_prevents_rounding() -> None:
    # A stale running record sreport does not count: within the tolerance, but no rounding.
    usage = {
        (T0, "acct_a"): BucketUsage(
            seconds={"cpu": 1000}, provisional={"cpu": 400}, rounding={"cpu": 4}, seen=True
        )
    }
    [row] = compare(usage, {(T0, "acct_a"): {"cpu": 1001}})
    assert (row.difference, row.reason) == (1, "unexplained")


def test_final_records_without_ledger_entries_are_not_posted() -> None:
    usage = {(T0, "acct_a"): BucketUsage(unposted={"cpu": 300}, rounding={"cpu": 1}, seen=True)}
    [row] = compare(usage, {(T0, "acct_a"): {"cpu": 301}})
    assert row.reason == "not_posted"
    assert "reconcile --since" in row.explanation


def test_accounts_with_neither_entries_nor_records_are_not_reconciled() -> None:
    usage = {(T0, "acct_a"): BucketUsage(seconds={"cpu": 50}, rounding={"cpu": 1}, seen=True)}
    sreport = {(T0, "acct_a"): {"cpu": 50}, (T0, "no_tenant"): {"cpu": 60}}
    rows = compare(usage, sreport)
    assert {row.account: row.reason for row in rows} == {"acct_a": "match", "no_tenant": "not_reconciled"}
    assert "reconcile --since" in rows[1].explanation


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
    usage = {(T0, "acct_a"): BucketUsage(seconds={"cpu": 3600}, seen=True)}
    table = format_table(compare(usage, {(T0, "acct_a"): {"cpu": 3600}}))
    assert "2026-11-22T00:00:00Z  acct_a" in table
    assert "1 rows: 1 equal, 0 explained, 0 unexplained" in table
