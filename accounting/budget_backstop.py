"""Keep Slurm's account limits in line with budgets, for jobs submitted outside the gateway.

A tenant whose posted + running use has reached a budget kind (100 %, judged by
accounting.projected_use.judge_budget without a new job) gets that kind's lock on its Slurm
account (slurm.association_limits.BudgetLock); every other tenant with a budget (in force or
not) is unlocked. Tenants that never had a budget are left alone. The locks' limits
(GrpSubmitJobs, GrpTRESRunMins for cpu and gres/gpu on the account association) belong to the
gateway on budgeted tenants' accounts: an administrator's own values for them are replaced. The
gateway's own admission refuses at 90 % before this ever bites, so the backstop only stops
direct ``sbatch -A`` use. Idempotent: accounts already right get no command.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from accounting.ledger_models import TenantBudget
from accounting.projected_use import AMOUNT, GPU_HOURS, judge_budget
from gateway.budget_admission import posted_term, slurm_jobs, tenant_budget_state
from gateway.storage_models import Tenant
from slurm.association_limits import BudgetLock, apply_budget_locks
from slurm.command_runner import CommandRunner


def desired_budget_locks(
    session: Session, *, now: int, tenant_ids: Collection[str] | None = None
) -> dict[str, BudgetLock]:
    """Slurm account -> the lock its tenant's budget calls for now (unlocked: no budget or room left)."""
    # Tenants that never had a budget are not the backstop's: their accounts' limits stay as an
    # administrator set them.
    budgeted = select(TenantBudget.tenant_id)
    statement = select(Tenant).where(Tenant.id.in_(budgeted)).order_by(Tenant.id)
    if tenant_ids is not None:
        statement = statement.where(Tenant.id.in_(tenant_ids))
    locks = {}
    for tenant in session.scalars(statement):
        state = tenant_budget_state(session, tenant.id, now=now)
        if state is None:
            locks[tenant.slurm_account] = BudgetLock()
            continue
        running, _ = slurm_jobs(session, tenant.slurm_account)
        verdict = judge_budget(
            state.budget,
            posted=posted_term(session, tenant.id, state.budget.period),
            running=running,
            pending=[],
            new_jobs=None,
            cards=state.cards,
            now=now,
        )
        locks[tenant.slurm_account] = BudgetLock(
            gpu=GPU_HOURS in verdict.exceeded, all=AMOUNT in verdict.exceeded
        )
    return locks


def sync_budget_backstop(
    session_factory: sessionmaker[Session],
    runner: CommandRunner,
    *,
    now: int,
    tenant_ids: Collection[str] | None = None,
) -> list[list[str]]:
    """Apply the locks budgets call for to the tenants' Slurm accounts (all tenants, or only
    ``tenant_ids``); returns the sacctmgr commands run ([] when everything was right).

    Raises what slurm.association_limits.apply_budget_locks raises (Slurm unreachable, a
    limit that did not take).
    """
    with session_factory() as session:
        desired = desired_budget_locks(session, now=now, tenant_ids=tenant_ids)
    return apply_budget_locks(runner, desired)
