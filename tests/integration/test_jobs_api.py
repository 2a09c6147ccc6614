"""The jobs API end to end: real app, real database, real Slurm cluster (no fakes).

Tests that need jobs to reach Slurm run the app's own submitter and reconciler (lifespan
workers, fast intervals) on SQLite; database-only behaviour (validation, idempotency, listing)
runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import func, select

from gateway.app import create_app
from gateway.config import GatewayConfig, WorkerConfig
from gateway.database import create_database_engine
from gateway.storage_models import Job
from tests.integration.gateway_fixtures import (
    TokenFactory,
    bearer_headers,
    gateway_client,
    gateway_config,
    migrated_database,
    token_for,
)
from tests.integration.job_api_helpers import (
    TENANT_A,
    create_tenant,
    idle_test_accounts,
    job_body,
    slurm_jobs_for,
    wait_for_job,
)
from tests.integration.slurm_cluster import queue_state, wait_for_state

__all__ = ["gateway_client", "gateway_config", "idle_test_accounts", "migrated_database", "token_for"]

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

FAST_WORKERS = WorkerConfig(
    enabled=True, submit_interval_s=0.2, poll_interval_s=0.5, max_backoff_s=2, submit_lease_s=10
)
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
# The whole lifecycle through each Slurm driver: Slurm's CLI and slurmrestd.
BOTH_DRIVERS = pytest.mark.parametrize("slurm_driver", ["cli", "rest"])


@pytest.fixture
def slurm_driver() -> str:
    """The Slurm driver the app uses; BOTH_DRIVERS overrides it."""
    return "cli"


@pytest.fixture
def working_client(
    gateway_config: GatewayConfig, migrated_database: str, slurm_driver: str
) -> Iterator[TestClient[Litestar]]:
    """The app with its submitter and reconciler running at test speed."""
    slurm = msgspec.structs.replace(gateway_config.slurm, driver=slurm_driver)
    config = msgspec.structs.replace(gateway_config, workers=FAST_WORKERS, slurm=slurm)
    with TestClient(create_app(config)) as client:
        yield client


@pytest.fixture
def alice(token_for: TokenFactory) -> str:
    return token_for("alice", TENANT_A, ["user"])


def tenant_with_alice(client: TestClient[Litestar], token_for: TokenFactory) -> None:
    create_tenant(client, token_for("sgw-jobs-admin", None, ["admin"]), TENANT_A, {"alice": "alice"})


def job_rows(config: GatewayConfig) -> int:
    engine = create_database_engine(config.database.url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(Job)).scalar_one())
    finally:
        engine.dispose()


# --- jobs that reach Slurm ----------------------------------------------------------


@SQLITE_ONLY
@BOTH_DRIVERS
def test_a_job_runs_as_the_member_under_the_tenant_account(
    working_client: TestClient[Litestar], token_for: TokenFactory, alice: str
) -> None:
    tenant_with_alice(working_client, token_for)
    response = working_client.post(
        "/v1/jobs",
        json=job_body(script="echo hello from $(id -un)\n", command=None, labels={"suite": "jobs-api"}),
        headers=bearer_headers(alice),
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["state"] == "accepted"
    assert response.headers["location"] == f"/v1/jobs/{accepted['id']}"
    assert accepted["spec"]["qos"] == "normal"

    seen: list[str] = ["accepted"]
    done = wait_for_job(
        working_client, alice, accepted["id"], lambda view: view["state"] == "completed", seen_states=seen
    )
    assert done["exit_code"] == 0
    assert done["submitted_at"] and done["started_at"] and done["ended_at"]
    assert seen[0] == "accepted" and seen[-1] == "completed"
    assert not set(seen) - {"accepted", "submitting", "pending", "running", "completing", "completed"}
    record = wait_for_state(done["slurm_job_id"])
    assert (record["User"], record["Account"]) == ("alice", TENANT_A)
    assert slurm_jobs_for(accepted["id"]) == {done["slurm_job_id"]}


@SQLITE_ONLY
@BOTH_DRIVERS
def test_cancelling_a_running_job_cancels_it_in_slurm(
    working_client: TestClient[Litestar], token_for: TokenFactory, alice: str
) -> None:
    tenant_with_alice(working_client, token_for)
    job_id = working_client.post(
        "/v1/jobs", json=job_body(command=["sleep", "300"], time_limit="10"), headers=bearer_headers(alice)
    ).json()["id"]
    in_slurm = wait_for_job(
        working_client, alice, job_id, lambda view: view["state"] in ("pending", "running")
    )

    response = working_client.delete(f"/v1/jobs/{job_id}", headers=bearer_headers(alice))
    assert response.status_code == 202
    assert response.json()["desired_state"] == "cancel"
    cancelled = wait_for_job(working_client, alice, job_id, lambda view: view["state"] == "cancelled")
    assert cancelled["ended_at"]
    assert queue_state(in_slurm["slurm_job_id"]) in ("", "CANCELLED")
    again = working_client.delete(f"/v1/jobs/{job_id}", headers=bearer_headers(alice))
    assert (again.status_code, again.json()["state"]) == (202, "cancelled")


@SQLITE_ONLY
def test_a_job_slurm_refuses_ends_submit_failed_with_the_reason(
    working_client: TestClient[Litestar], token_for: TokenFactory, alice: str
) -> None:
    tenant_with_alice(working_client, token_for)
    # 16 CPUs per task on 8-CPU nodes: admission cannot know, Slurm refuses it.
    job_id = working_client.post(
        "/v1/jobs", json=job_body(cpus_per_task=16), headers=bearer_headers(alice)
    ).json()["id"]
    failed = wait_for_job(
        working_client, alice, job_id, lambda view: view["state"] not in ("accepted", "submitting")
    )
    assert failed["state"] == "submit_failed"
    assert failed["state_reason"]
    assert failed["slurm_job_id"] is None


@SQLITE_ONLY
def test_unreachable_slurm_keeps_the_job_and_the_api_answering(
    gateway_client: TestClient[Litestar],
    gateway_config: GatewayConfig,
    token_for: TokenFactory,
    alice: str,
    tmp_path: Path,
) -> None:
    tenant_with_alice(gateway_client, token_for)
    # A bin_dir without Slurm's commands: every call fails as "command not found".
    no_slurm = tmp_path / "no-slurm-bin"
    no_slurm.mkdir()
    broken = msgspec.structs.replace(
        gateway_config,
        workers=FAST_WORKERS,
        slurm=msgspec.structs.replace(gateway_config.slurm, bin_dir=str(no_slurm)),
    )
    with TestClient(create_app(broken)) as unreachable:
        job_id = unreachable.post("/v1/jobs", json=job_body(), headers=bearer_headers(alice)).json()["id"]
        waiting = wait_for_job(
            unreachable, alice, job_id, lambda view: "retry" in (view["state_reason"] or ""), timeout_s=10
        )
        assert (waiting["state"], waiting["slurm_job_id"]) == ("accepted", None)
        assert unreachable.get("/v1/jobs", headers=bearer_headers(alice)).status_code == 200

    config = msgspec.structs.replace(gateway_config, workers=FAST_WORKERS)
    with TestClient(create_app(config)) as working:
        view = wait_for_job(working, alice, job_id, lambda view: view["slurm_job_id"] is not None)
    assert slurm_jobs_for(job_id) == {view["slurm_job_id"]}


def test_cancelling_an_accepted_job_never_reaches_slurm(
    gateway_client: TestClient[Litestar], gateway_config: GatewayConfig, token_for: TokenFactory, alice: str
) -> None:
    tenant_with_alice(gateway_client, token_for)
    job_id = gateway_client.post("/v1/jobs", json=job_body(), headers=bearer_headers(alice)).json()["id"]
    response = gateway_client.delete(f"/v1/jobs/{job_id}", headers=bearer_headers(alice))
    assert response.status_code == 202
    assert response.json()["state"] == "cancelled"

    # Now start the workers on the same database: nothing is left for them to submit.
    config = msgspec.structs.replace(gateway_config, workers=FAST_WORKERS)
    with TestClient(create_app(config)) as working:
        view = working.get(f"/v1/jobs/{job_id}", headers=bearer_headers(alice)).json()
    assert (view["state"], view["slurm_job_id"]) == ("cancelled", None)
    assert slurm_jobs_for(job_id) == set()


# --- idempotency ----------------------------------------------------------------------


def test_idempotency_key_returns_the_same_job_or_conflicts(
    gateway_client: TestClient[Litestar], token_for: TokenFactory, alice: str
) -> None:
    tenant_with_alice(gateway_client, token_for)
    headers = {**bearer_headers(alice), "Idempotency-Key": "sgw-jobs-key-1"}
    first = gateway_client.post("/v1/jobs", json=job_body(labels={"a": "1"}), headers=headers)
    # Same canonical body: key order and spelled-out defaults do not matter.
    again = gateway_client.post("/v1/jobs", json={"nodes": 1, **job_body(labels={"a": "1"})}, headers=headers)
    other = gateway_client.post("/v1/jobs", json=job_body(name="different"), headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["id"] == again.json()["id"]
    assert other.status_code == 409
    assert other.headers["content-type"].startswith("application/problem+json")
    listed = gateway_client.get("/v1/jobs", headers=bearer_headers(alice)).json()["items"]
    assert [job["id"] for job in listed] == [first.json()["id"]]


# --- listing ------------------------------------------------------------------------------


def test_list_filters_and_cursor_pagination(
    gateway_client: TestClient[Litestar], token_for: TokenFactory, alice: str
) -> None:
    tenant_with_alice(gateway_client, token_for)
    headers = bearer_headers(alice)
    created = []
    for index in range(5):
        labels = {"team": "ml" if index < 3 else "hpc", "run": str(index)}
        body = job_body(name=f"batch-{index % 2}", labels=labels)
        created.append(gateway_client.post("/v1/jobs", json=body, headers=headers).json()["id"])
    gateway_client.delete(f"/v1/jobs/{created[0]}", headers=headers)

    pages: list[list[str]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = gateway_client.get("/v1/jobs", params=params, headers=headers).json()
        pages.append([job["id"] for job in page["items"]])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [job_id for page in pages for job_id in page] == list(reversed(created))

    def ids(**params: Any) -> set[str]:
        response = gateway_client.get("/v1/jobs", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return {job["id"] for job in response.json()["items"]}

    assert ids(label="team=ml") == set(created[:3])
    assert ids(label=["team=ml", "run=1"]) == {created[1]}
    assert ids(name="batch-1") == {created[1], created[3]}
    assert ids(state="cancelled") == {created[0]}
    assert ids(state="accepted,cancelled") == set(created)
    assert ids(state="running") == set()

    for params, field in [
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"state": "sleeping"}, "state"),
        ({"limit": 0}, "limit"),
        ({"limit": 1000}, "limit"),
        ({"label": "no-equals"}, "label"),
    ]:
        response = gateway_client.get("/v1/jobs", params=params, headers=headers)
        assert 400 <= response.status_code < 500, (params, response.text)
        assert field in response.text, (params, response.text)


# --- bad input ------------------------------------------------------------------------------

BAD_BODIES: list[tuple[Any, str]] = [
    (job_body(colour="red"), "colour"),
    ({"command": ["true"]}, "name"),
    (job_body(name=7), "name"),
    (job_body(nodes=-1), "nodes"),
    (job_body(nodes=0), "nodes"),
    (job_body(nodes=10**12), "nodes"),
    (job_body(nodes="2"), "nodes"),
    (job_body(cpus_per_task=0), "cpus_per_task"),
    (job_body(tasks_per_node=-3), "tasks_per_node"),
    (job_body(gpus_per_node=1000), "gpus_per_node"),
    (job_body(partition="debug"), "partition"),
    (job_body(partition="nonexistent"), "partition"),
    (job_body(qos="high"), "qos"),
    (job_body(runtime="fortran"), "runtime"),
    (job_body(script="echo both"), "command"),
    (job_body(command=None), "command"),
    (job_body(memory="lots"), "memory"),
    (job_body(gpu_type="h100"), "gpu_type"),
    (job_body(time_limit="soon"), "time_limit"),
    (job_body(time_limit="1:xx"), "time_limit"),
    (job_body(time_limit="-5"), "time_limit"),
    (job_body(time_limit="UNLIMITED"), "time_limit"),
    (job_body(time_limit="0"), "time_limit"),
    (job_body(time_limit="9999-00:00:00"), "time_limit"),
    (job_body(env={"LD_PRELOAD": "/evil.so"}), "env"),
    (job_body(env={"SLURM_JOB_ID": "1"}), "env"),
    (job_body(env={"BAD-NAME": "x"}), "env"),
    (job_body(env={"OK": "line\nbreak"}), "env.OK"),
    (job_body(name="evil\n#SBATCH --uid=0"), "name"),
    (job_body(command=["echo", "a\x00b"]), "command[1]"),
    (job_body(command=["echo", "\x1b[31m"]), "command[1]"),
    (job_body(constraints=["ib&rm -rf"]), "constraints[0]"),
    (job_body(labels={"Bad Key": "x"}), "labels"),
    (job_body(array="0-99999999"), "array"),
    (job_body(array="1;2"), "array"),
    ([1, 2], "body"),
]


@SQLITE_ONLY
def test_bad_input_is_a_problem_naming_the_field_and_stores_nothing(
    gateway_client: TestClient[Litestar], gateway_config: GatewayConfig, token_for: TokenFactory, alice: str
) -> None:
    tenant_with_alice(gateway_client, token_for)
    mismatches = []
    for body, field in BAD_BODIES:
        response = gateway_client.post("/v1/jobs", json=body, headers=bearer_headers(alice))
        problem = response.json()
        fields = [error["field"] for error in problem.get("errors", [])]
        if (
            not 400 <= response.status_code < 500
            or not response.headers["content-type"].startswith("application/problem+json")
            or not any(named.startswith(field) for named in fields)
        ):
            mismatches.append((body, field, response.status_code, problem))
    malformed = gateway_client.post(
        "/v1/jobs",
        content=b"{not json",
        headers={**bearer_headers(alice), "Content-Type": "application/json"},
    )
    assert malformed.status_code in (400, 422)
    assert mismatches == []
    assert job_rows(gateway_config) == 0


@SQLITE_ONLY
def test_every_slurm_time_limit_format_is_accepted(
    gateway_client: TestClient[Litestar], token_for: TokenFactory, alice: str
) -> None:
    tenant_with_alice(gateway_client, token_for)
    for time_limit in ("30", "5:30", "1:00:00", "0-2", "1-00", "1-02:03", "1-00:00:01"):
        response = gateway_client.post(
            "/v1/jobs", json=job_body(time_limit=time_limit), headers=bearer_headers(alice)
        )
        assert response.status_code == 202, (time_limit, response.text)
        assert response.json()["spec"]["time_limit"] == time_limit


@SQLITE_ONLY
def test_only_members_of_the_token_tenant_may_submit(
    gateway_client: TestClient[Litestar], gateway_config: GatewayConfig, token_for: TokenFactory
) -> None:
    tenant_with_alice(gateway_client, token_for)
    outsider = token_for("mallory", TENANT_A, ["user"])
    response = gateway_client.post("/v1/jobs", json=job_body(), headers=bearer_headers(outsider))
    assert response.status_code == 403
    assert "member" in response.json()["detail"]
    unauthenticated = gateway_client.post("/v1/jobs", json=job_body())
    assert unauthenticated.status_code == 401
    assert job_rows(gateway_config) == 0


# --- partitions ---------------------------------------------------------------------------------


@SQLITE_ONLY
def test_partitions_show_capacity_and_a_start_estimate(
    gateway_client: TestClient[Litestar], token_for: TokenFactory, alice: str
) -> None:
    tenant_with_alice(gateway_client, token_for)
    listing = gateway_client.get("/v1/partitions", headers=bearer_headers(alice))
    assert listing.status_code == 200, listing.text
    by_name = {item["name"]: item for item in listing.json()["items"]}
    assert by_name["gpu"]["total_nodes"] == 4 and by_name["gpu"]["total_gpus"] == 16
    assert by_name["cpu"]["total_gpus"] == 0
    assert "estimate" not in listing.json()

    shaped = gateway_client.get(
        "/v1/partitions",
        params={"partition": "gpu", "nodes": 1, "gpus_per_node": 1, "time_limit": "10"},
        headers=bearer_headers(alice),
    )
    assert shaped.status_code == 200, shaped.text
    estimate = shaped.json()["estimate"]
    shape = (estimate["partition"], estimate["gpus_per_node"], estimate["time_limit_minutes"])
    assert shape == ("gpu", 1, 10)
    assert estimate["expected_start"] is not None
    refused = gateway_client.get(
        "/v1/partitions", params={"partition": "debug", "nodes": 1}, headers=bearer_headers(alice)
    )
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "partition"
