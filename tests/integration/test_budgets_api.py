"""Budgets, rate cards and budget admission end to end: real app, databases and Slurm accounts.

Tenants are created through the API (so their Slurm accounts exist for the backstop); the
posted ledger and running jobs are inserted as rows, so the projection's figures are exact.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy.orm import Session, sessionmaker

from accounting.projected_use import period_bounds, period_of
from gateway.config import GatewayConfig
from gateway.database import create_database_engine
from tests.integration.gateway_fixtures import (
    bearer_headers,
    gateway_client,
    gateway_config,
    migrated_database,
    token_for,
)
from tests.integration.job_api_helpers import create_tenant, job_body
from tests.integration.ledger_rows import insert_entry, insert_record
from tests.integration.slurm_cluster import run_command

__all__ = ["gateway_client", "gateway_config", "migrated_database", "token_for"]

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

Client = TestClient[Litestar]
Headers = Callable[..., dict[str, str]]
CARD = {
    "effective_from": "2020-01-01T00:00:00Z",
    "currency": "EUR",
    "prices": {"*": {"gpu": "2.00", "cpu": "0.10"}},
}


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
def tenant(gateway_client: Client, headers: Headers) -> Iterator[str]:
    """A tenant with member alice and its Slurm account, removed afterwards."""
    name = f"sgw_budget_{uuid.uuid4().hex[:8]}"
    create_tenant(gateway_client, token_for_admin(headers), name, {"alice": "alice"})
    yield name
    run_command(["sacctmgr", "-i", "delete", "account", f"name={name}"], check=False)


def token_for_admin(headers: Headers) -> str:
    return headers("root-admin", None, "admin")["Authorization"].removeprefix("Bearer ")


@pytest.fixture
def mid_month() -> int:
    """Now, away from the month's ends, where projections would be clipped at the period bounds."""
    now = int(time.time())
    start, end = period_bounds(period_of(now))
    if now - start < 7200 or end - now < 7200:
        pytest.skip("too close to a month boundary for exact projections")
    return now


def account_limits(account: str) -> tuple[str, str]:
    """(GrpSubmitJobs, GrpTRESRunMins) of the account's association."""
    output = run_command(
        [
            "sacctmgr",
            "-n",
            "-P",
            "show",
            "assoc",
            "where",
            f"accounts={account}",
            "format=User,GrpSubmit,GrpTRESRunMins",
        ]
    )
    for line in output.stdout.splitlines():
        user, submit, run_mins = line.split("|")
        if not user:
            return submit, run_mins
    raise AssertionError(f"no account association for {account}: {output!r}")


def seed_use(session_factory: sessionmaker[Session], tenant: str, now: int) -> None:
    """7 GPU-hours posted today, and a 1-GPU job running for a minute with a one-hour limit."""
    with session_factory() as session:
        posted = insert_record(session, tenant, gpu=1)
        insert_entry(
            session,
            posted,
            datetime.fromtimestamp(now, UTC).date(),
            gpu_seconds=25_200,
            amount_micros=14_000_000,
        )
        insert_record(
            session, tenant, gpu=1, start_time=now - 60, elapsed_s=60, time_limit_s=3600, is_final=False
        )
        session.commit()


def gpu_job(minutes: int) -> dict[str, object]:
    return job_body(partition="gpu", gpus_per_node=1, time_limit=str(minutes))


# --- budgets ---------------------------------------------------------------------------


