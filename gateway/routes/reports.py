"""Usage reports and monthly statements, as JSON or CSV (finance, admin, and tenant-admins for
their own tenant).

``GET /v1/reports/usage?from=&to=&group_by=&tenant=&format=``: net use and cost per group;
``from`` inclusive, ``to`` exclusive (UTC days; "YYYY-MM" means the month's first day).
``GET /v1/tenants/{id}/statements/{YYYY-MM}?format=``: one tenant's month, per partition and
QOS, with corrections, totals and the budget. A bad parameter is 422 naming it.
"""

from __future__ import annotations

import asyncio
import time
from datetime import date
from typing import Annotated, Any

from litestar import Response, get
from litestar.datastructures import State
from litestar.params import PathParameter, QueryParameter
from sqlalchemy.orm import Session, sessionmaker

from accounting.report_csv import (
    decimal_text,
    fraction,
    gib_hours,
    hours,
    money,
    statement_csv,
    usage_report_csv,
)
from accounting.usage_reports import (
    Statement,
    StatementBudget,
    UsageReport,
    UsageTotals,
    current_period,
    monthly_statement,
    next_month,
    parse_group_by,
    parse_period,
    parse_report_day,
    usage_report,
)
from gateway.accounting_schemas import (
    CorrectionView,
    StatementBudgetView,
    StatementLineView,
    StatementView,
    UsageFigures,
    UsageReportRow,
    UsageReportView,
)
from gateway.api_schemas import SLURM_NAME_PATTERN
from gateway.auth import AuthenticatedPrincipal
from gateway.budget_service import budget_in_force, load_tenant, report_tenant_scope, require_budget_reader
from gateway.domain_errors import InvalidField
from gateway.routes.tenants import TenantId

# Litestar adds "; charset=utf-8" to text types itself.
CSV_MEDIA_TYPE = "text/csv"
FORMATS = ("json", "csv")
FromParam = Annotated[
    str | None, QueryParameter(name="from", description="first UTC day (YYYY-MM-DD or YYYY-MM)")
]
ToParam = Annotated[
    str | None, QueryParameter(description="UTC day after the last (default: next month's first)")
]
GroupByParam = Annotated[
    str | None, QueryParameter(description="comma-separated: tenant,account,user,partition,qos,day,month")
]
TenantParam = Annotated[
    str | None, QueryParameter(description="only this tenant", pattern=SLURM_NAME_PATTERN, max_length=31)
]
FormatParam = Annotated[str | None, QueryParameter(name="format", description="json (default) or csv")]
Period = Annotated[str, PathParameter(description="UTC month, YYYY-MM", max_length=16)]


@get(
    "/v1/reports/usage", tags=["accounting"], summary="Use and cost per group (finance, admin, tenant-admin)"
)
async def get_usage_report(
    state: State,
    principal: AuthenticatedPrincipal,
    *,
    from_: FromParam = None,
    to: ToParam = None,
    group_by: GroupByParam = None,
    tenant: TenantParam = None,
    output_format: FormatParam = None,
) -> Response[Any]:
    """Net TRES-hours and amounts of the ledger entries of days in [from, to), grouped."""
    # Who may ask comes before what was asked: a user role learns nothing from parameter errors.
    report_tenant_scope(principal, tenant)
    output = _format(output_format)
    keys = parse_group_by(group_by)
    first_of_month = date.fromisoformat(current_period(int(time.time())) + "-01")
    start = parse_report_day("from", from_, default=first_of_month)
    end = parse_report_day("to", to, default=next_month(start))
    session_factory: sessionmaker[Session] = state.session_factory

    def read() -> UsageReport:
        scope = report_tenant_scope(principal, tenant)
        with session_factory() as session:
            if scope is not None:
                load_tenant(session, scope)
            return usage_report(session, start=start, end=end, group_by=keys, tenant_id=scope)

    report = await asyncio.to_thread(read)
    if output == "csv":
        name = f"usage-{start.isoformat()}-{end.isoformat()}.csv"
        return _csv_response(usage_report_csv(report), name)
    return Response(usage_report_view(report))


