"""Usage reports and monthly statements over the real app and database (SQLite and PostgreSQL).

Ledger rows are inserted directly, so every figure is known exactly; the reconciler that posts
them from sacct has its own end-to-end test.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy.orm import Session, sessionmaker

from accounting.ledger_models import TenantBudget
from gateway.config import GatewayConfig
from gateway.database import create_database_engine
from tests.integration.gateway_fixtures import (
    bearer_headers,
    gateway_client,
    gateway_config,
    migrated_database,
    token_for,
)
from tests.integration.ledger_rows import insert_entry, insert_record, store_tenant

__all__ = ["gateway_client", "gateway_config", "migrated_database", "token_for"]

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

Client = TestClient[Litestar]
Headers = Callable[..., dict[str, str]]


@pytest.fixture
def session_factory(gateway_config: GatewayConfig, migrated_database: str) -> Iterator[sessionmaker[Session]]:
    engine = create_database_engine(migrated_database)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


@pytest.fixture
def headers(token_for: Callable[..., str]) -> Headers:
    def make(user: str, tenant: str | None, *roles: str) -> dict[str, str]:
        return bearer_headers(token_for(user, tenant, list(roles)))

    return make


@pytest.fixture
def ledger(session_factory: sessionmaker[Session]) -> None:
    """Two tenants' October 2026 (and one November) use, with one corrected job.

    acme: gpu job 2 GPU-h 5.005 EUR (reversed, re-posted as 1.5 GPU-h 3.75 EUR) on 10-03,
          cpu job 10 cpu-h 1.234567 EUR on 10-31 by a user named like a formula,
          gpu job 1 GPU-h 2.50 EUR on 11-01 (outside October);
    beta: gpu job 4 GPU-h 10 EUR on 10-15.
    """
    with session_factory() as session:
        store_tenant(session, "acme")
        store_tenant(session, "beta")
        corrected = insert_record(session, "acme", gpu=1)
        first = insert_entry(session, corrected, date(2026, 10, 3), gpu_seconds=7200, amount_micros=5_005_000)
        insert_entry(
            session,
            corrected,
            date(2026, 10, 3),
            gpu_seconds=-7200,
            amount_micros=-5_005_000,
            kind="reversal",
            reverses=first,
        )
        insert_entry(session, corrected, date(2026, 10, 3), gpu_seconds=5400, amount_micros=3_750_000)
        cpu_job = insert_record(session, "acme", partition="cpu", qos=None, user="=cmd")
        insert_entry(session, cpu_job, date(2026, 10, 31), cpu_seconds=36_000, amount_micros=1_234_567)
        november = insert_record(session, "acme", gpu=1)
        insert_entry(session, november, date(2026, 11, 1), gpu_seconds=3600, amount_micros=2_500_000)
        beta_job = insert_record(session, "beta", gpu=1)
        insert_entry(session, beta_job, date(2026, 10, 15), gpu_seconds=14_400, amount_micros=10_000_000)
        session.add(
            TenantBudget(
                tenant_id="acme",
                from_period="2026-09",
                gpu_seconds=36_000,
                amount_micros=None,
                created_at=datetime.now(UTC),
                updated_at=datetime.now(UTC),
                updated_by="test",
            )
        )
        session.commit()


def rows_by(report: dict[str, object], *keys: str) -> dict[tuple[str | None, ...], dict[str, object]]:
    rows = report["rows"]
    assert isinstance(rows, list)
    return {tuple(row["group"][key] for key in keys): row["usage"] for row in rows}


def parse_csv(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode("utf-8"), newline="")))


# --- usage reports ---------------------------------------------------------------------


@pytest.mark.usefixtures("ledger")
def test_finance_sees_every_tenant_per_partition_net_of_corrections(
    gateway_client: Client, headers: Headers
) -> None:
    response = gateway_client.get(
        "/v1/reports/usage",
        params={"from": "2026-10", "to": "2026-11", "group_by": "tenant,partition"},
        headers=headers("fin", None, "finance"),
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["from"], report["to"], report["group_by"]) == (
        "2026-10-01",
        "2026-11-01",
        ["tenant", "partition"],
    )
    rows = rows_by(report, "tenant", "partition")
    assert set(rows) == {("acme", "gpu"), ("acme", "cpu"), ("beta", "gpu")}
    assert rows[("acme", "gpu")]["gpu_hours"] == "1.500000"
    assert rows[("acme", "gpu")]["amount"] == "3.75"
    assert rows[("acme", "gpu")]["amount_micros"] == 3_750_000
    assert rows[("acme", "cpu")]["cpu_hours"] == "10.000000"
    assert rows[("acme", "cpu")]["mem_gb_hours"] == "10.000000"
    assert rows[("acme", "cpu")]["amount"] == "1.23"
    assert rows[("beta", "gpu")]["amount"] == "10.00"
    [total] = report["totals"]
    assert total["currency"] == "EUR"
    assert total["amount_micros"] == 3_750_000 + 1_234_567 + 10_000_000
    assert total["amount"] == "14.98"  # rounded once, from the exact sum
    assert total["gpu_hours"] == "5.500000"


@pytest.mark.usefixtures("ledger")
def test_grouping_by_day_and_month(gateway_client: Client, headers: Headers) -> None:
    finance = headers("fin", None, "finance")
    by_day = gateway_client.get(
        "/v1/reports/usage",
        params={"from": "2026-10-01", "to": "2026-12-01", "group_by": "day", "tenant": "acme"},
        headers=finance,
    ).json()
    days = rows_by(by_day, "day")
    assert set(days) == {("2026-10-03",), ("2026-10-31",), ("2026-11-01",)}
    assert days[("2026-11-01",)]["gpu_hours"] == "1.000000"
    by_month = gateway_client.get(
        "/v1/reports/usage",
        params={"from": "2026-10", "to": "2026-12", "group_by": "month,user"},
        headers=finance,
    ).json()
    months = rows_by(by_month, "month", "user")
    assert months[("2026-10", "alice")]["amount"] == "13.75"  # acme 3.75 + beta 10
    assert months[("2026-11", "alice")]["amount"] == "2.50"
    assert months[("2026-10", "=cmd")]["amount"] == "1.23"


@pytest.mark.usefixtures("ledger")
def test_csv_parses_back_and_guards_formulas(gateway_client: Client, headers: Headers) -> None:
    response = gateway_client.get(
        "/v1/reports/usage",
        params={"from": "2026-10", "to": "2026-11", "group_by": "tenant,user,qos", "format": "csv"},
        headers=headers("fin", None, "finance"),
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="usage-2026-10-01-2026-11-01.csv"'
    assert response.content.count(b"\r\n") == 4  # header + 3 rows, CRLF each
    rows = parse_csv(response.content)
    assert list(rows[0]) == [
        "tenant", "user", "qos", "currency", "gpu_hours", "cpu_hours", "mem_gb_hours", "node_hours", "amount",
    ]  # fmt: skip
    by_user = {(row["tenant"], row["user"]): row for row in rows}
    assert set(by_user) == {("acme", "alice"), ("acme", "'=cmd"), ("beta", "alice")}
    assert by_user[("acme", "'=cmd")]["qos"] == ""
    assert sum(float(row["amount"]) for row in rows) == pytest.approx(14.98)


@pytest.mark.usefixtures("ledger")
def test_a_tenant_admin_sees_only_its_own_tenant(gateway_client: Client, headers: Headers) -> None:
    admin_of_acme = headers("boss", "acme", "tenant-admin")
    params = {"from": "2026-10", "to": "2026-11", "group_by": "tenant"}
    response = gateway_client.get("/v1/reports/usage", params=params, headers=admin_of_acme)
    assert response.status_code == 200, response.text
    assert list(rows_by(response.json(), "tenant")) == [("acme",)]
    other = gateway_client.get(
        "/v1/reports/usage", params={**params, "tenant": "beta"}, headers=admin_of_acme
    )
    assert other.status_code == 404
    user = gateway_client.get("/v1/reports/usage", params=params, headers=headers("alice", "acme", "user"))
    assert user.status_code == 403


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2026-13-01"}, "from"),
        ({"from": "yesterday"}, "from"),
        ({"from": "2026-10-05", "to": "2026-10-05"}, "to"),
        ({"to": "2026-02-30"}, "to"),
        ({"group_by": "tenant,colour"}, "group_by"),
        ({"format": "xml"}, "format"),
    ],
)
def test_bad_report_parameters_are_named(
    gateway_client: Client, headers: Headers, params: dict[str, str], field: str
) -> None:
    response = gateway_client.get("/v1/reports/usage", params=params, headers=headers("fin", None, "finance"))
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field


def test_a_tenant_parameter_that_is_no_tenant_name_is_refused_naming_it(
    gateway_client: Client, headers: Headers
) -> None:
    finance = headers("fin", None, "finance")
    response = gateway_client.get("/v1/reports/usage", params={"tenant": "x\x00y"}, headers=finance)
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["field"] == "tenant"


def test_a_report_from_the_last_month_there_is_ends_on_the_last_day(
    gateway_client: Client, headers: Headers
) -> None:
    finance = headers("fin", None, "finance")
    response = gateway_client.get("/v1/reports/usage", params={"from": "9999-12"}, headers=finance)
    assert response.status_code == 200, response.text
    assert (response.json()["from"], response.json()["to"]) == ("9999-12-01", "9999-12-31")


def test_a_report_of_an_unknown_tenant_is_not_found(gateway_client: Client, headers: Headers) -> None:
    finance = headers("fin", None, "finance")
    response = gateway_client.get("/v1/reports/usage", params={"tenant": "nobody"}, headers=finance)
    assert response.status_code == 404


# --- statements ------------------------------------------------------------------------


@pytest.mark.usefixtures("ledger")
def test_statement_shows_lines_corrections_totals_and_budget(
    gateway_client: Client, headers: Headers
) -> None:
    response = gateway_client.get(
        "/v1/tenants/acme/statements/2026-10", headers=headers("boss", "acme", "tenant-admin")
    )
    assert response.status_code == 200, response.text
    statement = response.json()
    lines = {(line["partition"], line["qos"]): line for line in statement["lines"]}
    assert set(lines) == {("gpu", "normal"), ("cpu", None)}
    gpu = lines[("gpu", "normal")]
    assert (gpu["charged"]["amount"], gpu["reversed"]["amount"], gpu["net"]["amount"]) == (
        "8.76",
        "-5.01",
        "3.75",
    )
    [correction] = statement["corrections"]
    assert correction["reversals"] == 1
    assert correction["reversed"]["gpu_hours"] == "-2.000000"
    [total] = statement["totals"]
    assert total["amount_micros"] == 3_750_000 + 1_234_567
    assert statement["budget"] == {
        "from_period": "2026-09",
        "gpu_hours": "10.000000",
        "amount": None,
        "used_gpu_hours": "1.500000",
        "used_amount": "4.98",
        "fractions": {"gpu_hours": "0.1500"},
    }


@pytest.mark.usefixtures("ledger")
def test_statement_csv(gateway_client: Client, headers: Headers) -> None:
    response = gateway_client.get(
        "/v1/tenants/acme/statements/2026-10",
        params={"format": "csv"},
        headers=headers("fin", None, "finance"),
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"] == 'attachment; filename="statement-acme-2026-10.csv"'
    rows = parse_csv(response.content)
    kinds = [row["line"] for row in rows]
    assert kinds.count("charged") == kinds.count("net") == 2
    assert [row["amount"] for row in rows if row["line"] == "total"] == ["4.98"]
    assert [row["gpu_hours"] for row in rows if row["line"] == "budget"] == ["10.000000"]


@pytest.mark.usefixtures("ledger")
def test_statement_access_and_period(gateway_client: Client, headers: Headers) -> None:
    admin_of_beta = headers("bb", "beta", "tenant-admin")
    assert gateway_client.get("/v1/tenants/acme/statements/2026-10", headers=admin_of_beta).status_code == 404
    user = headers("alice", "acme", "user")
    assert gateway_client.get("/v1/tenants/acme/statements/2026-10", headers=user).status_code == 403
    finance = headers("fin", None, "finance")
    assert gateway_client.get("/v1/tenants/nobody/statements/2026-10", headers=finance).status_code == 404
    bad = gateway_client.get("/v1/tenants/acme/statements/2026-13", headers=finance)
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "period"
    empty = gateway_client.get("/v1/tenants/beta/statements/2026-11", headers=finance).json()
    assert (empty["lines"], empty["totals"], empty["budget"]) == ([], [], None)
