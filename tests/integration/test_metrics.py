"""GET /metrics on the real app: HTTP series, jobs by state from the database, shared registry."""

from datetime import UTC, datetime

from litestar import Litestar
from litestar.testing import TestClient

from gateway.storage_models import Job, Tenant
from tests.integration.gateway_fixtures import gateway_client, gateway_config, migrated_database

__all__ = ["gateway_client", "gateway_config", "migrated_database"]


def scrape(client: TestClient[Litestar]) -> list[str]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text.splitlines()


def add_jobs(client: TestClient[Litestar], states: list[str]) -> None:
    now = datetime.now(UTC)
    with client.app.state.session_factory() as session:
        session.add(
            Tenant(
                id="sgw_gw_metrics",
                slurm_account="sgw_gw_metrics",
                allowed_qos=["normal"],
                allowed_partitions=["cpu"],
                created_at=now,
                updated_at=now,
            )
        )
        # Job has no relationship to Tenant, so the unit of work would not order the inserts.
        session.flush()
        for index, state in enumerate(states):
            session.add(
                Job(
                    id=f"job{index}",
                    tenant_id="sgw_gw_metrics",
                    owner="alice",
                    unix_user="alice",
                    name="n",
                    spec={},
                    spec_digest="0" * 64,
                    desired_state="run",
                    state=state,
                    submit_attempts=0,
                    created_at=now,
                    updated_at=now,
                )
            )
        session.commit()


def test_http_requests_are_counted_by_route_template_and_status(gateway_client: TestClient[Litestar]) -> None:
    gateway_client.get("/healthz")
    gateway_client.get("/healthz")
    gateway_client.get("/v1/tenants/nope")  # 401 without a token
    lines = scrape(gateway_client)
    assert 'slurm_gateway_http_requests_total{method="GET",route="/healthz",status="200"} 2' in lines
    assert (
        'slurm_gateway_http_requests_total{method="GET",route="/v1/tenants/{tenant_id}",status="401"} 1'
        in lines
    )
    assert 'slurm_gateway_http_request_duration_seconds_count{method="GET",route="/healthz"} 2' in lines
    assert "# TYPE slurm_gateway_http_request_duration_seconds histogram" in lines


def test_jobs_by_state_are_read_at_scrape_time(gateway_client: TestClient[Litestar]) -> None:
    assert not any(line.startswith("slurm_gateway_jobs{") for line in scrape(gateway_client))
    add_jobs(gateway_client, ["running", "running", "pending"])
    lines = scrape(gateway_client)
    assert 'slurm_gateway_jobs{state="running"} 2' in lines
    assert 'slurm_gateway_jobs{state="pending"} 1' in lines


def test_other_components_register_their_own_metrics(gateway_client: TestClient[Litestar]) -> None:
    submissions = gateway_client.app.state.metrics.counter(
        "slurm_gateway_submitter_submissions_total", "Jobs handed to sbatch.", ("outcome",)
    )
    submissions.inc(outcome="submitted")
    assert 'slurm_gateway_submitter_submissions_total{outcome="submitted"} 1' in scrape(gateway_client)
