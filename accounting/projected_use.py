"""Project a tenant's use in a budget period and judge it against the budget.

Two questions share this arithmetic:

- admission (a new job is given): could the tenant overspend if the job runs? Projected use is
  posted ledger + running jobs up to their time limit + pending jobs at their time limit + the
  new job at its time limit; the job is refused once that reaches REFUSAL_FRACTION of a budget
  kind the new job consumes (GPU-hours only when it asks for GPUs; money always).
- backstop (no new job): has the tenant already spent the budget? Use is posted ledger + what
  running jobs have actually used so far; a budget kind is exhausted at 100 %.

Only use inside the period counts: jobs are clipped to [period start, period end). Everything
is priced with usage_pricing.price_usage, so projections round exactly like posted entries.
"""

from __future__ import annotations

import calendar
import datetime
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from accounting.rate_cards import RateCard
from accounting.usage_pricing import price_usage
from slurm.usage_records import TresCounts

REFUSAL_FRACTION = Decimal("0.9")
# Names of budget kinds in BudgetVerdict.exceeded, in this order.
GPU_HOURS = "gpu_hours"
AMOUNT = "amount"

_PERIOD = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])", re.ASCII)


@dataclass(frozen=True, slots=True)
class ProjectedJob:
    """A job (or ``tasks`` identical pending array tasks) as the projection needs it."""

    partition: str
    qos: str | None
    tres: TresCounts
    # None: not started yet.
    start_time: int | None
    elapsed_s: int
    # None: no limit (UNLIMITED): only the use already made can be counted.
    time_limit_s: int | None
    tasks: int = 1


@dataclass(frozen=True, slots=True)
class UseTerm:
    """One line of the projection: "posted", "running", "pending" or "new_job"."""

    name: str
    jobs: int
    gpu_seconds: int
    amount_micros: int


@dataclass(frozen=True, slots=True)
class Budget:
    """A tenant's budget for ``period`` ("YYYY-MM"); None for a kind means no limit on it."""

    period: str
    gpu_seconds: int | None
    amount_micros: int | None
    currency: str | None


@dataclass(frozen=True, slots=True)
class BudgetVerdict:
    """The terms (posted, running, pending[, new_job]), their sums, and which budget kinds they reach."""

    terms: tuple[UseTerm, ...]
    projected_gpu_seconds: int
    projected_amount_micros: int
    budget: Budget
    refused: bool
    # GPU_HOURS and/or AMOUNT, in that order.
    exceeded: tuple[str, ...]


def project_job(
    job: ProjectedJob, *, cards: Sequence[RateCard], now: int, period_start: int, period_end: int
) -> tuple[int, int]:
    """(gpu_seconds, amount_micros) ``job`` may use from the period's start if it runs to its limit.

    A started job counts from its start (or the period's) to start + max(elapsed, time limit); a
    pending job from ``now`` for its time limit, once per task. A job that may run past the
    period's end counts in full: admitted near the end of a month, the part after it would
    otherwise be judged by neither month's budget. A job without a time limit (submitted to Slurm
    directly, on an unlimited partition) counts until the period's end. A job that cannot start
    before the period ends counts nothing in it.
    """
    if job.time_limit_s is None:
        start, end = (now if job.start_time is None else job.start_time), period_end
    elif job.start_time is not None:
        start, end = job.start_time, job.start_time + max(job.elapsed_s, job.time_limit_s)
    else:
        start, end = now, now + job.time_limit_s
    if start >= period_end:
        return 0, 0
    return _use_in_period(
        job, start, end, cards=cards, period_start=period_start, period_end=max(end, period_end)
    )


