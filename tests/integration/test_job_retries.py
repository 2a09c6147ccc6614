"""Retries end to end: real app, real database, real Slurm cluster (no fakes).

A retryable exit code is retried automatically and the job completes on attempt 2; any other
exit is not; a failed job retried by hand runs again; retrying a live or completed job is 409.
Every attempt is its own Slurm job with its own comment (``sgw:<id>``, then ``sgw:<id>:a2``), and
a crash between sbatch and recording attempt 2's Slurm id recovers that id without submitting
attempt 2 twice and without mistaking attempt 1's Slurm job for it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import update
from sqlalchemy.orm import sessionmaker

from gateway.app import create_app
from gateway.config import GatewayConfig, WorkerConfig
from gateway.database import create_database_engine
from gateway.job_submitter import JobSubmitter, SubmitterSettings
from gateway.slurm_driver import command_runner_from_config
from gateway.storage_models import Job
from slurm.batch_job import attempt_comment_key
from slurm.cli_driver import CliSlurmDriver
from tests.integration.gateway_fixtures import (
    TokenFactory,
    bearer_headers,
    gateway_client,
    gateway_config,
    migrated_database,
    token_for,
)
from tests.integration.gateway_process import (
    LEASE_S,
    GatewayProcess,
    kill_hard,
    migrated_gateway_process,
    stored_job,
)
from tests.integration.job_api_helpers import (
    HttpClient,
    create_tenant,
    drain_accounts,
    slurm_jobs_for,
    wait_for_job,
)

__all__ = ["gateway_client", "gateway_config", "migrated_database", "token_for"]

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

TENANT = "sgw_retry_a"
OTHER_TENANT = "sgw_retry_b"
FAST_WORKERS = WorkerConfig(
    enabled=True, submit_interval_s=0.2, poll_interval_s=0.5, max_backoff_s=2, submit_lease_s=10
)
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
# Exit 3 on the first run, 0 on any later one (the marker lives in the job's working directory,
# which every attempt shares).
FAILS_ONCE = "if [ -e attempt1 ]; then exit 0; fi\ntouch attempt1\nexit 3\n"
ENDED = ("completed", "failed", "cancelled", "timeout", "node_fail", "out_of_memory", "preempted")


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[GatewayProcess]:
    """A migrated gateway process over SQLite in tmp_path, started by the test as needed."""
    with migrated_gateway_process(tmp_path) as gateway:
        yield gateway


@pytest.fixture(autouse=True)
def idle_retry_accounts() -> Iterator[None]:
    """Leave this module's Slurm accounts without active jobs."""
    yield
    drain_accounts([TENANT, OTHER_TENANT])


@pytest.fixture
def working_client(gateway_config: GatewayConfig, migrated_database: str) -> Iterator[TestClient[Litestar]]:
    """The app with its submitter and reconciler running at test speed."""
    config = msgspec.structs.replace(gateway_config, workers=FAST_WORKERS)
    with TestClient(create_app(config)) as client:
        yield client


def retry_body(script: str, **fields: object) -> dict[str, object]:
    return {"name": "sgw-retry-test", "script": script, "partition": "cpu", "time_limit": "1", **fields}


def submit(client: HttpClient, token: str, body: dict[str, object]) -> str:
    response = client.request("POST", "/v1/jobs", json=body, headers=bearer_headers(token))
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def slurm_jobs_by_attempt(job_id: str, attempts: int) -> dict[int, set[str]]:
    """Slurm jobs per attempt, found by each attempt's own comment."""
    return {n: slurm_jobs_for(attempt_comment_key(job_id, n)) for n in range(1, attempts + 1)}


def history(view: dict[str, Any]) -> list[tuple[int, str, int | None]]:
    return [(entry["attempt"], entry["state"], entry["exit_code"]) for entry in view["attempts"]]


def wait_ended(client: HttpClient, token: str, job_id: str, *, attempt: int = 1) -> dict[str, Any]:
    return wait_for_job(
        client, token, job_id, lambda view: view["attempt"] >= attempt and view["state"] in ENDED
    )


