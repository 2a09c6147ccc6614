import calendar
import datetime

import pytest

from accounting.projected_use import (
    AMOUNT,
    GPU_HOURS,
    REFUSAL_FRACTION,
    Budget,
    BudgetVerdict,
    ProjectedJob,
    UseTerm,
    judge_budget,
    period_bounds,
    period_of,
    project_job,
)
from accounting.rate_cards import RateCard, rate_card_from_document
from slurm.usage_records import TresCounts

HOUR = 3600
UNIT = 1_000_000


def at(text: str) -> int:
    """Epoch seconds of a UTC "YYYY-MM-DDTHH:MM" instant."""
    return calendar.timegm(datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M").timetuple())


# One GPU-hour costs 1.00; one cpu-hour 0.01.
CARDS: list[RateCard] = [
    rate_card_from_document(
        {"currency": "EUR", "prices": {"*": {"gpu": "1", "cpu": "0.01"}}, "qos_multipliers": {"high": "2"}},
        id=1,
        effective_from=0,
    )
]
NOVEMBER = period_bounds("2026-11")
NOW = at("2026-11-10T12:00")
ONE_GPU = TresCounts(cpu=1, gpu=1, node=1)
CPU_ONLY = TresCounts(cpu=100, node=1)
NOTHING_POSTED = UseTerm("posted", 0, 0, 0)


def gpu_job(
    *, start: int | None = None, elapsed: int = 0, limit: int | None = HOUR, tasks: int = 1
) -> ProjectedJob:
    return ProjectedJob(
        partition="gpu",
        qos=None,
        tres=ONE_GPU,
        start_time=start,
        elapsed_s=elapsed,
        time_limit_s=limit,
        tasks=tasks,
    )


def cpu_job(limit: int = HOUR) -> ProjectedJob:
    return ProjectedJob(
        partition="cpu", qos=None, tres=CPU_ONLY, start_time=None, elapsed_s=0, time_limit_s=limit
    )


def project(job: ProjectedJob, now: int = NOW) -> tuple[int, int]:
    return project_job(job, cards=CARDS, now=now, period_start=NOVEMBER[0], period_end=NOVEMBER[1])


def judge(
    budget: Budget,
    *,
    posted: UseTerm = NOTHING_POSTED,
    running: tuple[ProjectedJob, ...] = (),
    pending: tuple[ProjectedJob, ...] = (),
    new_job: ProjectedJob | None = None,
) -> BudgetVerdict:
    return judge_budget(
        budget,
        posted=posted,
        running=running,
        pending=pending,
        new_jobs=None if new_job is None else [new_job],
        cards=CARDS,
        now=NOW,
    )


def gpu_budget(hours: int) -> Budget:
    return Budget(period="2026-11", gpu_seconds=hours * HOUR, amount_micros=None, currency=None)


def amount_budget(units: int) -> Budget:
    return Budget(period="2026-11", gpu_seconds=None, amount_micros=units * UNIT, currency="EUR")


def test_period_bounds_and_period_of() -> None:
    assert period_bounds("2026-11") == (at("2026-11-01T00:00"), at("2026-12-01T00:00"))
    assert period_bounds("2026-12") == (at("2026-12-01T00:00"), at("2027-01-01T00:00"))
    assert period_bounds("2028-02")[1] - period_bounds("2028-02")[0] == 29 * 24 * HOUR
    assert [period_of(t) for t in (NOVEMBER[0] - 1, NOVEMBER[0], NOVEMBER[1] - 1)] == [
        "2026-10",
        "2026-11",
        "2026-11",
    ]


@pytest.mark.parametrize("period", ["2026-13", "2026-00", "2026-1", "26-11", "2026-11-01", "", " 2026-11"])
def test_bad_period_is_refused_with_the_format(period: str) -> None:
    with pytest.raises(ValueError, match="YYYY-MM"):
        period_bounds(period)


def test_running_job_counts_elapsed_plus_remaining_limit() -> None:
    job = gpu_job(start=NOW - HOUR, elapsed=HOUR, limit=3 * HOUR)
    assert project(job) == (3 * HOUR, 3 * UNIT + 30_000)


def test_running_job_past_its_limit_counts_what_it_used() -> None:
    job = gpu_job(start=NOW - 2 * HOUR, elapsed=2 * HOUR, limit=HOUR)
    assert project(job)[0] == 2 * HOUR


def test_running_job_without_limit_counts_until_the_period_ends() -> None:
    job = gpu_job(start=NOW - 2 * HOUR, elapsed=2 * HOUR, limit=None)
    assert project(job)[0] == NOVEMBER[1] - (NOW - 2 * HOUR)


def test_running_job_from_last_month_counts_only_this_month() -> None:
    job = gpu_job(start=NOVEMBER[0] - 5 * HOUR, elapsed=6 * HOUR, limit=10 * HOUR)
    assert project(job)[0] == 5 * HOUR


def test_running_job_that_may_run_past_the_period_end_counts_in_full() -> None:
    job = gpu_job(start=NOVEMBER[1] - HOUR, elapsed=0, limit=48 * HOUR)
    assert project(job, now=NOVEMBER[1] - HOUR)[0] == 48 * HOUR


def test_pending_job_counts_its_limit_from_now_per_task() -> None:
    assert project(gpu_job(limit=2 * HOUR))[0] == 2 * HOUR
    assert project(gpu_job(limit=2 * HOUR, tasks=5)) == (10 * HOUR, 10 * UNIT + 100_000)


def test_pending_job_admitted_at_month_end_counts_its_whole_limit_per_task() -> None:
    late = NOVEMBER[1] - HOUR
    assert project(gpu_job(limit=10 * HOUR, tasks=3), now=late)[0] == 30 * HOUR
    assert project(gpu_job(limit=HOUR), now=NOVEMBER[1])[0] == 0


def test_pending_job_without_limit_counts_until_the_period_ends() -> None:
    assert project(gpu_job(limit=None))[0] == NOVEMBER[1] - NOW


def test_projection_uses_the_qos_multiplier() -> None:
    job = ProjectedJob(
        partition="gpu", qos="high", tres=ONE_GPU, start_time=None, elapsed_s=0, time_limit_s=HOUR
    )
    assert project(job) == (HOUR, 2 * UNIT + 20_000)


def test_verdict_lists_every_term_in_order() -> None:
    verdict = judge(
        amount_budget(1000),
        posted=UseTerm("posted", 7, 4 * HOUR, 4 * UNIT),
        running=(gpu_job(start=NOW - HOUR, elapsed=HOUR, limit=2 * HOUR),),
        pending=(gpu_job(limit=HOUR), gpu_job(limit=HOUR, tasks=3)),
        new_job=cpu_job(),
    )
    assert verdict.terms == (
        UseTerm("posted", 7, 4 * HOUR, 4 * UNIT),
        UseTerm("running", 1, 2 * HOUR, 2 * UNIT + 20_000),
        UseTerm("pending", 4, 4 * HOUR, 4 * UNIT + 40_000),
        UseTerm("new_job", 1, 0, 1 * UNIT),
    )
    assert (verdict.projected_gpu_seconds, verdict.projected_amount_micros) == (10 * HOUR, 11 * UNIT + 60_000)
    assert (verdict.refused, verdict.exceeded) == (False, ())


@pytest.mark.parametrize(("posted_hours", "refused"), [(88, False), (89, True), (95, True)])
def test_gpu_budget_refuses_at_ninety_percent(posted_hours: int, refused: bool) -> None:
    # 100 GPU-hours budget; the new job adds one, so 89 posted is exactly 90 projected.
    verdict = judge(gpu_budget(100), posted=UseTerm("posted", 1, posted_hours * HOUR, 0), new_job=gpu_job())
    assert (verdict.refused, verdict.exceeded) == (refused, (GPU_HOURS,) if refused else ())


def test_ninety_percent_edge_is_exact_to_the_micro() -> None:
    budget = amount_budget(100)
    threshold = int(REFUSAL_FRACTION * budget.amount_micros)
    # 100 cpus for 36 s is one cpu-hour: 0.01.
    new_job_cost = 10_000
    new_job = cpu_job(limit=36)
    assert judge(budget, new_job=new_job).terms[-1].amount_micros == new_job_cost
    below = judge(budget, posted=UseTerm("posted", 1, 0, threshold - new_job_cost - 1), new_job=new_job)
    equal = judge(budget, posted=UseTerm("posted", 1, 0, threshold - new_job_cost), new_job=new_job)
    assert (below.projected_amount_micros, below.refused) == (threshold - 1, False)
    assert (equal.projected_amount_micros, equal.refused, equal.exceeded) == (threshold, True, (AMOUNT,))


def test_gpu_only_budget_lets_a_cpu_only_job_through() -> None:
    verdict = judge(gpu_budget(10), posted=UseTerm("posted", 3, 50 * HOUR, 0), new_job=cpu_job())
    assert (verdict.refused, verdict.exceeded) == (False, ())
    assert judge(gpu_budget(10), posted=UseTerm("posted", 3, 50 * HOUR, 0), new_job=gpu_job()).refused


def test_zero_budget_refuses_what_it_covers() -> None:
    assert judge(gpu_budget(0), new_job=gpu_job()).exceeded == (GPU_HOURS,)
    assert not judge(gpu_budget(0), new_job=cpu_job()).refused
    assert judge(amount_budget(0), new_job=cpu_job()).exceeded == (AMOUNT,)


def test_both_kinds_can_be_exceeded_together() -> None:
    budget = Budget(period="2026-11", gpu_seconds=HOUR, amount_micros=UNIT, currency="EUR")
    assert judge(budget, new_job=gpu_job(limit=2 * HOUR)).exceeded == (GPU_HOURS, AMOUNT)


def test_no_budget_kinds_never_refuse() -> None:
    budget = Budget(period="2026-11", gpu_seconds=None, amount_micros=None, currency=None)
    verdict = judge(budget, posted=UseTerm("posted", 1, 10**9, 10**15), new_job=gpu_job())
    assert (verdict.refused, verdict.projected_gpu_seconds) == (False, 10**9 + HOUR)


def test_pending_and_running_terms_count_toward_refusal() -> None:
    running = (gpu_job(start=NOW, elapsed=0, limit=45 * HOUR),)
    pending = (gpu_job(limit=44 * HOUR),)
    assert judge(gpu_budget(100), running=running, pending=pending, new_job=gpu_job()).refused
    assert not judge(gpu_budget(100), running=running, new_job=gpu_job()).refused


def test_backstop_counts_actual_use_only_and_refuses_at_the_full_budget() -> None:
    running = (gpu_job(start=NOW - 2 * HOUR, elapsed=2 * HOUR, limit=100 * HOUR),)
    pending = (gpu_job(limit=100 * HOUR, tasks=4),)
    under = judge(gpu_budget(10), posted=UseTerm("posted", 2, 7 * HOUR, 0), running=running, pending=pending)
    assert [t.name for t in under.terms] == ["posted", "running", "pending"]
    assert [(t.jobs, t.gpu_seconds) for t in under.terms] == [(2, 7 * HOUR), (1, 2 * HOUR), (4, 0)]
    # 9 of 10 GPU-hours used: 90 % would refuse a new job, but the backstop waits for 100 %.
    assert (under.projected_gpu_seconds, under.refused) == (9 * HOUR, False)
    spent = judge(gpu_budget(10), posted=UseTerm("posted", 2, 8 * HOUR, 0), running=running, pending=pending)
    assert (spent.refused, spent.exceeded) == (True, (GPU_HOURS,))


def test_backstop_names_each_exhausted_kind() -> None:
    budget = Budget(period="2026-11", gpu_seconds=10 * HOUR, amount_micros=5 * UNIT, currency="EUR")
    money_only = judge(budget, posted=UseTerm("posted", 1, 0, 5 * UNIT))
    assert money_only.exceeded == (AMOUNT,)
    gpu_only = judge(budget, posted=UseTerm("posted", 1, 10 * HOUR, 0))
    assert gpu_only.exceeded == (GPU_HOURS,)
    zero = judge(Budget(period="2026-11", gpu_seconds=0, amount_micros=None, currency=None))
    assert zero.exceeded == (GPU_HOURS,)


def test_verdict_outside_the_budget_period_counts_nothing_of_the_jobs() -> None:
    october = Budget(period="2026-10", gpu_seconds=HOUR, amount_micros=None, currency=None)
    verdict = judge_budget(
        october,
        posted=NOTHING_POSTED,
        running=(gpu_job(start=NOW, elapsed=HOUR, limit=2 * HOUR),),
        pending=(gpu_job(),),
        new_jobs=[gpu_job()],
        cards=CARDS,
        now=NOW,
    )
    assert (verdict.projected_gpu_seconds, verdict.refused) == (0, False)


def test_the_steps_of_a_new_job_are_one_term_and_a_gpu_step_brings_in_the_gpu_budget() -> None:
    verdict = judge_budget(
        gpu_budget(1),
        posted=NOTHING_POSTED,
        running=(),
        pending=(),
        new_jobs=[cpu_job(), gpu_job(limit=HOUR)],
        cards=CARDS,
        now=NOW,
    )
    assert verdict.terms[-1].name == "new_job"
    assert (verdict.terms[-1].jobs, verdict.terms[-1].gpu_seconds) == (2, HOUR)
    assert verdict.exceeded == (GPU_HOURS,)
