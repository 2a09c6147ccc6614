"""Cross-check the ledger's usage with ``sreport`` per time bucket and explain each difference.

The ledger side is the sum of the ledger entries, reversals included, per account and bucket:
an entry holds constant TRES counts over [usage_start, usage_end), so it splits into hour or
day buckets exactly. The Slurm side is slurmdbd's rollup as ``sreport`` shows it. The usage
records only explain differences: running jobs count in sreport but reach the ledger only once
they end, and a final record the reconciler never posted is missing. Other known reasons:
slurmdbd rolls usage up hourly (the latest hours are not in sreport yet), an account may not
have been reconciled at all, and sreport works in whole seconds per job.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from accounting.ledger_models import LedgerEntry, UsageRecordRow
from accounting.usage_pricing import billable_interval
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
    "not_posted": "ended jobs' usage records were never posted to the ledger: "
    "run `slurm-gateway reconcile --since`",
    "rounding": "within sreport's whole-second rounding (at most one second per job and TRES unit)",
    "not_reconciled": "no ledger entries or usage records of this account here: "
    "run `slurm-gateway reconcile --since`",
    "unexplained": "unexplained: check for lost or doubled ledger entries, late records "
    "(slurmdbd outage) or removed associations",
}


@dataclass(frozen=True, slots=True)
class UsageSpan:
    """An account's TRES-seconds spent at a constant rate over [start, end): a ledger entry's or a job's.

    Seconds are negative for a reversal.
    """

    account: str
    start: int
    end: int
    cpu_seconds: int
    gpu_seconds: int

    def by_tres(self) -> tuple[tuple[str, int], ...]:
        """(sreport TRES name, TRES-seconds) for each compared TRES."""
        return (("cpu", self.cpu_seconds), ("gres/gpu", self.gpu_seconds))


@dataclass(frozen=True, slots=True)
class RecordUsage:
    """A usage record's usage as far as it explains differences, and what the ledger should hold of it."""

    span: UsageSpan
    final: bool  # False: running, provisional (the ledger holds it once it ends)
    posted: bool  # the reconciler posted its entries (posted_digest set)


@dataclass(slots=True)
class BucketUsage:
    """An account's usage in one bucket: the ledger's, and the records' usage the ledger lacks."""

    seconds: dict[str, int] = field(default_factory=dict)  # TRES name -> net ledger TRES-seconds
    provisional: dict[str, int] = field(default_factory=dict)  # TRES name -> running TRES-seconds
    unposted: dict[str, int] = field(default_factory=dict)  # TRES name -> final, never-posted TRES-seconds
    rounding: dict[str, int] = field(default_factory=dict)  # TRES name -> tolerance in TRES-seconds
    seen: bool = False  # some ledger entry or usage record of the account overlaps the bucket


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


def record_usage(record: UsageRecord, *, posted: bool, now: int) -> RecordUsage | None:
    """The record's usage: billable (final) or from start to now (running); None if it used nothing."""
    if record.is_final:
        interval = billable_interval(record)
    elif record.start_time is not None:
        interval = (record.start_time, max(now, record.start_time))
    else:
        interval = None
    if interval is None or interval[1] <= interval[0]:
        return None
    start, end = interval
    span = UsageSpan(
        record.account, start, end, record.alloc.cpu * (end - start), record.alloc.gpu * (end - start)
    )
    return RecordUsage(span, final=record.is_final, posted=posted)


def split_span(
    span: UsageSpan, buckets: Sequence[int], bucket_s: int
) -> Iterator[tuple[int, dict[str, int]]]:
    """(bucket start, TRES-seconds by TRES) for each bucket the span overlaps, split exactly.

    Each piece is the difference of the running total at its edges (truncated toward zero), so
    the pieces add up to the span's part inside the buckets and a reversal's pieces are exactly
    the negated pieces of the entry it reverses.
    """
    if not buckets or span.end <= span.start:
        return
    first, last_end = buckets[0], buckets[-1] + bucket_s
    start, end = max(span.start, first), min(span.end, last_end)
    bucket = start - (start - first) % bucket_s
    while bucket < end:
        piece_start, piece_end = max(start, bucket), min(end, bucket + bucket_s)
        yield (
            bucket,
            {
                tres: _spent_before(span, seconds, piece_end) - _spent_before(span, seconds, piece_start)
                for tres, seconds in span.by_tres()
            },
        )
        bucket += bucket_s


def usage_by_bucket(
    entries: Iterable[UsageSpan], records: Iterable[RecordUsage], buckets: Sequence[int], bucket_s: int
) -> dict[tuple[int, str], BucketUsage]:
    """Usage per (bucket start, account): net ledger entries, and records' usage the ledger lacks.

    A running record counts as provisional, a final one never posted as unposted; a posted
    final record only marks its buckets as seen (its usage should be in the entries).
    """
    usage: dict[tuple[int, str], BucketUsage] = defaultdict(BucketUsage)
    for entry in entries:
        _add_span(usage, entry, "seconds", buckets, bucket_s)
    for record in records:
        kind = "provisional" if not record.final else None if record.posted else "unposted"
        _add_span(usage, record.span, kind, buckets, bucket_s)
    return dict(usage)


