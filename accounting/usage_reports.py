"""Usage and cost reports over the ledger: grouped totals and a tenant's monthly statement.

Aggregation happens in SQL (GROUP BY over ledger_entries columns, SUM of exact integers); the
figures stay integers (seconds, MB-seconds, micro-units) until accounting.report_csv renders
them. Reversals are ledger entries like any other, so every total is net of corrections. Amounts
are never added across currencies: currency is always part of the grouping.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from accounting.ledger_models import LedgerEntry
from gateway.domain_errors import InvalidField

# group_by key -> the ledger column it groups by.
GROUP_COLUMNS: dict[str, Any] = {
    "tenant": LedgerEntry.tenant_id,
    "account": LedgerEntry.account,
    "user": LedgerEntry.user,
    "partition": LedgerEntry.partition,
    "qos": LedgerEntry.qos,
    "day": LedgerEntry.day,
    "month": LedgerEntry.period,
}
DEFAULT_GROUP_BY = ("tenant",)
REVERSAL = "reversal"
_DAY = re.compile(r"(\d{4})-(\d{2})-(\d{2})", re.ASCII)
_MONTH = re.compile(r"(\d{4})-(\d{2})", re.ASCII)


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Summed use and cost (exact integers; negative parts come from reversals)."""

    cpu_seconds: int = 0
    mem_mb_seconds: int = 0
    gpu_seconds: int = 0
    node_seconds: int = 0
    amount_micros: int = 0


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One group of a usage report: its key values (by group_by name) and its totals."""

    group: dict[str, str | date | None]
    currency: str | None
    totals: UsageTotals


@dataclass(frozen=True, slots=True)
class UsageReport:
    """Rows ordered by their group values, and grand totals per currency."""

    start: date
    end: date
    group_by: tuple[str, ...]
    tenant_id: str | None
    rows: list[UsageRow]
    totals: list[UsageRow]


@dataclass(frozen=True, slots=True)
class StatementLine:
    """Use of one partition and QOS in one currency: charged, reversed (corrections) and net."""

    partition: str
    qos: str | None
    currency: str | None
    charged: UsageTotals
    reversed: UsageTotals
    net: UsageTotals


@dataclass(frozen=True, slots=True)
class Correction:
    """Reversals posted for one job's usage in the period (figures are negative)."""

    job_id: str
    partition: str
    qos: str | None
    currency: str | None
    reversals: int
    reversed: UsageTotals


@dataclass(frozen=True, slots=True)
class StatementBudget:
    """The budget in force for the statement's period (None: no limit of that kind)."""

    from_period: str
    gpu_seconds: int | None
    amount_micros: int | None


@dataclass(frozen=True, slots=True)
class Statement:
    """A tenant's monthly statement: lines, corrections, totals per currency, and its budget."""

    tenant_id: str
    period: str
    lines: list[StatementLine]
    corrections: list[Correction]
    totals: list[UsageRow]
    budget: StatementBudget | None


def parse_group_by(text: str | None) -> tuple[str, ...]:
    """``group_by`` as a tuple of known keys in the order given (repeats dropped)."""
    if text is None or not text.strip():
        return DEFAULT_GROUP_BY
    keys = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [key for key in keys if key not in GROUP_COLUMNS]
    if unknown:
        raise InvalidField(
            "group_by",
            f"unknown key {unknown[0]!r}; use a comma-separated subset of {', '.join(GROUP_COLUMNS)}",
        )
    return tuple(dict.fromkeys(keys))


def parse_report_day(field: str, text: str | None, *, default: date) -> date:
    """A report bound: "YYYY-MM-DD" is that UTC day, "YYYY-MM" the first day of that month."""
    if text is None:
        return default
    stripped = text.strip()
    day = _DAY.fullmatch(stripped)
    month = _MONTH.fullmatch(stripped)
    try:
        if day is not None:
            return date(int(day[1]), int(day[2]), int(day[3]))
        if month is not None:
            return date(int(month[1]), int(month[2]), 1)
    except ValueError:
        pass
    raise InvalidField(field, f"{text[:40]!r} is not a date; use YYYY-MM-DD or YYYY-MM (UTC)")


def parse_period(field: str, text: str) -> str:
    """A period "YYYY-MM" (a UTC month), checked."""
    match = _MONTH.fullmatch(text.strip())
    if match is None or not 1 <= int(match[2]) <= 12 or int(match[1]) < 1970:
        raise InvalidField(field, f"{text[:40]!r} is not a period; use YYYY-MM, e.g. 2026-11")
    return f"{match[1]}-{match[2]}"