@get(
    "/v1/tenants/{tenant_id:str}/statements/{period:str}",
    tags=["accounting"],
    summary="A tenant's monthly statement (finance, admin, its tenant-admin)",
)
async def get_statement(
    tenant_id: TenantId,
    period: Period,
    state: State,
    principal: AuthenticatedPrincipal,
    *,
    output_format: FormatParam = None,
) -> Response[Any]:
    """Per partition and QOS: charged, reversed and net; the reversals per job; totals per
    currency; the budget in force for the month and the use against it."""
    output = _format(output_format)
    month = parse_period("period", period)
    session_factory: sessionmaker[Session] = state.session_factory

    def read() -> Statement:
        require_budget_reader(principal, tenant_id)
        with session_factory() as session:
            load_tenant(session, tenant_id)
            row = budget_in_force(session, tenant_id, month)
            budget = (
                StatementBudget(row.from_period, row.gpu_seconds, row.amount_micros)
                if row is not None
                else None
            )
            return monthly_statement(session, tenant_id, month, budget)

    statement = await asyncio.to_thread(read)
    if output == "csv":
        return _csv_response(statement_csv(statement), f"statement-{tenant_id}-{month}.csv")
    return Response(statement_view(statement))


def usage_figures(currency: str | None, totals: UsageTotals) -> UsageFigures:
    """Totals as decimal strings (hours to 6 places, money to cents) plus exact micro-units."""
    return UsageFigures(
        currency=currency,
        gpu_hours=decimal_text(hours(totals.gpu_seconds)),
        cpu_hours=decimal_text(hours(totals.cpu_seconds)),
        mem_gb_hours=decimal_text(gib_hours(totals.mem_mb_seconds)),
        node_hours=decimal_text(hours(totals.node_seconds)),
        amount=decimal_text(money(totals.amount_micros)),
        amount_micros=totals.amount_micros,
    )


def usage_report_view(report: UsageReport) -> UsageReportView:
    """The JSON form of a usage report."""
    return UsageReportView(
        from_=report.start,
        to=report.end,
        group_by=list(report.group_by),
        tenant=report.tenant_id,
        rows=[
            UsageReportRow(
                group={name: _text(value) for name, value in row.group.items()},
                usage=usage_figures(row.currency, row.totals),
            )
            for row in report.rows
        ],
        totals=[usage_figures(row.currency, row.totals) for row in report.totals],
    )


def statement_view(statement: Statement) -> StatementView:
    """The JSON form of a monthly statement."""
    return StatementView(
        tenant_id=statement.tenant_id,
        period=statement.period,
        lines=[
            StatementLineView(
                partition=line.partition,
                qos=line.qos,
                charged=usage_figures(line.currency, line.charged),
                reversed=usage_figures(line.currency, line.reversed),
                net=usage_figures(line.currency, line.net),
            )
            for line in statement.lines
        ],
        corrections=[
            CorrectionView(
                job_id=correction.job_id,
                partition=correction.partition,
                qos=correction.qos,
                reversals=correction.reversals,
                reversed=usage_figures(correction.currency, correction.reversed),
            )
            for correction in statement.corrections
        ],
        totals=[usage_figures(total.currency, total.totals) for total in statement.totals],
        budget=_statement_budget(statement),
    )


def _statement_budget(statement: Statement) -> StatementBudgetView | None:
    budget = statement.budget
    if budget is None:
        return None
    used_gpu = sum(total.totals.gpu_seconds for total in statement.totals)
    used_amount = sum(total.totals.amount_micros for total in statement.totals)
    fractions = {}
    for kind, used, limit in (
        ("gpu_hours", used_gpu, budget.gpu_seconds),
        ("amount", used_amount, budget.amount_micros),
    ):
        if limit:
            fractions[kind] = decimal_text(fraction(used, limit))
    return StatementBudgetView(
        from_period=budget.from_period,
        gpu_hours=decimal_text(hours(budget.gpu_seconds)) if budget.gpu_seconds is not None else None,
        amount=decimal_text(money(budget.amount_micros)) if budget.amount_micros is not None else None,
        used_gpu_hours=decimal_text(hours(used_gpu)),
        used_amount=decimal_text(money(used_amount)),
        fractions=fractions,
    )


def _format(text: str | None) -> str:
    output = (text or "json").strip().lower()
    if output not in FORMATS:
        raise InvalidField("format", f"{(text or '')[:20]!r} is not a report format; use json or csv")
    return output


def _csv_response(document: bytes, filename: str) -> Response[bytes]:
    return Response(
        content=document,
        media_type=CSV_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _text(value: str | date | None) -> str | None:
    return value.isoformat() if isinstance(value, date) else value
