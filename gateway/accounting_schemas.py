"""msgspec Structs of the accounting API: budgets, rate cards, usage reports, statements.

Hours and money are decimal strings (hours to 6 places, money to cents, rounded half up when
shown); exact integers (``*_micros``) come alongside where a client may need to add them up.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import msgspec


class BudgetPut(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A tenant's budget from ``from_period`` on (default: the current UTC month).

    ``gpu_hours`` and ``amount`` are decimal strings ("1000", "5000.00"); null or absent: no
    limit of that kind. The amount is in the currency of the rate card in force.
    """

    gpu_hours: str | None = None
    amount: str | None = None
    from_period: str | None = None


class BudgetFigures(msgspec.Struct, frozen=True, kw_only=True):
    """A stored budget: the first period it applies to and its limits (null: no limit)."""

    from_period: str
    gpu_hours: str | None
    amount: str | None
    currency: str | None


class UseTermView(msgspec.Struct, frozen=True, kw_only=True):
    """One part of the projected use: posted, running, pending or new_job."""

    name: str
    jobs: int
    gpu_hours: str
    amount: str


class ProjectedUseView(msgspec.Struct, frozen=True, kw_only=True):
    """The sum of the terms, and its largest fraction of a limited budget kind."""

    gpu_hours: str
    amount: str
    # Highest of ``fractions`` (null: the budget limits nothing).
    fraction_of_budget: str | None
    # Budget kind ("gpu_hours", "amount") -> projected / budget, for each limited kind.
    fractions: dict[str, str]


class BackstopOutcome(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Whether the Slurm account limits were brought in line with the budget after a change."""

    applied: bool
    error: str | None = None


class BudgetView(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The budget in force for the current period and where the tenant stands against it."""

    tenant_id: str
    period: str
    # Null: no budget in force for this period.
    budget: BudgetFigures | None
    terms: list[UseTermView]
    projected: ProjectedUseView | None
    refusal_threshold: str
    exceeded: list[str]
    # PUT only: what was stored, and the Slurm backstop's outcome.
    saved: BudgetFigures | None = None
    slurm_backstop: BackstopOutcome | None = None


class BudgetExceededDetails(msgspec.Struct, frozen=True, kw_only=True):
    """The budget figures a 402 problem carries (gateway.problems)."""

    period: str
    budget: BudgetFigures
    terms: list[UseTermView]
    projected: ProjectedUseView
    refusal_threshold: str
    exceeded: list[str]


class RateCardCreate(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A new rate card. Prices and multipliers are decimal strings; see accounting.rate_cards."""

    # RFC 3339 ("2026-11-01T00:00:00Z") or epoch seconds.
    effective_from: str | int
    currency: str
    prices: dict[str, Any]
    qos_multipliers: dict[str, Any] = msgspec.field(default_factory=dict)


class RateCardView(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A stored rate card."""

    id: int
    effective_from: datetime
    currency: str
    prices: dict[str, dict[str, str]]
    qos_multipliers: dict[str, str]
    created_at: datetime
    created_by: str
    # POST of a card effective in the past: how to reprice usage already posted since then.
    reprice_hint: str | None = None


class RateCardList(msgspec.Struct, frozen=True, kw_only=True):
    """Every rate card, newest effective_from first."""

    rate_cards: list[RateCardView]


class UsageFigures(msgspec.Struct, frozen=True, kw_only=True):
    """Net use and cost: TRES-hours (memory in GiB-hours) and the amount."""

    currency: str | None
    gpu_hours: str
    cpu_hours: str
    mem_gb_hours: str
    node_hours: str
    amount: str
    amount_micros: int


class UsageReportRow(msgspec.Struct, frozen=True, kw_only=True):
    """One group: its group_by values, then its figures."""

    group: dict[str, str | None]
    usage: UsageFigures


class UsageReportView(msgspec.Struct, frozen=True, kw_only=True):
    """GET /v1/reports/usage as JSON: ``from`` inclusive, ``to`` exclusive (UTC days)."""

    from_: date = msgspec.field(name="from")
    to: date
    group_by: list[str]
    tenant: str | None
    rows: list[UsageReportRow]
    totals: list[UsageFigures]


class StatementLineView(msgspec.Struct, frozen=True, kw_only=True):
    """One partition and QOS: charged, reversed (corrections, negative) and net."""

    partition: str
    qos: str | None
    charged: UsageFigures
    reversed: UsageFigures
    net: UsageFigures


class CorrectionView(msgspec.Struct, frozen=True, kw_only=True):
    """Reversals posted in the period for one job (its usage was re-read and re-priced)."""

    job_id: str
    partition: str
    qos: str | None
    reversals: int
    reversed: UsageFigures


class StatementBudgetView(msgspec.Struct, frozen=True, kw_only=True):
    """The budget in force for the period and the net use against it."""

    from_period: str
    gpu_hours: str | None
    amount: str | None
    used_gpu_hours: str
    used_amount: str
    fractions: dict[str, str]


class StatementView(msgspec.Struct, frozen=True, kw_only=True):
    """A tenant's monthly statement."""

    tenant_id: str
    period: str
    lines: list[StatementLineView]
    corrections: list[CorrectionView]
    totals: list[UsageFigures]
    budget: StatementBudgetView | None