def judge_budget(
    budget: Budget,
    *,
    posted: UseTerm,
    running: Sequence[ProjectedJob],
    pending: Sequence[ProjectedJob],
    new_jobs: Sequence[ProjectedJob] | None,
    cards: Sequence[RateCard],
    now: int,
) -> BudgetVerdict:
    """Judge the tenant's use in ``budget.period`` for admission of ``new_jobs``, or for the backstop.

    With new jobs (one job, or a multi-step job's steps: their sum is the new_job term): refused
    when projected use reaches REFUSAL_FRACTION of a budget kind they consume (a zero budget
    therefore refuses every job it covers). Without (backstop): refused
    when posted + running use so far reaches a budget kind; pending jobs have used nothing yet.
    """
    period_start, period_end = period_bounds(budget.period)

    def term(name: str, jobs: Sequence[ProjectedJob]) -> UseTerm:
        gpu_seconds = amount_micros = 0
        for job in jobs:
            if new_jobs is None:
                use = _actual_use(job, cards=cards, period_start=period_start, period_end=period_end)
            else:
                use = project_job(job, cards=cards, now=now, period_start=period_start, period_end=period_end)
            gpu_seconds += use[0]
            amount_micros += use[1]
        return UseTerm(name, sum(job.tasks for job in jobs), gpu_seconds, amount_micros)

    terms = (posted, term("running", running), term("pending", pending))
    if new_jobs is None:
        considered, fraction = (GPU_HOURS, AMOUNT), Decimal(1)
    else:
        terms = (*terms, term("new_job", new_jobs))
        considered = (GPU_HOURS, AMOUNT) if any(job.tres.gpu > 0 for job in new_jobs) else (AMOUNT,)
        fraction = REFUSAL_FRACTION
    projected_gpu_seconds = sum(t.gpu_seconds for t in terms)
    projected_amount_micros = sum(t.amount_micros for t in terms)
    limits = {
        GPU_HOURS: (projected_gpu_seconds, budget.gpu_seconds),
        AMOUNT: (projected_amount_micros, budget.amount_micros),
    }
    exceeded = tuple(
        kind
        for kind in considered
        if (limit := limits[kind][1]) is not None and _reaches(limits[kind][0], limit, fraction)
    )
    return BudgetVerdict(
        terms=terms,
        projected_gpu_seconds=projected_gpu_seconds,
        projected_amount_micros=projected_amount_micros,
        budget=budget,
        refused=bool(exceeded),
        exceeded=exceeded,
    )


def period_bounds(period: str) -> tuple[int, int]:
    """[start, end) of a "YYYY-MM" period in epoch seconds: its first UTC midnight and the next month's."""
    match = _PERIOD.fullmatch(period) if isinstance(period, str) else None
    if match is None:
        raise ValueError(f'{period!r} is not a period; write the UTC month as "YYYY-MM", e.g. "2026-11"')
    year, month = int(match[1]), int(match[2])
    next_year, next_month = (year + 1, 1) if month == 12 else (year, month + 1)
    return calendar.timegm((year, month, 1, 0, 0, 0)), calendar.timegm((next_year, next_month, 1, 0, 0, 0))


def period_of(at: int) -> str:
    """The "YYYY-MM" UTC month containing epoch second ``at``."""
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m")


def _actual_use(
    job: ProjectedJob, *, cards: Sequence[RateCard], period_start: int, period_end: int
) -> tuple[int, int]:
    """(gpu_seconds, amount_micros) the job has used so far inside the period (pending: none)."""
    if job.start_time is None:
        return 0, 0
    return _use_in_period(
        job,
        job.start_time,
        job.start_time + job.elapsed_s,
        cards=cards,
        period_start=period_start,
        period_end=period_end,
    )


def _use_in_period(
    job: ProjectedJob, start: int, end: int, *, cards: Sequence[RateCard], period_start: int, period_end: int
) -> tuple[int, int]:
    tres = job.tres
    if job.tasks != 1:
        # The tasks of one pending array record are alike: price them as one job with N times the TRES.
        tres = TresCounts(
            cpu=tres.cpu * job.tasks,
            mem_mb=tres.mem_mb * job.tasks,
            gpu=tres.gpu * job.tasks,
            node=tres.node * job.tasks,
        )
    segments = price_usage(
        partition=job.partition,
        qos=job.qos,
        start=max(start, period_start),
        end=min(end, period_end),
        tres=tres,
        cards=cards,
    )
    return sum(s.gpu_seconds for s in segments), sum(s.amount_micros for s in segments)


def _reaches(used: int, limit: int, fraction: Decimal) -> bool:
    """used >= fraction * limit, exactly (no rounding of the threshold)."""
    numerator, denominator = fraction.as_integer_ratio()
    return used * denominator >= limit * numerator
