"""Who sees which jobs, on every jobs endpoint (GET one, list, DELETE).

Rules: a `user` sees only their own jobs in the token's tenant, a `tenant-admin` every job of
the tenant, an `admin` every job. Anything outside that is 404 (never 403, never data).
"""

from __future__ import annotations

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from tests.integration.gateway_fixtures import (
    TokenFactory,
    bearer_headers,
    gateway_client,
    gateway_config,
    migrated_database,
    token_for,
)
from tests.integration.job_api_helpers import TENANT_A, TENANT_B, create_tenant, idle_test_accounts, job_body

__all__ = ["gateway_client", "gateway_config", "idle_test_accounts", "migrated_database", "token_for"]

pytestmark = [pytest.mark.integration, pytest.mark.slurm]


# The visibility rules are plain SQL predicates, identical on both databases; one is enough.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_jobs_are_visible_only_within_the_rules(
    gateway_client: TestClient[Litestar], token_for: TokenFactory
) -> None:
    admin = token_for("sgw-jobs-admin", None, ["admin"])
    create_tenant(gateway_client, admin, TENANT_A, {"alice": "alice", "carol": "carol"})
    create_tenant(gateway_client, admin, TENANT_B, {"bob": "bob"})
    alice = token_for("alice", TENANT_A, ["user"])
    carol = token_for("carol", TENANT_A, ["user"])
    bob = token_for("bob", TENANT_B, ["user"])
    tenant_admin_a = token_for("ta", TENANT_A, ["tenant-admin"])
    tenant_admin_b = token_for("tb", TENANT_B, ["tenant-admin"])

    alices_job = gateway_client.post("/v1/jobs", json=job_body(), headers=bearer_headers(alice)).json()["id"]
    bobs_job = gateway_client.post("/v1/jobs", json=job_body(), headers=bearer_headers(bob)).json()["id"]

    def can_read(token: str, job_id: str) -> bool:
        response = gateway_client.get(f"/v1/jobs/{job_id}", headers=bearer_headers(token))
        assert response.status_code in (200, 404), response.text
        if response.status_code == 404:
            assert '"owner"' not in response.text and '"spec"' not in response.text
        return response.status_code == 200

    def listed(token: str) -> set[str]:
        response = gateway_client.get("/v1/jobs", headers=bearer_headers(token))
        assert response.status_code == 200, response.text
        return {job["id"] for job in response.json()["items"]}

    assert (can_read(alice, alices_job), can_read(alice, bobs_job)) == (True, False)
    assert (can_read(bob, bobs_job), can_read(bob, alices_job)) == (True, False)
    assert can_read(carol, alices_job) is False
    assert (can_read(tenant_admin_a, alices_job), can_read(tenant_admin_a, bobs_job)) == (True, False)
    assert can_read(tenant_admin_b, alices_job) is False
    assert (can_read(admin, alices_job), can_read(admin, bobs_job)) == (True, True)

    assert listed(alice) == {alices_job}
    assert listed(bob) == {bobs_job}
    assert listed(carol) == set()
    assert listed(tenant_admin_a) == {alices_job}
    assert listed(admin) == {alices_job, bobs_job}
    # A filter or cursor cannot widen the view.
    assert gateway_client.get(
        "/v1/jobs", params={"state": "accepted", "limit": 200}, headers=bearer_headers(bob)
    ).json()["items"] == [gateway_client.get(f"/v1/jobs/{bobs_job}", headers=bearer_headers(bob)).json()]

    for token in (bob, carol, tenant_admin_b):
        response = gateway_client.delete(f"/v1/jobs/{alices_job}", headers=bearer_headers(token))
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("application/problem+json")
    still = gateway_client.get(f"/v1/jobs/{alices_job}", headers=bearer_headers(alice)).json()
    assert (still["state"], still["desired_state"]) == ("accepted", "run")

    cancelled = gateway_client.delete(f"/v1/jobs/{alices_job}", headers=bearer_headers(tenant_admin_a))
    assert (cancelled.status_code, cancelled.json()["state"]) == (202, "cancelled")