def test_admission_refuses_at_ninety_percent_with_every_term(
    gateway_client: Client,
    headers: Headers,
    tenant: str,
    session_factory: sessionmaker[Session],
    mid_month: int,
) -> None:
    admin, alice = headers("root-admin", None, "admin"), headers("alice", tenant, "user")
    assert (
        gateway_client.post("/v1/rate-cards", json=CARD, headers=headers("fin", None, "finance")).status_code
        == 201
    )
    response = gateway_client.put(f"/v1/tenants/{tenant}/budget", json={"gpu_hours": "10"}, headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["slurm_backstop"] == {"applied": True}
    seed_use(session_factory, tenant, mid_month)

    # 7 h posted + 1 h running (to its limit) + 1 h new = 9 h = 90 % of 10 h: refused.
    refused = gateway_client.post("/v1/jobs", json=gpu_job(60), headers=alice)
    assert refused.status_code == 402, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert problem["type"].endswith("budget-exceeded")
    assert problem["period"] == period_of(mid_month)
    assert problem["budget"] == {
        "from_period": period_of(mid_month), "gpu_hours": "10.000000", "amount": None, "currency": "EUR",
    }  # fmt: skip
    assert problem["terms"] == [
        {"name": "posted", "jobs": 1, "gpu_hours": "7.000000", "amount": "14.00"},
        {"name": "running", "jobs": 1, "gpu_hours": "1.000000", "amount": "2.10"},
        {"name": "pending", "jobs": 0, "gpu_hours": "0.000000", "amount": "0.00"},
        {"name": "new_job", "jobs": 1, "gpu_hours": "1.000000", "amount": "2.10"},
    ]
    assert problem["projected"]["gpu_hours"] == "9.000000"
    assert problem["projected"]["fraction_of_budget"] == "0.9000"
    assert problem["refusal_threshold"] == "0.9"
    assert problem["exceeded"] == ["gpu_hours"]
    assert "time limit" in problem["detail"] and "raise the budget" in problem["detail"]

    # One minute less stays below 90 %; the accepted job then counts as pending.
    accepted = gateway_client.post("/v1/jobs", json=gpu_job(59), headers=alice)
    assert accepted.status_code == 202, accepted.text
    again = gateway_client.post("/v1/jobs", json=gpu_job(1), headers=alice)
    assert again.status_code == 402
    assert again.json()["terms"][2] == {
        "name": "pending",
        "jobs": 1,
        "gpu_hours": "0.983333",
        "amount": "2.07",
    }
    # A job without GPUs is not judged on GPU-hours (and there is no money budget).
    assert gateway_client.post("/v1/jobs", json=job_body(), headers=alice).status_code == 202

    standing = gateway_client.get(
        f"/v1/tenants/{tenant}/budget", headers=headers("boss", tenant, "tenant-admin")
    )
    assert standing.status_code == 200, standing.text
    view = standing.json()
    assert [term["name"] for term in view["terms"]] == ["posted", "running", "pending"]
    assert view["terms"][2]["jobs"] == 2
    # 7 h + 1 h + 59 min (the cpu job adds no GPU-hours): a new GPU job of 1 minute would reach 90 %.
    assert view["projected"]["gpu_hours"] == "8.983333"
    assert view["projected"]["fractions"] == {"gpu_hours": "0.8983"}
    assert view["exceeded"] == []


def test_a_money_budget_refuses_cpu_jobs_too(
    gateway_client: Client,
    headers: Headers,
    tenant: str,
    session_factory: sessionmaker[Session],
    mid_month: int,
) -> None:
    gateway_client.post("/v1/rate-cards", json=CARD, headers=headers("root-admin", None, "admin"))
    seed_use(session_factory, tenant, mid_month)  # 14 EUR posted + 2.10 EUR running (to its limit)
    put = gateway_client.put(
        f"/v1/tenants/{tenant}/budget", json={"amount": "20.00"}, headers=headers("root-admin", None, "admin")
    )
    assert put.status_code == 200, put.text
    alice = headers("alice", tenant, "user")
    # 16.10 + 0.10 per cpu-hour x 19 h = 18 EUR = 90 % of 20: refused; 18 h (17.90 EUR) passes.
    refused = gateway_client.post("/v1/jobs", json=job_body(time_limit="19:00:00"), headers=alice)
    assert refused.status_code == 402, refused.text
    assert refused.json()["exceeded"] == ["amount"]
    assert refused.json()["projected"]["amount"] == "18.00"
    assert (
        gateway_client.post("/v1/jobs", json=job_body(time_limit="18:00:00"), headers=alice).status_code
        == 202
    )


def test_a_tenant_without_a_budget_is_not_judged(
    gateway_client: Client, headers: Headers, tenant: str
) -> None:
    response = gateway_client.post("/v1/jobs", json=gpu_job(600), headers=headers("alice", tenant, "user"))
    assert response.status_code == 202, response.text
    view = gateway_client.get(f"/v1/tenants/{tenant}/budget", headers=headers("fin", None, "finance")).json()
    assert (view["budget"], view["terms"], view["projected"]) == (None, [], None)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_backstop_locks_and_unlocks_the_slurm_account(
    gateway_client: Client,
    headers: Headers,
    tenant: str,
    session_factory: sessionmaker[Session],
    mid_month: int,
) -> None:
    admin = headers("root-admin", None, "admin")
    gateway_client.post("/v1/rate-cards", json=CARD, headers=admin)
    seed_use(session_factory, tenant, mid_month)  # 7 h 1 min of GPU use so far, 14.03 EUR
    spent = gateway_client.put(f"/v1/tenants/{tenant}/budget", json={"gpu_hours": "7"}, headers=admin)
    assert spent.json()["slurm_backstop"] == {"applied": True}
    assert "gres/gpu=0" in account_limits(tenant)[1]
    money = gateway_client.put(f"/v1/tenants/{tenant}/budget", json={"amount": "10.00"}, headers=admin)
    assert money.json()["slurm_backstop"] == {"applied": True}
    submit, run_mins = account_limits(tenant)
    assert submit == "0"
    assert "cpu=0" in run_mins and "gres/gpu=0" not in run_mins
    cleared = gateway_client.put(f"/v1/tenants/{tenant}/budget", json={}, headers=admin)
    assert cleared.json()["slurm_backstop"] == {"applied": True}
    assert account_limits(tenant) == ("", "")


def test_budget_periods_and_validation(gateway_client: Client, headers: Headers, tenant: str) -> None:
    admin = headers("root-admin", None, "admin")
    now = datetime.now(UTC)
    this_month = f"{now.year:04d}-{now.month:02d}"
    later = f"{now.year + 1:04d}-{now.month:02d}"
    put = gateway_client.put(
        f"/v1/tenants/{tenant}/budget", json={"gpu_hours": "1000", "amount": "5000"}, headers=admin
    )
    assert put.status_code == 200, put.text
    assert put.json()["saved"] == {
        "from_period": this_month,
        "gpu_hours": "1000.000000",
        "amount": "5000.00",
        "currency": None,
    }
    future = gateway_client.put(
        f"/v1/tenants/{tenant}/budget",
        json={"gpu_hours": None, "amount": "1.50", "from_period": later},
        headers=admin,
    )
    assert future.status_code == 200, future.text
    body = future.json()
    assert body["saved"]["from_period"] == later
    assert body["budget"]["from_period"] == this_month  # still the budget in force now
    assert body["budget"]["gpu_hours"] == "1000.000000"
    for bad, field in (
        ({"gpu_hours": "-1"}, "gpu_hours"),
        ({"gpu_hours": "1e3"}, "gpu_hours"),
        ({"amount": "1.0000001"}, "amount"),
        ({"amount": "100.005"}, "amount"),
        ({"gpu_hours": "0.0001"}, "gpu_hours"),
        ({"amount": "12", "from_period": "2026-13"}, "from_period"),
    ):
        response = gateway_client.put(f"/v1/tenants/{tenant}/budget", json=bad, headers=admin)
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["errors"][0]["field"] == field
    unknown = gateway_client.put(f"/v1/tenants/{tenant}/budget", json={"gpu": "1"}, headers=admin)
    assert unknown.status_code == 400


def test_budget_access(gateway_client: Client, headers: Headers, tenant: str) -> None:
    url = f"/v1/tenants/{tenant}/budget"
    assert (
        gateway_client.put(url, json={"gpu_hours": "1"}, headers=headers("fin", None, "finance")).status_code
        == 403
    )
    assert (
        gateway_client.put(
            url, json={"gpu_hours": "1"}, headers=headers("boss", tenant, "tenant-admin")
        ).status_code
        == 403
    )
    assert gateway_client.get(url, headers=headers("alice", tenant, "user")).status_code == 403
    assert gateway_client.get(url, headers=headers("x", "other_tenant", "tenant-admin")).status_code == 404
    assert gateway_client.get(url, headers=headers("boss", tenant, "tenant-admin")).status_code == 200
    missing = "/v1/tenants/sgw_budget_missing/budget"
    assert (
        gateway_client.put(missing, json={}, headers=headers("root-admin", None, "admin")).status_code == 404
    )


# --- rate cards ------------------------------------------------------------------------


def test_rate_cards_are_append_only_and_listed_newest_first(gateway_client: Client, headers: Headers) -> None:
    finance = headers("fin", None, "finance")
    first = gateway_client.post(
        "/v1/rate-cards", json={**CARD, "qos_multipliers": {"high": "1.5"}}, headers=finance
    )
    assert first.status_code == 201, first.text
    card = first.json()
    assert card["effective_from"] == "2020-01-01T00:00:00Z"
    assert card["prices"]["*"] == {"gpu": "2.00", "cpu": "0.10", "mem": "0", "node": "0"}
    assert card["qos_multipliers"] == {"high": "1.5"}
    assert card["created_by"] == "fin"
    assert "slurm-gateway reconcile --since 2020-01-01T00:00:00Z" in card["reprice_hint"]
    duplicate = gateway_client.post(
        "/v1/rate-cards", json={**CARD, "effective_from": 1_577_836_800}, headers=finance
    )
    assert duplicate.status_code == 409
    future = gateway_client.post(
        "/v1/rate-cards", json={**CARD, "effective_from": "2999-01-01T00:00:00+00:00"}, headers=finance
    )
    assert future.status_code == 201, future.text
    assert "reprice_hint" not in future.json()
    listing = gateway_client.get("/v1/rate-cards", headers=headers("boss", "t", "tenant-admin"))
    assert listing.status_code == 200
    assert [c["effective_from"] for c in listing.json()["rate_cards"]] == [
        "2999-01-01T00:00:00Z",
        "2020-01-01T00:00:00Z",
    ]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"prices": {"gpu": {"gpu": "-1"}}}, "prices.gpu.gpu"),
        ({"prices": {"gpu": {"gpu": 2.5}}}, "prices.gpu.gpu"),
        ({"prices": {"gpu": {"disk": "1"}}}, "prices.gpu.disk"),
        ({"currency": "euro"}, "currency"),
        ({"qos_multipliers": {"high": "0"}}, "qos_multipliers.high"),
        ({"effective_from": "2026-11-01 00:00"}, "effective_from"),
        ({"effective_from": "next week"}, "effective_from"),
        ({"effective_from": "2026-11-01T00:00:00.999Z"}, "effective_from"),
        ({"effective_from": "2026-W49-1T00:00:00Z"}, "effective_from"),
        ({"prices": {}}, "prices"),
    ],
)
def test_bad_rate_cards_name_the_field(
    gateway_client: Client, headers: Headers, change: dict[str, object], field: str
) -> None:
    response = gateway_client.post(
        "/v1/rate-cards", json={**CARD, **change}, headers=headers("fin", None, "finance")
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field


def test_rate_card_access(gateway_client: Client, headers: Headers) -> None:
    assert (
        gateway_client.post(
            "/v1/rate-cards", json=CARD, headers=headers("boss", "t", "tenant-admin")
        ).status_code
        == 403
    )
    assert gateway_client.get("/v1/rate-cards", headers=headers("alice", "t", "user")).status_code == 403


def test_every_rate_card_keeps_the_ledgers_currency(gateway_client: Client, headers: Headers) -> None:
    finance = headers("fin", None, "finance")
    assert gateway_client.post("/v1/rate-cards", json=CARD, headers=finance).status_code == 201
    other = gateway_client.post(
        "/v1/rate-cards",
        json={**CARD, "currency": "USD", "effective_from": "2021-01-01T00:00:00Z"},
        headers=finance,
    )
    assert other.status_code == 422, other.text
    assert other.json()["errors"][0]["field"] == "currency"
    assert CARD["currency"] in other.json()["errors"][0]["message"]
