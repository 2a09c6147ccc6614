"""Helpers for the jobs API tests: tenants through the real API, job waits, Slurm job counts.

Tenants are created the way an operator would (POST /v1/tenants as admin, then PUT members),
which provisions the Slurm account and associations for real. Names carry the `sgw_jobs`
prefix so they never collide with other areas' tests on the shared cluster.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import pytest

from tests.integration.gateway_fixtures import bearer_headers
from tests.integration.slurm_cluster import run_command

TENANT_A = "sgw_jobs_a"
TENANT_B = "sgw_jobs_b"
PARTITIONS = ["cpu", "gpu"]


class HttpClient(Protocol):
    """litestar TestClient or httpx.Client."""

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        """Send one request."""
        ...


def create_tenant(
    client: HttpClient,
    admin_token: str,
    tenant_id: str,
    members: Mapping[str, str],
    *,
    allowed_qos: tuple[str, ...] = ("normal",),
) -> None:
    """Create ``tenant_id`` (account of the same name) and add ``members`` (user -> unix user)."""
    headers = bearer_headers(admin_token)
    response = client.request(
        "POST",
        "/v1/tenants",
        json={
            "id": tenant_id,
            "slurm_account": tenant_id,
            "allowed_qos": list(allowed_qos),
            "default_qos": allowed_qos[0],
            "allowed_partitions": PARTITIONS,
        },
        headers=headers,
    )
    assert response.status_code in (200, 201), response.text
    for user, unix_user in members.items():
        response = client.request(
            "PUT", f"/v1/tenants/{tenant_id}/members/{user}", json={"unix_user": unix_user}, headers=headers
        )
        assert response.status_code in (200, 201), response.text


def job_body(**fields: object) -> dict[str, object]:
    """A small valid JobSpec (a one-minute `true` on cpu) with ``fields`` overriding."""
    return {"name": "sgw-jobs-test", "command": ["true"], "partition": "cpu", "time_limit": "1", **fields}


def wait_for_job(
    client: HttpClient,
    token: str,
    job_id: str,
    done: Callable[[dict[str, Any]], bool],
    *,
    timeout_s: float = 90,
    seen_states: list[str] | None = None,
) -> dict[str, Any]:
    """GET the job until ``done(view)``; records each distinct state in ``seen_states``."""
    deadline = time.monotonic() + timeout_s
    view: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = client.request("GET", f"/v1/jobs/{job_id}", headers=bearer_headers(token))
        assert response.status_code == 200, response.text
        view = response.json()
        if seen_states is not None and (not seen_states or seen_states[-1] != view["state"]):
            seen_states.append(view["state"])
        if done(view):
            return view
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not done in {timeout_s} s; last view {view}")


def slurm_jobs_for(gateway_job_id: str) -> set[str]:
    """Every Slurm job id whose comment names ``gateway_job_id`` (queue and accounting)."""
    comment = f"sgw:{gateway_job_id}"
    queued = run_command(["squeue", "--all", "--states=all", "--noheader", "--format=%i|%k"]).stdout
    accounted = run_command(
        [
            "sacct",
            "--allusers",
            "--allocations",
            "--noheader",
            "--parsable2",
            "--starttime=now-1hours",
            "--format=JobIDRaw,Comment",
        ]
    ).stdout
    found = set()
    for line in (*queued.splitlines(), *accounted.splitlines()):
        job_id, _, job_comment = line.strip().partition("|")
        if job_comment == comment:
            found.add(job_id)
    return found


def drain_accounts(accounts: Sequence[str], timeout_s: float = 30) -> None:
    """Cancel what is left of these (test-owned) accounts' jobs and wait until none is active.

    Tenant provisioning removes associations of users who are not members yet, and Slurm refuses
    that while the association has active jobs; so each test leaves its accounts idle.
    """
    joined = ",".join(accounts)
    # One scancel per account: `scancel --account=a,b` was seen leaving a running job of `a`.
    for account in accounts:
        run_command(["scancel", f"--account={account}"], check=False)
    deadline = time.monotonic() + timeout_s
    active = ""
    while time.monotonic() < deadline:
        active = run_command(["squeue", "--noheader", f"--account={joined}", "--format=%i"]).stdout
        if not active.strip():
            return
        time.sleep(0.2)
    raise AssertionError(f"jobs of {joined} still active after {timeout_s} s: {active.split()}")


@pytest.fixture(autouse=True)
def idle_test_accounts() -> Iterator[None]:
    """Leave the test tenants' Slurm accounts without active jobs (import into a test module)."""
    yield
    drain_accounts([TENANT_A, TENANT_B])