def _add_span(
    usage: dict[tuple[int, str], BucketUsage],
    span: UsageSpan,
    kind: str | None,
    buckets: Sequence[int],
    bucket_s: int,
) -> None:
    # kind: the BucketUsage field the span's TRES-seconds add to (None: the span is only seen).
    duration = span.end - span.start
    for bucket, pieces in split_span(span, buckets, bucket_s):
        bucket_usage = usage[(bucket, span.account)]
        bucket_usage.seen = True
        if kind is None:
            continue
        target: dict[str, int] = getattr(bucket_usage, kind)
        for tres, seconds in span.by_tres():
            target[tres] = target.get(tres, 0) + pieces[tres]
            # TRES count over the span; a reversal's is negative and cancels its entry's.
            bucket_usage.rounding[tres] = bucket_usage.rounding.get(tres, 0) + _toward_zero(seconds, duration)


def _spent_before(span: UsageSpan, seconds: int, instant: int) -> int:
    return _toward_zero(seconds * (instant - span.start), span.end - span.start)


def _toward_zero(numerator: int, denominator: int) -> int:
    quotient = abs(numerator) // denominator
    return quotient if numerator >= 0 else -quotient


def compare_usage(
    usage: Mapping[tuple[int, str], BucketUsage],
    sreport: Mapping[tuple[int, str], Mapping[str, int]],
    *,
    bucket_s: int,
    rolled_up_until: int,
) -> list[CrosscheckRow]:
    """One row per (bucket, account, TRES) that either side has usage for, with its reason.

    ``usage`` is usage_by_bucket's; ``sreport`` maps (bucket start, account) to TRES-seconds by
    TRES name.
    """
    rows = []
    for bucket, account in sorted(set(usage) | set(sreport)):
        bucket_usage = usage.get((bucket, account), BucketUsage())
        reported = sreport.get((bucket, account), {})
        for tres in COMPARED_TRES:
            ledger_s = bucket_usage.seconds.get(tres, 0)
            sreport_s = reported.get(tres, 0)
            provisional_s = bucket_usage.provisional.get(tres, 0)
            unposted_s = bucket_usage.unposted.get(tres, 0)
            if ledger_s == sreport_s == provisional_s == unposted_s == 0:
                continue
            reason = _reason(
                sreport_s - ledger_s,
                provisional_s,
                unposted_s,
                tolerance=max(0, bucket_usage.rounding.get(tres, 0)),
                rolled_up=bucket + bucket_s <= rolled_up_until,
                seen=bucket_usage.seen,
            )
            rows.append(
                CrosscheckRow(
                    bucket, bucket + bucket_s, account, tres, ledger_s, sreport_s, provisional_s, reason
                )
            )
    return rows


def _reason(
    difference: int,
    provisional_s: int,
    unposted_s: int,
    *,
    tolerance: int,
    rolled_up: bool,
    seen: bool,
) -> str:
    if difference == provisional_s == unposted_s == 0:
        return "match"
    if not rolled_up:
        return "not_rolled_up"
    # What the ledger lacks (running, never posted) must explain the difference, up to rounding;
    # so rounding alone only where the ledger lacks nothing: a stale running record is no rounding.
    if abs(difference - provisional_s - unposted_s) <= tolerance:
        if unposted_s:
            return "not_posted"
        return "running" if provisional_s else "rounding"
    return "unexplained" if seen else "not_reconciled"


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


def load_ledger_spans(session_factory: sessionmaker[Session], start: int, end: int) -> list[UsageSpan]:
    """Every ledger entry, reversals included, whose usage overlaps [start, end)."""
    # An entry lies within its UTC day: the day bounds let the query use the day index.
    first_day = datetime.fromtimestamp(start, UTC).date()
    last_day = datetime.fromtimestamp(end - 1, UTC).date()
    with session_factory() as session:
        rows = session.execute(
            select(
                LedgerEntry.account,
                LedgerEntry.usage_start,
                LedgerEntry.usage_end,
                LedgerEntry.cpu_seconds,
                LedgerEntry.gpu_seconds,
            ).where(
                LedgerEntry.day.between(first_day, last_day),
                LedgerEntry.usage_start < end,
                LedgerEntry.usage_end > start,
            )
        ).all()
    return [UsageSpan(*row) for row in rows]


def load_usage_records(
    session_factory: sessionmaker[Session], start: int, end: int
) -> list[tuple[UsageRecord, bool]]:
    """Usage records that started before ``end`` and had not ended before ``start``.

    Each comes with whether the reconciler posted it (``posted_digest`` set): a posted record
    whose entries are missing is the ledger's fault, not a pass still to run.
    """
    with session_factory() as session:
        rows = session.scalars(
            select(UsageRecordRow).where(
                UsageRecordRow.start_time.is_not(None),
                UsageRecordRow.start_time < end,
                or_(UsageRecordRow.end_time.is_(None), UsageRecordRow.end_time > start),
            )
        ).all()
        return [(_usage_record(row), row.posted_digest is not None) for row in rows]


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
    if buckets:
        window_start, window_end = buckets[0], buckets[-1] + bucket_s
        entries = load_ledger_spans(session_factory, window_start, window_end)
        records = load_usage_records(session_factory, window_start, window_end)
    else:
        entries, records = [], []
    usages = [
        usage
        for record, posted in records
        if (usage := record_usage(record, posted=posted, now=now)) is not None
    ]
    reported = sreport_by_bucket(runner, buckets, bucket_s)
    last_ran = rollup_last_ran(runner.run(list(STATS_ARGV)))
    return compare_usage(
        usage_by_bucket(entries, usages, buckets, bucket_s),
        reported,
        bucket_s=bucket_s,
        rolled_up_until=rolled_up_until(last_ran, now=now),
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
