"""GET /v1/jobs/{id} answers pollers from a per-process cache: a cancel through the same process
shows at once, one through another process (same database) within server.job_status_cache_s,
and a cached view never reaches a caller who may not see the job."""

from __future__ import annotations

import time

import msgspec
import pytest
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.config import GatewayConfig, ServerConfig
from tests.integration.gateway_fixtures import (
    TokenFactory,
    bearer_headers,
    gateway_config,
    migrated_database,
    token_for,
)
from tests.integration.job_api_helpers import TENANT_A, TENANT_B, create_tenant, idle_test_accounts, job_body

__all__ = ["gateway_config", "idle_test_accounts", "migrated_database", "token_for"]

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

CACHE_S = 0.5


def with_cache(config: GatewayConfig) -> GatewayConfig:
    return msgspec.structs.replace(config, server=ServerConfig(job_status_cache_s=CACHE_S))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_cancel_through_this_process_shows_at_once_and_cache_keeps_isolation(
    gateway_config: GatewayConfig, migrated_database: str, token_for: TokenFactory
) -> None:
    with TestClient(create_app(with_cache(gateway_config))) as client:
        admin = token_for("sgw-jobs-admin", None, ["admin"])
        create_tenant(client, admin, TENANT_A, {"alice": "alice", "carol": "carol"})
        create_tenant(client, admin, TENANT_B, {"bob": "bob"})
        alice = bearer_headers(token_for("alice", TENANT_A, ["user"]))
        job_id = client.post("/v1/jobs", json=job_body(), headers=alice).json()["id"]
        assert client.get(f"/v1/jobs/{job_id}", headers=alice).json()["desired_state"] == "run"
        # The view is cached now; callers outside the job's view still get 404 from the database.
        for outsider in (token_for("bob", TENANT_B, ["user"]), token_for("carol", TENANT_A, ["user"])):
            response = client.get(f"/v1/jobs/{job_id}", headers=bearer_headers(outsider))
            assert response.status_code == 404
            assert '"owner"' not in response.text
        assert client.delete(f"/v1/jobs/{job_id}", headers=alice).status_code == 202
        after = client.get(f"/v1/jobs/{job_id}", headers=alice).json()
        assert (after["desired_state"], after["state"]) == ("cancel", "cancelled")


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_cancel_through_another_process_shows_within_the_cache_time(
    gateway_config: GatewayConfig, migrated_database: str, token_for: TokenFactory
) -> None:
    config = with_cache(gateway_config)
    with TestClient(create_app(config)) as reader, TestClient(create_app(config)) as canceller:
        admin = token_for("sgw-jobs-admin", None, ["admin"])
        create_tenant(reader, admin, TENANT_A, {"alice": "alice"})
        alice = bearer_headers(token_for("alice", TENANT_A, ["user"]))
        job_id = reader.post("/v1/jobs", json=job_body(), headers=alice).json()["id"]
        assert reader.get(f"/v1/jobs/{job_id}", headers=alice).json()["desired_state"] == "run"
        assert canceller.delete(f"/v1/jobs/{job_id}", headers=alice).status_code == 202
        cancelled_at = time.monotonic()
        while reader.get(f"/v1/jobs/{job_id}", headers=alice).json()["desired_state"] != "cancel":
            assert time.monotonic() - cancelled_at <= CACHE_S + 0.2, "stale beyond job_status_cache_s"
            time.sleep(0.02)
