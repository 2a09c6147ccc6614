"""/v1/tenants/{id}/budget: set (admin) and read (admin, finance, its tenant-admin) a tenant's budget.

A PUT stores the budget, then brings the tenant's Slurm account limits in line with it (the
backstop for jobs submitted outside the gateway). A Slurm failure there does not undo the
stored budget: the answer says ``slurm_backstop.applied: false`` with the error, and the
accounting worker applies it on its next pass.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

import msgspec
from litestar import get, put
from litestar.datastructures import State
from litestar.params import JSONBody
from sqlalchemy.orm import Session, sessionmaker

from accounting.budget_backstop import sync_budget_backstop
from gateway.accounting_schemas import BackstopOutcome, BudgetFigures, BudgetPut, BudgetView
from gateway.auth import AuthenticatedPrincipal
from gateway.authorization import require_role
from gateway.budget_admission import budget_figures, budget_view
from gateway.budget_service import (
    budget_limits,
    currency_in_force,
    load_tenant,
    put_budget,
    require_budget_reader,
)
from gateway.routes.tenants import TenantId
from gateway.slurm_driver import command_runner_from_config
from slurm.errors import SlurmError

logger = logging.getLogger(__name__)
MAX_ERROR_CHARS = 500


@put("/v1/tenants/{tenant_id:str}/budget", tags=["budgets"], summary="Set a tenant's budget (admin)")
async def put_tenant_budget(
    tenant_id: TenantId, data: JSONBody[BudgetPut], state: State, principal: AuthenticatedPrincipal
) -> BudgetView:
    """Store the budget from ``from_period`` on (default: this UTC month) and answer with the
    budget now in force, the tenant's standing, what was saved and the Slurm backstop's outcome."""
    session_factory: sessionmaker[Session] = state.session_factory
    now = int(time.time())

    def store() -> BudgetFigures:
        require_role(principal, "admin")
        limits = budget_limits(data, now=now)
        with session_factory() as session:
            row = put_budget(session, principal, tenant_id, limits, now=datetime.now(UTC))
            return budget_figures(row, currency_in_force(session, now))

    saved = await asyncio.to_thread(store)
    backstop = await asyncio.to_thread(_apply_backstop, state, tenant_id, now)

    def read() -> BudgetView:
        with session_factory() as session:
            view = budget_view(session, load_tenant(session, tenant_id), now=now)
        return msgspec.structs.replace(view, saved=saved, slurm_backstop=backstop)

    return await asyncio.to_thread(read)


@get("/v1/tenants/{tenant_id:str}/budget", tags=["budgets"], summary="A tenant's budget and standing")
async def get_tenant_budget(
    tenant_id: TenantId, state: State, principal: AuthenticatedPrincipal
) -> BudgetView:
    """The budget in force for this UTC month, and the projected use (posted, running, pending)
    against it; ``exceeded`` lists the kinds at which a new job would be refused now."""
    session_factory: sessionmaker[Session] = state.session_factory
    now = int(time.time())

    def read() -> BudgetView:
        require_budget_reader(principal, tenant_id)
        with session_factory() as session:
            return budget_view(session, load_tenant(session, tenant_id), now=now)

    return await asyncio.to_thread(read)


def _apply_backstop(state: State, tenant_id: str, now: int) -> BackstopOutcome:
    try:
        sync_budget_backstop(
            state.session_factory,
            command_runner_from_config(state.config.slurm),
            now=now,
            tenant_ids=[tenant_id],
        )
    except SlurmError as exc:
        logger.warning("budget of tenant %s stored, Slurm backstop not applied: %s", tenant_id, exc)
        return BackstopOutcome(applied=False, error=str(exc)[:MAX_ERROR_CHARS])
    return BackstopOutcome(applied=True)
