"""Cross-check the ledger's usage with ``sreport`` per time bucket and explain each difference.

The ledger side is recomputed per bucket from the usage records' billable intervals (entries are
per UTC day, too coarse for hour buckets); the Slurm side is slurmdbd's rollup as ``sreport``
shows it. They differ for known reasons, which each row names: slurmdbd rolls usage up hourly
(the latest hours are not in sreport yet), running jobs count in sreport but reach the ledger
only once they end, an account may not have been reconciled (or is no tenant's), and sreport
works in whole seconds per job.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from accounting.ledger_models import UsageRecordRow
from accounting.usage_pricing import billable_interval
from gateway.storage_models import Tenant
from slurm.command_runner import CommandRunner
from slurm.sreport_usage import SREPORT_ENV_OVERRIDES, parse_sreport_usage, sreport_argv
from slurm.usage_records import TresCounts, UsageRecord

BUCKET_SECONDS = {"hour": 3600, "day": 86400}
# sreport's TRES names, and the one the ledger side is compared with.
COMPARED_TRES = ("cpu", "gres/gpu")
# slurmdbd rolls usage up once an hour, for the hours that ended before the run.
ROLLUP_INTERVAL_S = 3600
ROLLUP_LAST_RAN = re.compile(r"rollup last ran .*\((\d+)\)")
STATS_ARGV = ("sacctmgr", "show", "stats")

REASONS = {
    "match": "equal",
    "not_rolled_up": "slurmdbd has not rolled this bucket up yet (rollup runs hourly); sreport lags",
    "running": "jobs still running: sreport counts their usage so far, the ledger only once they end",
    "rounding": "within sreport's whole-second rounding (at most one second per job and TRES unit)",
    "not_a_tenant": "the account is no tenant's and has no usage records in the ledger",
    "not_reconciled": "no usage records of this account in the window: run `slurm-gateway reconcile --since`",
    "unexplained": "unexplained: check for late records (slurmdbd outage) or removed associations",
}


@dataclass(frozen=True, slots=True)
class UsageInterval:
    """One record's usage as the cross-check counts it: TRES counts over [start, end)."""

    account: str
    start: int
    end: int
    cpu: int
    gpu: int
    final: bool  # False: running, provisional (not in the ledger yet)


@dataclass(slots=True)
class BucketUsage:
    """An account's usage in one bucket, ledger (final records) and provisional (running) apart."""

    seconds: dict[str, int] = field(default_factory=dict)  # TRES name -> ledger TRES-seconds
    provisional: dict[str, int] = field(default_factory=dict)  # TRES name -> running TRES-seconds
    rounding: dict[str, int] = field(default_factory=dict)  # TRES name -> tolerance in TRES-seconds


@dataclass(frozen=True, slots=True)
class CrosscheckRow:
    """One bucket, account and TRES: both sides, and why they differ."""

    bucket_start: int
    bucket_end: int
    account: str
    tres: str
    ledger_seconds: int
    sreport_seconds: int
    provisional_seconds: int
    reason: str  # a key of REASONS

    @property
    def difference(self) -> int:
        """sreport minus ledger, in TRES-seconds."""
        return self.sreport_seconds - self.ledger_seconds

    @property
    def explanation(self) -> str:
        """The reason in words."""
        return REASONS[self.reason]


def bucket_starts(start: int, end: int, bucket_s: int) -> list[int]:
    """Starts of the UTC-aligned buckets that cover [start, end)."""
    first = start - start % bucket_s
    return list(range(first, end, bucket_s))


def usage_intervals(records: Iterable[UsageRecord], *, now: int) -> list[UsageInterval]:
    """Each record's counted interval: billable (final) or from start to now (running)."""
    intervals = []
    for record in records:
        if record.is_final:
            interval = billable_interval(record)
        elif record.start_time is not None:
            interval = (record.start_time, max(now, record.start_time))
        else:
            interval = None
        if interval is None or interval[1] <= interval[0]:
            continue
        intervals.append(
            UsageInterval(
                record.account, interval[0], interval[1], record.alloc.cpu, record.alloc.gpu, record.is_final
            )
        )
    return intervals