@SQLITE_ONLY
def test_a_retryable_exit_code_is_retried_and_completes_on_attempt_2(
    working_client: TestClient[Litestar], token_for: TokenFactory
) -> None:
    create_tenant(working_client, token_for("sgw-retry-admin", None, ["admin"]), TENANT, {"alice": "alice"})
    alice = token_for("alice", TENANT, ["user"])
    policy = {"max_attempts": 2, "backoff_s": 1, "on_exit_codes": [3]}
    job_id = submit(working_client, alice, retry_body(FAILS_ONCE, retry=policy))

    seen: list[str] = []
    done = wait_for_job(
        working_client,
        alice,
        job_id,
        lambda view: view["attempt"] == 2 and view["state"] in ENDED,
        seen_states=seen,
    )
    assert (done["state"], done["exit_code"], done["max_attempts"]) == ("completed", 0, 2)
    assert history(done) == [(1, "failed", 3), (2, "completed", 0)]
    first, second = done["attempts"]
    assert first["slurm_job_id"] != second["slurm_job_id"] == done["slurm_job_id"]
    assert first["ended_at"] and second["submitted_at"]
    assert slurm_jobs_by_attempt(job_id, 2) == {1: {first["slurm_job_id"]}, 2: {second["slurm_job_id"]}}


@SQLITE_ONLY
def test_an_exit_code_the_policy_does_not_name_is_not_retried(
    working_client: TestClient[Litestar], token_for: TokenFactory
) -> None:
    create_tenant(working_client, token_for("sgw-retry-admin", None, ["admin"]), TENANT, {"alice": "alice"})
    alice = token_for("alice", TENANT, ["user"])
    policy = {"max_attempts": 3, "backoff_s": 0, "on_exit_codes": [3]}
    job_id = submit(working_client, alice, retry_body("exit 4\n", retry=policy))

    done = wait_ended(working_client, alice, job_id)
    assert (done["state"], done["exit_code"], done["attempt"], done["max_attempts"]) == ("failed", 4, 1, 3)
    assert history(done) == [(1, "failed", 4)]
    assert slurm_jobs_by_attempt(job_id, 2) == {1: {done["slurm_job_id"]}, 2: set()}


@SQLITE_ONLY
def test_a_failed_job_retried_by_hand_runs_again_and_only_ended_jobs_can_be(
    working_client: TestClient[Litestar], token_for: TokenFactory
) -> None:
    admin = token_for("sgw-retry-admin", None, ["admin"])
    create_tenant(working_client, admin, TENANT, {"alice": "alice"})
    create_tenant(working_client, admin, OTHER_TENANT, {"bob": "bob"})
    alice = token_for("alice", TENANT, ["user"])
    bob = token_for("bob", OTHER_TENANT, ["user"])
    # No policy: the first failure ends the job.
    job_id = submit(working_client, alice, retry_body(FAILS_ONCE))
    sleeper = submit(working_client, alice, retry_body("sleep 120\n", time_limit="5"))
    failed = wait_ended(working_client, alice, job_id)
    assert (failed["state"], failed["exit_code"], failed["max_attempts"]) == ("failed", 3, 1)

    # Another tenant cannot see it, so cannot retry it either.
    response = working_client.post(f"/v1/jobs/{job_id}/retry", headers=bearer_headers(bob))
    assert response.status_code == 404

    response = working_client.post(f"/v1/jobs/{job_id}/retry", headers=bearer_headers(alice))
    assert response.status_code == 202, response.text
    retried = response.json()
    assert (retried["state"], retried["attempt"], retried["slurm_job_id"]) == ("accepted", 2, None)
    assert retried["state_reason"] == "retry of attempt 1 requested by alice"
    assert history(retried) == [(1, "failed", 3), (2, "accepted", None)]

    done = wait_ended(working_client, alice, job_id, attempt=2)
    assert (done["state"], done["exit_code"]) == ("completed", 0)
    assert history(done) == [(1, "failed", 3), (2, "completed", 0)]
    assert slurm_jobs_by_attempt(job_id, 2) == {
        1: {failed["slurm_job_id"]},
        2: {done["slurm_job_id"]},
    }

    response = working_client.post(f"/v1/jobs/{job_id}/retry", headers=bearer_headers(alice))
    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["state"] == "completed"

    wait_for_job(working_client, alice, sleeper, lambda view: view["state"] == "running")
    response = working_client.post(f"/v1/jobs/{sleeper}/retry", headers=bearer_headers(alice))
    assert response.status_code == 409
    assert response.json()["state"] == "running"
    assert working_client.delete(f"/v1/jobs/{sleeper}", headers=bearer_headers(alice)).status_code == 202
    cancelled = wait_ended(working_client, alice, sleeper)
    assert (cancelled["state"], cancelled["attempt"]) == ("cancelled", 1)


