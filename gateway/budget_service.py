"""Budgets and rate cards over the database: validation, who may do what, upserts and look-ups.

A tenant's budget row applies from its ``from_period`` ("YYYY-MM") until a row with a later
``from_period``; the budget in force for period P is the row with the greatest from_period <= P.
Rate cards are append-only: a card is never changed, a later card takes over.
No HTTP and no Slurm here; run these from a worker thread (they block on the database).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from accounting.ledger_models import RateCardRow, TenantBudget
from accounting.rate_cards import RateCard, card_in_force, rate_card_document, rate_card_from_document
from accounting.usage_reports import current_period, parse_period
from gateway.accounting_schemas import BudgetPut, RateCardCreate
from gateway.authorization import require_role, require_tenant_role
from gateway.domain_errors import Conflict, InvalidField, NotFound
from gateway.principal import Principal
from gateway.storage_models import Tenant

SECONDS_PER_HOUR = 3600
MICROS_PER_UNIT = 1_000_000
# Far above any real budget; keeps the integers well inside BIGINT.
MAX_BUDGET_GPU_HOURS = Decimal(1_000_000_000)
MAX_BUDGET_AMOUNT = Decimal(1_000_000_000_000)
# Money to the cent; GPU-hours to 3.6 s, so a budget never rounds to a zero of whole seconds.
AMOUNT_DECIMAL_PLACES = 2
GPU_HOURS_DECIMAL_PLACES = 3
# Cards take effect on whole seconds: a fraction would be dropped, and two cards a fraction
# apart would collide.
_RFC3339_SECONDS = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:Z|[+-][0-9]{2}:[0-9]{2})", re.ASCII
)


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    """A budget as exact integers (None: no limit of that kind)."""

    from_period: str
    gpu_seconds: int | None
    amount_micros: int | None


def budget_in_force(session: Session, tenant_id: str, period: str) -> TenantBudget | None:
    """The row with the greatest from_period <= ``period`` (one query on the unique index)."""
    return session.scalars(
        select(TenantBudget)
        .where(TenantBudget.tenant_id == tenant_id, TenantBudget.from_period <= period)
        .order_by(TenantBudget.from_period.desc())
        .limit(1)
    ).one_or_none()


def budget_limits(data: BudgetPut, *, now: int) -> BudgetLimits:
    """Check a PUT body: decimal strings, 0 or more (amount to cents, gpu_hours to 3 places); a
    YYYY-MM period."""
    period = parse_period("from_period", data.from_period) if data.from_period is not None else None
    gpu_hours = _budget_decimal("gpu_hours", data.gpu_hours, MAX_BUDGET_GPU_HOURS, GPU_HOURS_DECIMAL_PLACES)
    amount = _budget_decimal("amount", data.amount, MAX_BUDGET_AMOUNT, AMOUNT_DECIMAL_PLACES)
    return BudgetLimits(
        from_period=period or current_period(now),
        # Hours with 3 places are not always whole seconds: round to the nearest second.
        gpu_seconds=(
            int((gpu_hours * SECONDS_PER_HOUR).to_integral_value(rounding=ROUND_HALF_UP))
            if gpu_hours is not None
            else None
        ),
        amount_micros=int(amount * MICROS_PER_UNIT) if amount is not None else None,
    )


def put_budget(
    session: Session, principal: Principal, tenant_id: str, limits: BudgetLimits, *, now: datetime
) -> TenantBudget:
    """Store ``tenant_id``'s budget from ``limits.from_period`` on (admin only); commits.

    Replaces the row of that from_period if there is one (both limits: null clears a kind).
    """
    require_role(principal, "admin")
    load_tenant(session, tenant_id)
    try:
        return _upsert_budget(session, principal, tenant_id, limits, now)
    except IntegrityError:
        # Two PUTs for the same new period at once: the other insert won; update its row.
        session.rollback()
        return _upsert_budget(session, principal, tenant_id, limits, now)


def _upsert_budget(
    session: Session, principal: Principal, tenant_id: str, limits: BudgetLimits, now: datetime
) -> TenantBudget:
    row = session.scalars(
        select(TenantBudget).where(
            TenantBudget.tenant_id == tenant_id, TenantBudget.from_period == limits.from_period
        )
    ).one_or_none()
    if row is None:
        row = TenantBudget(tenant_id=tenant_id, from_period=limits.from_period, created_at=now)
        session.add(row)
    row.gpu_seconds = limits.gpu_seconds
    row.amount_micros = limits.amount_micros
    row.updated_at = now
    row.updated_by = principal.user
    session.commit()
    return row


def require_budget_reader(principal: Principal, tenant_id: str) -> None:
    """Admins and finance read any tenant's budget and statements; a tenant-admin only its own
    (another tenant is NotFound); anyone else PermissionDenied."""
    if principal.has_role("finance"):
        return
    require_tenant_role(principal, tenant_id, "tenant-admin")


def report_tenant_scope(principal: Principal, tenant: str | None) -> str | None:
    """The tenant a usage report is restricted to (None: every tenant).

    Admin and finance see all tenants, or ``tenant``; a tenant-admin only its own (``tenant``
    naming another is NotFound); other roles PermissionDenied.
    """
    if principal.has_role("admin") or principal.has_role("finance"):
        return tenant
    require_role(principal, "tenant-admin")
    own = principal.tenant_id
    if own is None or (tenant is not None and tenant != own):
        raise NotFound(f"tenant {tenant or '(none)'!r} not found")
    return own


def load_tenant(session: Session, tenant_id: str) -> Tenant:
    """The tenant; NotFound when there is none."""
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound(f"tenant {tenant_id!r} not found")
    return tenant


def parse_effective_from(value: str | int) -> int:
    """An RFC 3339 timestamp with an offset, whole seconds ("2026-11-01T00:00:00Z"), or epoch seconds."""
    if isinstance(value, int):
        return value
    moment = None
    if _RFC3339_SECONDS.fullmatch(value):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
    if moment is None or moment.tzinfo is None:
        raise InvalidField(
            "effective_from",
            "use an RFC 3339 timestamp with a UTC offset (2026-11-01T00:00:00Z) or epoch seconds",
        )
    return int(moment.timestamp())


def create_rate_card(
    session: Session, principal: Principal, body: RateCardCreate, *, now: datetime
) -> tuple[RateCardRow, RateCard]:
    """Validate and append a rate card (admin or finance); Conflict when a card with the same
    effective_from exists. Raises RateCardError naming the bad field."""
    require_role(principal, "admin", "finance")
    effective_from = parse_effective_from(body.effective_from)
    document = {"currency": body.currency, "prices": body.prices, "qos_multipliers": body.qos_multipliers}
    card = rate_card_from_document(document, id=None, effective_from=effective_from)
    ledger_currency = session.scalars(select(RateCardRow.currency).limit(1)).first()
    if ledger_currency is not None and card.currency != ledger_currency:
        # Budgets, statements and projections sum amounts; they cannot add EUR to USD.
        raise InvalidField(
            "currency", f"the ledger is kept in {ledger_currency}; every rate card must use it"
        )
    row = RateCardRow(
        effective_from=card.effective_from,
        currency=card.currency,
        document=rate_card_document(card),
        created_at=now,
        created_by=principal.user,
    )
    session.add(row)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise Conflict(
            f"a rate card effective from {_iso(effective_from)} already exists; rate cards are never"
            " changed: add one with a later effective_from"
        ) from exc
    return row, rate_card_from_row(row)


def list_rate_cards(session: Session, principal: Principal) -> list[tuple[RateCardRow, RateCard]]:
    """Every rate card, newest effective_from first (admin, finance, tenant-admin)."""
    require_role(principal, "admin", "finance", "tenant-admin")
    rows = session.scalars(select(RateCardRow).order_by(RateCardRow.effective_from.desc()))
    return [(row, rate_card_from_row(row)) for row in rows]


def load_rate_cards(session: Session) -> list[RateCard]:
    """Every rate card, for pricing projections (a handful of rows)."""
    return [rate_card_from_row(row) for row in session.scalars(select(RateCardRow))]


def currency_in_force(session: Session, now: int) -> str | None:
    """The currency of the rate card in force at ``now`` (None before the first card)."""
    card = card_in_force(load_rate_cards(session), now)
    return card.currency if card is not None else None


def rate_card_from_row(row: RateCardRow) -> RateCard:
    """The RateCard a stored row holds."""
    return rate_card_from_document(row.document, id=row.id, effective_from=row.effective_from)


def reprice_hint(effective_from: int, now: int) -> str | None:
    """For a card effective in the past: the command that reprices usage posted since then."""
    if effective_from >= now:
        return None
    since = datetime.fromtimestamp(effective_from, UTC)
    return (
        "usage already posted since this card's effective_from keeps its old price until it is"
        f" repriced: run `slurm-gateway reconcile --since {since.strftime('%Y-%m-%dT%H:%M:%SZ')}`"
    )


def _budget_decimal(field: str, text: str | None, maximum: Decimal, places: int) -> Decimal | None:
    if text is None:
        return None
    stripped = text.strip()
    if not re.fullmatch(rf"[0-9]{{1,16}}(?:\.[0-9]{{1,{places}}})?", stripped, re.ASCII):
        raise InvalidField(
            field,
            f"{text[:40]!r} is not a decimal; write it as a string of digits with at most"
            f' {places} decimal places ("1000", "5000.00"), or null for no limit',
        )
    value = Decimal(stripped)
    if value > maximum:
        raise InvalidField(field, f"{stripped} is above the largest budget, {maximum}")
    return value


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
