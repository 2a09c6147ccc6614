"""Budget admission: refuse a job whose projected use would reach 90 % of the tenant's budget.

Projected use in the current period (UTC month) is, per accounting.projected_use.judge_budget:

- posted: the tenant's net ledger entries in the period;
- running: the tenant account's usage records not final with a start, up to their time limit;
- pending: its usage records not final without a start (each array task counts), plus the
  tenant's gateway jobs and steps Slurm does not hold yet (accepted, staging_in, submitting) or
  whose Slurm job the reconciler has not recorded yet, at their spec's time limit;
- new_job: the job being admitted at its time limit (a multi-step job: all its steps).

Everything comes from the database; no Slurm command runs in the request. Tenants without a
budget in force cost one indexed query.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import exists, func, not_, or_, select
from sqlalchemy.orm import Session

from accounting.ledger_models import LedgerEntry, TenantBudget, UsageRecordRow
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
)
from accounting.rate_cards import RateCard, card_in_force
from accounting.report_csv import decimal_text, fraction, hours, money
from gateway.accounting_schemas import (
    BudgetExceededDetails,
    BudgetFigures,
    BudgetView,
    ProjectedUseView,
    UseTermView,
)
from gateway.budget_service import budget_in_force, load_rate_cards
from gateway.domain_errors import BudgetExceeded
from gateway.job_admission import DEFAULT_TIME_LIMIT, memory_mb
from gateway.job_schemas import RunSpec
from gateway.job_states import ACCEPTED, IN_SLURM_STATES, STAGING_IN, SUBMITTING, WORKFLOW
from gateway.storage_models import Job, Tenant
from slurm.array_summary import array_task_ids
from slurm.time_limits import parse_time_limit
from slurm.usage_records import TresCounts

# Gateway jobs Slurm does not hold yet: they will run, so they count as pending.
BEFORE_SLURM_STATES = (ACCEPTED, STAGING_IN, SUBMITTING)
NEW_JOB = "new_job"
HOW_TO_FIX = (
    "shorten the job's time limit, ask for fewer GPUs or nodes, wait for running jobs to finish,"
    " or ask an administrator to raise the budget"
)


@dataclass(frozen=True, slots=True)
class TenantBudgetState:
    """The budget row in force and the cards that price use against it."""

    row: TenantBudget
    budget: Budget
    cards: list[RateCard]


def check_budget(session: Session, tenant: Tenant, runs: Sequence[RunSpec], *, now: int) -> None:
    """Raise BudgetExceeded when admitting ``runs`` (one job, or a multi-step job's steps) would
    take ``tenant``'s projected use to REFUSAL_FRACTION of a budget kind it consumes."""
    state = tenant_budget_state(session, tenant.id, now=now)
    if state is None:
        return
    verdict = judge_admission(session, tenant, state, [projected_from_spec(run) for run in runs], now=now)
    if verdict.refused:
        raise BudgetExceeded(refusal_message(verdict), exceeded_details(state.row, verdict))


def tenant_budget_state(session: Session, tenant_id: str, *, now: int) -> TenantBudgetState | None:
    """The budget in force for the period of ``now``; None when none limits anything."""
    period = period_of(now)
    row = budget_in_force(session, tenant_id, period)
    if row is None or (row.gpu_seconds is None and row.amount_micros is None):
        return None
    cards = load_rate_cards(session)
    card = card_in_force(cards, now)
    budget = Budget(
        period=period,
        gpu_seconds=row.gpu_seconds,
        amount_micros=row.amount_micros,
        currency=card.currency if card is not None else None,
    )
    return TenantBudgetState(row=row, budget=budget, cards=cards)


def judge_admission(
    session: Session, tenant: Tenant, state: TenantBudgetState, new_jobs: Sequence[ProjectedJob], *, now: int
) -> BudgetVerdict:
    """The verdict on admitting ``new_jobs`` together (at least one); their sum is the new_job term."""
    posted = posted_term(session, tenant.id, state.budget.period)
    running, pending = slurm_jobs(session, tenant.slurm_account)
    pending += gateway_pending_jobs(session, tenant)
    return judge_budget(
        state.budget,
        posted=posted,
        running=running,
        pending=pending,
        new_jobs=new_jobs,
        cards=state.cards,
        now=now,
    )


def standing(session: Session, tenant: Tenant, state: TenantBudgetState, *, now: int) -> BudgetVerdict:
    """Where the tenant stands (posted, running, pending) and which kinds a new job would hit.

    Judged as the admission of an empty GPU job, whose term is dropped from the result.
    """
    probe = ProjectedJob(
        partition="", qos=None, tres=TresCounts(gpu=1), start_time=None, elapsed_s=0, time_limit_s=0
    )
    verdict = judge_admission(session, tenant, state, [probe], now=now)
    return replace(verdict, terms=tuple(term for term in verdict.terms if term.name != NEW_JOB))


def budget_view(session: Session, tenant: Tenant, *, now: int) -> BudgetView:
    """The budget in force for the current period and where the tenant stands against it."""
    state = tenant_budget_state(session, tenant.id, now=now)
    threshold = decimal_text(REFUSAL_FRACTION)
    if state is None:
        row = budget_in_force(session, tenant.id, period_of(now))
        return BudgetView(
            tenant_id=tenant.id,
            period=period_of(now),
            # A row whose kinds are all null limits nothing; show it so its from_period is known.
            budget=budget_figures(row, None) if row is not None else None,
            terms=[],
            projected=None,
            refusal_threshold=threshold,
            exceeded=[],
        )
    verdict = standing(session, tenant, state, now=now)
    return BudgetView(
        tenant_id=tenant.id,
        period=state.budget.period,
        budget=budget_figures(state.row, state.budget.currency),
        terms=term_views(verdict.terms),
        projected=projected_view(verdict),
        refusal_threshold=threshold,
        exceeded=list(verdict.exceeded),
    )


def posted_term(session: Session, tenant_id: str, period: str) -> UseTerm:
    """Net ledger use of the tenant in ``period`` (reversals included), over the (tenant, day) index."""
    start, end = period_bounds(period)
    first, after = datetime.fromtimestamp(start, UTC).date(), datetime.fromtimestamp(end, UTC).date()
    jobs, gpu_seconds, amount_micros = session.execute(
        select(
            func.count(func.distinct(LedgerEntry.record_id)),
            func.coalesce(func.sum(LedgerEntry.gpu_seconds), 0),
            func.coalesce(func.sum(LedgerEntry.amount_micros), 0),
        ).where(LedgerEntry.tenant_id == tenant_id, LedgerEntry.day >= first, LedgerEntry.day < after)
    ).one()
    return UseTerm("posted", int(jobs), int(gpu_seconds), int(amount_micros))


def slurm_jobs(session: Session, account: str) -> tuple[list[ProjectedJob], list[ProjectedJob]]:
    """(running, pending): the account's usage records that are not final, by whether they started."""
    running: list[ProjectedJob] = []
    pending: list[ProjectedJob] = []
    records = session.scalars(
        select(UsageRecordRow).where(UsageRecordRow.account == account, UsageRecordRow.is_final.is_(False))
    )
    for record in records:
        job = ProjectedJob(
            partition=record.partition,
            qos=record.qos,
            tres=TresCounts(cpu=record.cpu, mem_mb=record.mem_mb, gpu=record.gpu, node=record.node),
            start_time=record.start_time,
            elapsed_s=record.elapsed_s,
            time_limit_s=record.time_limit_s,
            tasks=record.tasks,
        )
        (running if record.start_time is not None else pending).append(job)
    return running, pending


def gateway_pending_jobs(session: Session, tenant: Tenant) -> list[ProjectedJob]:
    """The tenant's jobs and steps the usage records do not show yet, from their specs."""
    recorded = exists().where(
        UsageRecordRow.account == tenant.slurm_account, UsageRecordRow.job_id_raw == Job.slurm_job_id
    )
    specs = session.scalars(
        select(Job.spec).where(
            Job.tenant_id == tenant.id,
            Job.kind != WORKFLOW,
            or_(
                Job.state.in_(BEFORE_SLURM_STATES),
                Job.state.in_(IN_SLURM_STATES) & or_(Job.slurm_job_id.is_(None), not_(recorded)),
            ),
        )
    )
    return [projected_from_spec(spec) for spec in specs]


def projected_from_spec(spec: RunSpec | Mapping[str, Any]) -> ProjectedJob:
    """A pending ProjectedJob for an admitted spec (or its stored JSON form)."""
    fields = msgspec.to_builtins(spec) if isinstance(spec, RunSpec) else spec
    nodes = int(fields.get("nodes") or 1)
    memory = fields.get("memory")
    array = fields.get("array")
    return ProjectedJob(
        partition=str(fields.get("partition") or ""),
        qos=fields.get("qos"),
        tres=TresCounts(
            cpu=nodes * int(fields.get("tasks_per_node") or 1) * int(fields.get("cpus_per_task") or 1),
            mem_mb=nodes * memory_mb(memory) if memory else 0,
            gpu=nodes * int(fields.get("gpus_per_node") or 0),
            node=nodes,
        ),
        start_time=None,
        elapsed_s=0,
        time_limit_s=parse_time_limit(fields.get("time_limit") or DEFAULT_TIME_LIMIT) * 60,
        tasks=len(array_task_ids(array)) if array else 1,
    )


def refusal_message(verdict: BudgetVerdict) -> str:
    """One sentence for the problem's detail: what would be reached, and how to fix it."""
    kinds = " and ".join("GPU-hours" if kind == GPU_HOURS else "amount" for kind in verdict.exceeded)
    threshold = int(REFUSAL_FRACTION * 100)
    return (
        f"with this job the tenant's projected use for {verdict.budget.period} reaches {threshold}% of its"
        f" {kinds} budget (posted + running + pending + this job, each shown in terms); {HOW_TO_FIX}"
    )


def exceeded_details(row: TenantBudget, verdict: BudgetVerdict) -> BudgetExceededDetails:
    """The figures of a refusal, for the 402 problem."""
    return BudgetExceededDetails(
        period=verdict.budget.period,
        budget=budget_figures(row, verdict.budget.currency),
        terms=term_views(verdict.terms),
        projected=projected_view(verdict),
        refusal_threshold=decimal_text(REFUSAL_FRACTION),
        exceeded=list(verdict.exceeded),
    )


def budget_figures(row: TenantBudget, currency: str | None) -> BudgetFigures:
    """A stored budget row as decimal strings."""
    return BudgetFigures(
        from_period=row.from_period,
        gpu_hours=decimal_text(hours(row.gpu_seconds)) if row.gpu_seconds is not None else None,
        amount=decimal_text(money(row.amount_micros)) if row.amount_micros is not None else None,
        currency=currency,
    )


def term_views(terms: Sequence[UseTerm]) -> list[UseTermView]:
    """Each term with hours and money as decimal strings."""
    return [
        UseTermView(
            name=term.name,
            jobs=term.jobs,
            gpu_hours=decimal_text(hours(term.gpu_seconds)),
            amount=decimal_text(money(term.amount_micros)),
        )
        for term in terms
    ]


def projected_view(verdict: BudgetVerdict) -> ProjectedUseView:
    """The projected totals (of the verdict's terms) and their fractions of each limited kind."""
    gpu_seconds = sum(term.gpu_seconds for term in verdict.terms)
    amount_micros = sum(term.amount_micros for term in verdict.terms)
    fractions = {}
    for kind, used, limit in (
        (GPU_HOURS, gpu_seconds, verdict.budget.gpu_seconds),
        (AMOUNT, amount_micros, verdict.budget.amount_micros),
    ):
        # A zero budget has no fraction: every job using that kind is refused.
        if limit:
            fractions[kind] = decimal_text(fraction(used, limit))
    return ProjectedUseView(
        gpu_hours=decimal_text(hours(gpu_seconds)),
        amount=decimal_text(money(amount_micros)),
        fraction_of_budget=max(fractions.values(), key=Decimal) if fractions else None,
        fractions=fractions,
    )