def current_period(now: int) -> str:
    """The UTC month of epoch second ``now`` as "YYYY-MM"."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m")


def next_month(day: date) -> date:
    """The first day of the month after ``day``'s (the last one there is: date.max)."""
    if (day.year, day.month) == (date.max.year, date.max.month):
        return date.max
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def usage_report(
    session: Session, *, start: date, end: date, group_by: Sequence[str], tenant_id: str | None
) -> UsageReport:
    """Net use and cost of ledger entries with ``start <= day < end``, grouped by ``group_by``
    (and always by currency); only ``tenant_id``'s when given."""
    if end <= start:
        raise InvalidField("to", f"'to' ({end.isoformat()}) must be after 'from' ({start.isoformat()})")
    conditions: list[ColumnElement[bool]] = [LedgerEntry.day >= start, LedgerEntry.day < end]
    if tenant_id is not None:
        conditions.append(LedgerEntry.tenant_id == tenant_id)
    keys = [GROUP_COLUMNS[name] for name in group_by]
    rows = session.execute(
        select(*keys, LedgerEntry.currency, *_SUMS)
        .where(*conditions)
        .group_by(*keys, LedgerEntry.currency)
        .order_by(*keys, LedgerEntry.currency)
    ).all()
    totals = session.execute(
        select(LedgerEntry.currency, *_SUMS)
        .where(*conditions)
        .group_by(LedgerEntry.currency)
        .order_by(LedgerEntry.currency)
    ).all()
    width = len(keys)
    return UsageReport(
        start=start,
        end=end,
        group_by=tuple(group_by),
        tenant_id=tenant_id,
        rows=[
            UsageRow(
                group={name: _group_value(row[i]) for i, name in enumerate(group_by)},
                currency=row[width],
                totals=_totals(row, width + 1),
            )
            for row in rows
        ],
        totals=[UsageRow(group={}, currency=row[0], totals=_totals(row, 1)) for row in totals],
    )


def monthly_statement(
    session: Session, tenant_id: str, period: str, budget: StatementBudget | None
) -> Statement:
    """``tenant_id``'s statement for ``period``: per partition and QOS, charged, reversed and net;
    the reversals per job; net totals per currency; and the budget in force (given)."""
    in_period = (LedgerEntry.tenant_id == tenant_id, LedgerEntry.period == period)
    line_keys = (LedgerEntry.partition, LedgerEntry.qos, LedgerEntry.currency, LedgerEntry.kind)
    by_kind: dict[tuple[str, str | None, str | None], dict[str, UsageTotals]] = {}
    for row in session.execute(
        select(*line_keys, *_SUMS).where(*in_period).group_by(*line_keys).order_by(*line_keys[:3])
    ):
        by_kind.setdefault((row[0], row[1], row[2]), {})[row[3]] = _totals(row, 4)
    lines = []
    for (partition, qos, currency), kinds in by_kind.items():
        reversed_ = kinds.get(REVERSAL, UsageTotals())
        charged = _add(*(totals for kind, totals in kinds.items() if kind != REVERSAL))
        lines.append(StatementLine(partition, qos, currency, charged, reversed_, _add(charged, reversed_)))
    job_keys = (LedgerEntry.job_id, LedgerEntry.partition, LedgerEntry.qos, LedgerEntry.currency)
    corrections = [
        Correction(row[0], row[1], row[2], row[3], reversals=int(row[4]), reversed=_totals(row, 5))
        for row in session.execute(
            select(*job_keys, func.count(), *_SUMS)
            .where(*in_period, LedgerEntry.kind == REVERSAL)
            .group_by(*job_keys)
            .order_by(*job_keys)
        )
    ]
    currencies: dict[str | None, UsageTotals] = {}
    for line in lines:
        currencies[line.currency] = _add(currencies.get(line.currency, UsageTotals()), line.net)
    totals = [
        UsageRow(group={}, currency=currency, totals=currencies[currency])
        for currency in sorted(currencies, key=lambda text: text or "")
    ]
    return Statement(tenant_id, period, lines, corrections, totals, budget)


_SUMS = (
    func.coalesce(func.sum(LedgerEntry.cpu_seconds), 0),
    func.coalesce(func.sum(LedgerEntry.mem_mb_seconds), 0),
    func.coalesce(func.sum(LedgerEntry.gpu_seconds), 0),
    func.coalesce(func.sum(LedgerEntry.node_seconds), 0),
    func.coalesce(func.sum(LedgerEntry.amount_micros), 0),
)


def _totals(row: Sequence[Any], first: int) -> UsageTotals:
    # PostgreSQL sums BIGINT as NUMERIC (Decimal), SQLite as int: both are exact; make them int.
    cpu, mem, gpu, node, amount = (int(value) for value in row[first : first + 5])
    return UsageTotals(cpu, mem, gpu, node, amount)


def _add(*parts: UsageTotals) -> UsageTotals:
    return UsageTotals(
        cpu_seconds=sum(part.cpu_seconds for part in parts),
        mem_mb_seconds=sum(part.mem_mb_seconds for part in parts),
        gpu_seconds=sum(part.gpu_seconds for part in parts),
        node_seconds=sum(part.node_seconds for part in parts),
        amount_micros=sum(part.amount_micros for part in parts),
    )


def _group_value(value: object) -> str | date | None:
    # SQLite may hand a Date column back as text; the ISO text is what a report shows anyway.
    if value is None or isinstance(value, date):
        return value
    return str(value)
