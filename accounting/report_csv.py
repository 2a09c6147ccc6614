"""CSV and decimal rendering of accounting figures (pure: no database, no HTTP).

Figures are exact integers (seconds, MB-seconds, micro-units) until they are shown: hours to 6
decimals, money to cents, both rounded half up only here. CSV follows RFC 4180 (CRLF line ends,
quoting when needed, a header row) in UTF-8, and text cells that a spreadsheet would read as a
formula (starting with = + - @, tab or CR) are prefixed with ``'``. Numbers this module renders
are never prefixed, so a negative correction stays a number.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from accounting.usage_reports import Statement, UsageReport, UsageTotals

SECONDS_PER_HOUR = 3600
MB_PER_GIB = 1024
MICROS_PER_UNIT = 1_000_000
HOURS_QUANTUM = Decimal("0.000001")
CENTS_QUANTUM = Decimal("0.01")
FRACTION_QUANTUM = Decimal("0.0001")
# OWASP "CSV injection": cells a spreadsheet may evaluate as a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

Cell = str | Decimal | int | date | None
MEASURE_COLUMNS = ("gpu_hours", "cpu_hours", "mem_gb_hours", "node_hours", "amount")


def hours(seconds: int) -> Decimal:
    """``seconds`` of use as hours, to 6 decimals (half up)."""
    return (Decimal(seconds) / SECONDS_PER_HOUR).quantize(HOURS_QUANTUM, rounding=ROUND_HALF_UP)


def gib_hours(mb_seconds: int) -> Decimal:
    """Memory use in MB-seconds as GiB-hours, to 6 decimals (half up)."""
    return (Decimal(mb_seconds) / (MB_PER_GIB * SECONDS_PER_HOUR)).quantize(
        HOURS_QUANTUM, rounding=ROUND_HALF_UP
    )


def money(micros: int) -> Decimal:
    """An amount in micro-units, to cents (half up)."""
    return (Decimal(micros) / MICROS_PER_UNIT).quantize(CENTS_QUANTUM, rounding=ROUND_HALF_UP)


def fraction(used: int, limit: int) -> Decimal:
    """``used / limit`` (limit > 0) to 4 decimals (half up), e.g. 0.9123 for 91.23 %."""
    return (Decimal(used) / Decimal(limit)).quantize(FRACTION_QUANTUM, rounding=ROUND_HALF_UP)


def decimal_text(value: Decimal) -> str:
    """Plain positional notation ("1000.00", never "1E+3")."""
    return format(value, "f")


def cell_text(value: Cell) -> str:
    """One CSV cell: numbers as they are, dates in ISO form, text guarded against formulas."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, int | date):
        return value.isoformat() if isinstance(value, date) else str(value)
    if value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def render_csv(header: Sequence[str], rows: Iterable[Sequence[Cell]]) -> bytes:
    """A UTF-8 RFC 4180 document: the header row, then one line per row, CRLF line ends."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow([cell_text(name) for name in header])
    for row in rows:
        writer.writerow([cell_text(value) for value in row])
    return buffer.getvalue().encode("utf-8")


def measures(totals: UsageTotals) -> list[Cell]:
    """The MEASURE_COLUMNS of ``totals``, rounded for display."""
    return [
        hours(totals.gpu_seconds),
        hours(totals.cpu_seconds),
        gib_hours(totals.mem_mb_seconds),
        hours(totals.node_seconds),
        money(totals.amount_micros),
    ]


def usage_report_csv(report: UsageReport) -> bytes:
    """One line per group (group_by columns, currency, measures); no totals line, so that a
    spreadsheet's own sums over the column are the totals."""
    header = [*report.group_by, "currency", *MEASURE_COLUMNS]
    rows = (
        [*(row.group[name] for name in report.group_by), row.currency, *measures(row.totals)]
        for row in report.rows
    )
    return render_csv(header, rows)


def statement_csv(statement: Statement) -> bytes:
    """A statement as one table: a line per partition and QOS (charged, reversed, net), a line
    per corrected job, a total per currency, and the budget; ``line`` says which each is."""
    header = ["line", "tenant", "period", "partition", "qos", "job_id", "currency", *MEASURE_COLUMNS]
    head = [statement.tenant_id, statement.period]
    rows: list[list[Cell]] = []
    for line in statement.lines:
        for kind, totals in (("charged", line.charged), ("reversed", line.reversed), ("net", line.net)):
            rows.append([kind, *head, line.partition, line.qos, None, line.currency, *measures(totals)])
    for correction in statement.corrections:
        rows.append(
            [
                "correction",
                *head,
                correction.partition,
                correction.qos,
                correction.job_id,
                correction.currency,
                *measures(correction.reversed),
            ]
        )
    for total in statement.totals:
        rows.append(["total", *head, None, None, None, total.currency, *measures(total.totals)])
    budget = statement.budget
    if budget is not None:
        gpu = hours(budget.gpu_seconds) if budget.gpu_seconds is not None else None
        amount = money(budget.amount_micros) if budget.amount_micros is not None else None
        rows.append(["budget", *head, None, None, None, None, gpu, None, None, None, amount])
    return render_csv(header, rows)