def test_crash_between_sbatch_and_recording_attempt_2(gateway_process: GatewayProcess) -> None:
    with httpx.Client(base_url=gateway_process.base_url, timeout=30) as client:
        with gateway_process.running(workers=True):
            admin = gateway_process.cli("token", "--user", "sgw-retry-admin", "--role", "admin")
            create_tenant(client, admin, TENANT, {"alice": "alice"})
            alice = gateway_process.cli("token", "--user", "alice", "--tenant", TENANT, "--role", "user")
            job_id = submit(client, alice, retry_body(FAILS_ONCE))
            failed = wait_ended(client, alice, job_id)
        assert failed["state"] == "failed"

        with gateway_process.running(workers=True, pause_after_submit_s=120) as paused:
            response = client.post(f"/v1/jobs/{job_id}/retry", headers=bearer_headers(alice))
            assert response.status_code == 202, response.text
            in_slurm = _wait_for_attempt_in_slurm(job_id, 2)
            kill_hard(paused)

        stored = stored_job(gateway_process, job_id)
        assert (stored.attempt, stored.state, stored.slurm_job_id) == (2, "submitting", None)

        with gateway_process.running(workers=True):
            done = wait_for_job(
                client,
                alice,
                job_id,
                lambda view: view["state"] in ENDED,
                timeout_s=LEASE_S + 90,
            )
    assert (done["attempt"], done["state"]) == (2, "completed")
    assert done["slurm_job_id"] in in_slurm
    assert slurm_jobs_by_attempt(job_id, 2) == {1: {failed["slurm_job_id"]}, 2: {done["slurm_job_id"]}}


def _wait_for_attempt_in_slurm(job_id: str, attempt: int, timeout_s: float = 30) -> set[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = slurm_jobs_for(attempt_comment_key(job_id, attempt))
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"attempt {attempt} of {job_id} not in Slurm after {timeout_s} s")


@SQLITE_ONLY
def test_recovering_attempt_2_never_takes_attempt_1s_slurm_job(
    gateway_client: TestClient[Litestar], gateway_config: GatewayConfig, token_for: TokenFactory
) -> None:
    create_tenant(gateway_client, token_for("sgw-retry-admin", None, ["admin"]), TENANT, {"alice": "alice"})
    alice = token_for("alice", TENANT, ["user"])
    job_id = submit(gateway_client, alice, retry_body("true\n"))
    engine = create_database_engine(gateway_config.database.url)
    session_factory = sessionmaker(engine, expire_on_commit=False)
    submitter = JobSubmitter(
        session_factory,
        CliSlurmDriver(command_runner_from_config(gateway_config.slurm)),
        SubmitterSettings(
            worker_id="sgw-retry-submitter",
            lease_s=30,
            max_backoff_s=1,
            job_root=gateway_config.slurm.job_root,
        ),
    )
    try:
        assert submitter.run_once().submitted == 1
        with session_factory() as session:
            first = session.get(Job, job_id)
            assert first is not None and first.slurm_job_id is not None
            first_slurm_job_id = first.slurm_job_id
            # Attempt 2 was claimed, then its worker died before sbatch: Slurm only has attempt 1.
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(
                    attempt=2,
                    state="submitting",
                    slurm_job_id=None,
                    submit_attempts=1,
                    lease_owner="sgw-retry-dead-worker",
                    lease_expires_at=datetime.now(UTC) - timedelta(seconds=1),
                )
            )
            session.commit()
        outcome = submitter.run_once()
        with session_factory() as session:
            second = session.get(Job, job_id)
            assert second is not None
    finally:
        engine.dispose()
    assert (outcome.recovered, outcome.submitted) == (0, 1)
    assert second.slurm_job_id not in (None, first_slurm_job_id)
    assert slurm_jobs_by_attempt(job_id, 2) == {1: {first_slurm_job_id}, 2: {second.slurm_job_id}}