def usage_by_bucket(
    intervals: Iterable[UsageInterval], buckets: Sequence[int], bucket_s: int
) -> dict[tuple[int, str], BucketUsage]:
    """TRES-seconds per (bucket start, account), splitting each interval at bucket edges."""
    usage: dict[tuple[int, str], BucketUsage] = defaultdict(BucketUsage)
    if not buckets:
        return {}
    first, last_end = buckets[0], buckets[-1] + bucket_s
    for interval in intervals:
        start, end = max(interval.start, first), min(interval.end, last_end)
        bucket = start - (start - first) % bucket_s
        while bucket < end:
            overlap = min(end, bucket + bucket_s) - max(start, bucket)
            entry = usage[(bucket, interval.account)]
            target = entry.seconds if interval.final else entry.provisional
            for tres, count in (("cpu", interval.cpu), ("gres/gpu", interval.gpu)):
                target[tres] = target.get(tres, 0) + count * overlap
                entry.rounding[tres] = entry.rounding.get(tres, 0) + count
            bucket += bucket_s
    return dict(usage)


def compare_usage(
    ledger: Mapping[tuple[int, str], BucketUsage],
    sreport: Mapping[tuple[int, str], Mapping[str, int]],
    *,
    bucket_s: int,
    rolled_up_until: int,
    recorded_accounts: Set[str],
    tenant_accounts: Set[str],
) -> list[CrosscheckRow]:
    """One row per (bucket, account, TRES) that either side has usage for, with its reason.

    ``sreport`` maps (bucket start, account) to TRES-seconds by TRES name; ``recorded_accounts``
    are the accounts with usage records in the window, ``tenant_accounts`` the tenants' accounts.
    """
    rows = []
    for bucket, account in sorted(set(ledger) | set(sreport)):
        usage = ledger.get((bucket, account), BucketUsage())
        reported = sreport.get((bucket, account), {})
        for tres in COMPARED_TRES:
            ledger_s = usage.seconds.get(tres, 0)
            sreport_s = reported.get(tres, 0)
            provisional_s = usage.provisional.get(tres, 0)
            if ledger_s == sreport_s == provisional_s == 0:
                continue
            reason = _reason(
                ledger_s,
                sreport_s,
                provisional_s,
                tolerance=usage.rounding.get(tres, 0),
                rolled_up=bucket + bucket_s <= rolled_up_until,
                recorded=account in recorded_accounts,
                tenant=account in tenant_accounts,
            )
            rows.append(
                CrosscheckRow(
                    bucket, bucket + bucket_s, account, tres, ledger_s, sreport_s, provisional_s, reason
                )
            )
    return rows


def _reason(
    ledger_s: int,
    sreport_s: int,
    provisional_s: int,
    *,
    tolerance: int,
    rolled_up: bool,
    recorded: bool,
    tenant: bool,
) -> str:
    difference = sreport_s - ledger_s
    if difference == 0 and provisional_s == 0:
        return "match"
    if not rolled_up:
        return "not_rolled_up"
    if provisional_s and abs(difference - provisional_s) <= tolerance:
        return "running"
    if abs(difference) <= tolerance:
        return "rounding"
    if ledger_s == 0 and provisional_s == 0 and not recorded:
        return "not_reconciled" if tenant else "not_a_tenant"
    return "unexplained"


def rollup_last_ran(stats_text: str) -> int | None:
    """When slurmdbd last rolled usage up, from ``sacctmgr show stats`` (None if not shown)."""
    match = ROLLUP_LAST_RAN.search(stats_text)
    return int(match.group(1)) if match else None


def rolled_up_until(last_ran: int | None, *, now: int) -> int:
    """End of the last hour slurmdbd has rolled up (a rollup covers the hours ended before it ran)."""
    reference = last_ran if last_ran is not None else now - ROLLUP_INTERVAL_S
    return reference - reference % ROLLUP_INTERVAL_S


def sreport_by_bucket(
    runner: CommandRunner, buckets: Sequence[int], bucket_s: int
) -> dict[tuple[int, str], dict[str, int]]:
    """sreport's TRES-seconds per (bucket start, account): one sreport call per bucket.

    Per-user rows are summed per account: an account's own row also includes its sub-accounts.
    """
    env = {**os.environ, **SREPORT_ENV_OVERRIDES}
    reported: dict[tuple[int, str], dict[str, int]] = {}
    for bucket in buckets:
        text = runner.run(sreport_argv(bucket, bucket + bucket_s, ",".join(COMPARED_TRES)), env=env)
        for usage in parse_sreport_usage(text):
            if usage.user is None or usage.tres not in COMPARED_TRES:
                continue
            per_tres = reported.setdefault((bucket, usage.account), {})
            per_tres[usage.tres] = per_tres.get(usage.tres, 0) + usage.seconds
    return reported


