import csv
import io
from datetime import date
from decimal import Decimal

import pytest

from accounting.report_csv import (
    cell_text,
    decimal_text,
    gib_hours,
    hours,
    money,
    render_csv,
    statement_csv,
    usage_report_csv,
)
from accounting.usage_reports import (
    Correction,
    Statement,
    StatementBudget,
    StatementLine,
    UsageReport,
    UsageRow,
    UsageTotals,
)


def parse(document: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(document.decode("utf-8"), newline="")))


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (12_345_000, "12.35"),  # half up, not half even
        (12_355_000, "12.36"),
        (12_344_999, "12.34"),
        (-12_345_000, "-12.35"),
        (0, "0.00"),
        (5_000_000_000, "5000.00"),
    ],
)
def test_money_rounds_to_cents_half_up(micros: int, text: str) -> None:
    assert decimal_text(money(micros)) == text


def test_hours_have_six_decimals_rounded_half_up() -> None:
    assert decimal_text(hours(3600)) == "1.000000"
    assert decimal_text(hours(1)) == "0.000278"  # 0.0002777...
    assert decimal_text(hours(-5400)) == "-1.500000"
    assert decimal_text(gib_hours(1024 * 3600 * 3)) == "3.000000"
    assert decimal_text(gib_hours(512 * 1800)) == "0.250000"


@pytest.mark.parametrize("text", ["=SUM(A1:A2)", "+1", "-2+3", "@cmd", "\tx", "\rx"])
def test_text_that_a_spreadsheet_would_evaluate_is_prefixed(text: str) -> None:
    assert cell_text(text) == "'" + text


def test_numbers_and_plain_text_are_left_alone() -> None:
    assert cell_text(Decimal("-1.50")) == "-1.50"
    assert cell_text(-3) == "-3"
    assert cell_text(date(2026, 11, 3)) == "2026-11-03"
    assert cell_text(None) == ""
    assert cell_text("gpu") == "gpu"


def test_render_csv_quotes_per_rfc_4180_and_ends_lines_with_crlf() -> None:
    document = render_csv(["name", "note"], [['a,b "c"', "line\nbreak"], ["é", None]])
    assert document.endswith(b"\r\n")
    assert document.split(b"\r\n")[0] == b"name,note"
    assert b'"a,b ""c"""' in document
    assert "é".encode() in document
    assert parse(document) == [["name", "note"], ['a,b "c"', "line\nbreak"], ["é", ""]]


def totals(gpu_s: int, amount: int) -> UsageTotals:
    return UsageTotals(
        cpu_seconds=2 * gpu_s, mem_mb_seconds=1024 * gpu_s, gpu_seconds=gpu_s, node_seconds=gpu_s,
        amount_micros=amount,
    )  # fmt: skip


def test_usage_report_csv_has_group_columns_then_currency_and_measures() -> None:
    report = UsageReport(
        start=date(2026, 10, 1),
        end=date(2026, 11, 1),
        group_by=("tenant", "partition"),
        tenant_id=None,
        rows=[
            UsageRow(
                group={"tenant": "acme", "partition": "gpu"}, currency="EUR", totals=totals(7200, 5_005_000)
            ),
            UsageRow(group={"tenant": "=evil", "partition": "cpu"}, currency="EUR", totals=totals(0, 1)),
        ],
        totals=[],
    )
    rows = parse(usage_report_csv(report))
    assert rows[0] == [
        "tenant", "partition", "currency", "gpu_hours", "cpu_hours", "mem_gb_hours", "node_hours", "amount",
    ]  # fmt: skip
    assert rows[1] == ["acme", "gpu", "EUR", "2.000000", "4.000000", "2.000000", "2.000000", "5.01"]
    assert rows[2][:2] == ["'=evil", "cpu"]
    assert rows[2][-1] == "0.00"


def test_statement_csv_shows_lines_corrections_totals_and_budget() -> None:
    charged, reversed_ = totals(3600, 2_000_000), totals(-1800, -1_000_000)
    statement = Statement(
        tenant_id="acme",
        period="2026-10",
        lines=[
            StatementLine("gpu", "normal", "EUR", charged, reversed_, totals(1800, 1_000_000)),
        ],
        corrections=[Correction("123_4", "gpu", "normal", "EUR", reversals=1, reversed=reversed_)],
        totals=[UsageRow(group={}, currency="EUR", totals=totals(1800, 1_000_000))],
        budget=StatementBudget(from_period="2026-09", gpu_seconds=360_000, amount_micros=None),
    )
    rows = parse(statement_csv(statement))
    assert rows[0][:7] == ["line", "tenant", "period", "partition", "qos", "job_id", "currency"]
    by_line = {row[0]: row for row in rows[1:]}
    assert [row[0] for row in rows[1:]] == ["charged", "reversed", "net", "correction", "total", "budget"]
    assert by_line["reversed"][-1] == "-1.00"  # a negative number, not an escaped text cell
    assert by_line["correction"][5] == "123_4"
    assert by_line["net"][-1] == by_line["total"][-1] == "1.00"
    assert by_line["budget"][7] == "100.000000"
    assert by_line["budget"][-1] == ""