def load_usage_records(session_factory: sessionmaker[Session], start: int, end: int) -> list[UsageRecord]:
    """Usage records that started before ``end`` and had not ended before ``start``."""
    with session_factory() as session:
        rows = session.scalars(
            select(UsageRecordRow).where(
                UsageRecordRow.start_time.is_not(None),
                UsageRecordRow.start_time < end,
                or_(UsageRecordRow.end_time.is_(None), UsageRecordRow.end_time > start),
            )
        ).all()
        return [_usage_record(row) for row in rows]


def _usage_record(row: UsageRecordRow) -> UsageRecord:
    tres = TresCounts(cpu=row.cpu, mem_mb=row.mem_mb, gpu=row.gpu, node=row.node)
    return UsageRecord(
        cluster=row.cluster,
        job_id_raw=row.job_id_raw,
        job_id=row.job_id,
        state=row.state,
        account=row.account,
        user=row.user,
        partition=row.partition,
        qos=row.qos,
        submit_time=row.submit_time,
        start_time=row.start_time,
        end_time=row.end_time,
        elapsed_s=row.elapsed_s,
        time_limit_s=row.time_limit_s,
        node_count=row.node_count,
        alloc=tres,
        requested=tres,
        tasks=row.tasks,
    )


def tenant_accounts(session_factory: sessionmaker[Session]) -> set[str]:
    """Every tenant's Slurm account."""
    with session_factory() as session:
        return set(session.scalars(select(Tenant.slurm_account)).all())


def crosscheck(
    session_factory: sessionmaker[Session],
    runner: CommandRunner,
    *,
    start: int,
    end: int,
    bucket: str,
    now: int,
) -> list[CrosscheckRow]:
    """Compare the ledger with sreport over [start, end) in ``bucket`` ("hour" or "day") buckets."""
    bucket_s = BUCKET_SECONDS[bucket]
    buckets = bucket_starts(start, end, bucket_s)
    records = load_usage_records(session_factory, buckets[0], buckets[-1] + bucket_s) if buckets else []
    ledger = usage_by_bucket(usage_intervals(records, now=now), buckets, bucket_s)
    reported = sreport_by_bucket(runner, buckets, bucket_s)
    last_ran = rollup_last_ran(runner.run(list(STATS_ARGV)))
    return compare_usage(
        ledger,
        reported,
        bucket_s=bucket_s,
        rolled_up_until=rolled_up_until(last_ran, now=now),
        recorded_accounts={record.account for record in records},
        tenant_accounts=tenant_accounts(session_factory),
    )


def format_table(rows: Sequence[CrosscheckRow]) -> str:
    """A plain-text table (hours of TRES use, both sides), then a one-line summary."""
    header = ("bucket (UTC)", "account", "tres", "ledger_h", "sreport_h", "running_h", "diff_s", "reason")
    lines = [header]
    for row in rows:
        lines.append(
            (
                _utc(row.bucket_start),
                row.account,
                row.tres,
                _hours(row.ledger_seconds),
                _hours(row.sreport_seconds),
                _hours(row.provisional_seconds),
                str(row.difference),
                row.reason,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    ]
    text.append(summary_line(rows))
    text.extend(f"  {reason}: {REASONS[reason]}" for reason in sorted({row.reason for row in rows}))
    return "\n".join(text)


def summary_line(rows: Sequence[CrosscheckRow]) -> str:
    """How many rows match, differ for a known reason, or differ unexplained."""
    matching = sum(row.reason == "match" for row in rows)
    unexplained = sum(row.reason == "unexplained" for row in rows)
    explained = len(rows) - matching - unexplained
    return f"{len(rows)} rows: {matching} equal, {explained} explained, {unexplained} unexplained"


def row_document(row: CrosscheckRow) -> dict[str, object]:
    """The row as a JSON-ready dict."""
    return {
        "bucket_start": _utc(row.bucket_start),
        "bucket_end": _utc(row.bucket_end),
        "account": row.account,
        "tres": row.tres,
        "ledger_seconds": row.ledger_seconds,
        "sreport_seconds": row.sreport_seconds,
        "provisional_seconds": row.provisional_seconds,
        "difference_seconds": row.difference,
        "reason": row.reason,
        "explanation": row.explanation,
    }


def _utc(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hours(seconds: int) -> str:
    return f"{seconds / 3600:.3f}"
