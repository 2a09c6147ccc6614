"""Exactly-once submission: kill -9 the gateway at the two dangerous moments, and race submitters.

(a) between acceptance and submission: the first process runs with workers off, so the job is
    only `accepted` when it dies; the restarted gateway submits it once.
(b) between sbatch and recording the Slurm id: SLURM_GATEWAY_TEST_PAUSE_AFTER_SUBMIT_S holds
    the submitter right after sbatch; the test kills the process once Slurm has the job. After
    restart the lease expires, find_submitted finds the job by its comment, and it is recorded,
    never submitted again.
(c) two submitters claiming from one database (SQLite and PostgreSQL) never double-submit.
(d) a job waiting for a free sbatch slot whose lease was taken meanwhile is not submitted.

Every check counts the Slurm jobs carrying the gateway id in their comment (squeue + sacct).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from gateway.config import GatewayConfig
from gateway.database import create_database_engine
from gateway.job_submitter import JobSubmitter, SubmitterSettings
from gateway.slurm_driver import command_runner_from_config
from gateway.storage_models import Job
from slurm.batch_job import BatchJob
from slurm.cli_driver import CliSlurmDriver
from slurm.command_runner import CommandRunner
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
    TENANT_A,
    create_tenant,
    idle_test_accounts,
    job_body,
    slurm_jobs_for,
    wait_for_job,
)

__all__ = ["gateway_client", "gateway_config", "idle_test_accounts", "migrated_database", "token_for"]

pytestmark = [pytest.mark.integration, pytest.mark.slurm]


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[GatewayProcess]:
    """A migrated gateway process over SQLite in tmp_path, started by the test as needed."""
    with migrated_gateway_process(tmp_path) as gateway:
        yield gateway


def _provision(gateway: GatewayProcess, client: httpx.Client) -> str:
    admin = gateway.cli("token", "--user", "sgw-jobs-admin", "--role", "admin")
    create_tenant(client, admin, TENANT_A, {"alice": "alice"})
    return gateway.cli("token", "--user", "alice", "--tenant", TENANT_A, "--role", "user")


def test_crash_between_acceptance_and_submission(gateway_process: GatewayProcess) -> None:
    with httpx.Client(base_url=gateway_process.base_url, timeout=30) as client:
        with gateway_process.running(workers=False) as first:
            alice = _provision(gateway_process, client)
            response = client.post("/v1/jobs", json=job_body(), headers=bearer_headers(alice))
            assert response.status_code == 202, response.text
            job_id = response.json()["id"]
            kill_hard(first)
        assert slurm_jobs_for(job_id) == set()

        with gateway_process.running(workers=True):
            view = wait_for_job(client, alice, job_id, lambda view: view["slurm_job_id"] is not None)
    assert slurm_jobs_for(job_id) == {view["slurm_job_id"]}


def test_crash_between_sbatch_and_recording_the_slurm_id(gateway_process: GatewayProcess) -> None:
    with httpx.Client(base_url=gateway_process.base_url, timeout=30) as client:
        with gateway_process.running(workers=True, pause_after_submit_s=120) as first:
            alice = _provision(gateway_process, client)
            job_id = client.post("/v1/jobs", json=job_body(), headers=bearer_headers(alice)).json()["id"]
            in_slurm = _wait_for_slurm_jobs(job_id)
            kill_hard(first)

        stored = stored_job(gateway_process, job_id)
        assert (stored.state, stored.slurm_job_id) == ("submitting", None)

        with gateway_process.running(workers=True):
            view = wait_for_job(
                client, alice, job_id, lambda view: view["slurm_job_id"] is not None, timeout_s=LEASE_S + 60
            )
    assert view["slurm_job_id"] in in_slurm
    assert slurm_jobs_for(job_id) == {view["slurm_job_id"]}


def test_two_submitters_on_one_database_submit_each_job_once(
    gateway_client: TestClient[Litestar], gateway_config: GatewayConfig, token_for: TokenFactory
) -> None:
    create_tenant(gateway_client, token_for("sgw-jobs-admin", None, ["admin"]), TENANT_A, {"alice": "alice"})
    alice = token_for("alice", TENANT_A, ["user"])
    job_ids = [
        gateway_client.post(
            "/v1/jobs", json=job_body(name=f"race-{index}"), headers=bearer_headers(alice)
        ).json()["id"]
        for index in range(6)
    ]
    engine = create_database_engine(gateway_config.database.url)
    session_factory = sessionmaker(engine, expire_on_commit=False)
    driver = CliSlurmDriver(command_runner_from_config(gateway_config.slurm))
    submitters = [
        JobSubmitter(
            session_factory,
            driver,
            SubmitterSettings(
                worker_id=f"race-{index}",
                lease_s=30,
                max_backoff_s=1,
                job_root=gateway_config.slurm.job_root,
                batch_size=2,
            ),
        )
        for index in range(2)
    ]
    start = threading.Barrier(len(submitters))

    def drain(submitter: JobSubmitter) -> None:
        start.wait()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and submitter.run_once().handled:
            pass

    threads = [threading.Thread(target=drain, args=(submitter,)) for submitter in submitters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        with session_factory() as session:
            rows = session.execute(select(Job.id, Job.slurm_job_id).where(Job.id.in_(job_ids))).all()
        recorded = {job_id: slurm_job_id for job_id, slurm_job_id in rows}
    finally:
        engine.dispose()
    assert all(recorded[job_id] for job_id in job_ids), recorded
    assert {job_id: slurm_jobs_for(job_id) for job_id in job_ids} == {
        job_id: {recorded[job_id]} for job_id in job_ids
    }


class _LeaseTakenOverDuringFirstSubmit(CliSlurmDriver):
    """The real CLI driver; as its first sbatch starts, another worker takes ``victim``'s lease."""

    def __init__(self, runner: CommandRunner, session_factory: sessionmaker[Session], victim: str) -> None:
        super().__init__(runner)
        self._session_factory = session_factory
        self._victim: str | None = victim

    def submit(self, job: BatchJob) -> str:
        if self._victim is not None:
            with self._session_factory() as session:
                session.execute(
                    update(Job).where(Job.id == self._victim).values(lease_owner="sgw-jobs-thief")
                )
                session.commit()
            self._victim = None
        return super().submit(job)


def test_a_job_whose_lease_is_lost_while_waiting_for_a_slot_is_never_submitted(
    gateway_client: TestClient[Litestar], gateway_config: GatewayConfig, token_for: TokenFactory
) -> None:
    create_tenant(gateway_client, token_for("sgw-jobs-admin", None, ["admin"]), TENANT_A, {"alice": "alice"})
    alice = token_for("alice", TENANT_A, ["user"])
    first, second = (
        gateway_client.post("/v1/jobs", json=job_body(name=name), headers=bearer_headers(alice)).json()["id"]
        for name in ("slot-first", "slot-second")
    )
    engine = create_database_engine(gateway_config.database.url)
    session_factory = sessionmaker(engine, expire_on_commit=False)
    changed: list[str] = []
    submitter = JobSubmitter(
        session_factory,
        _LeaseTakenOverDuringFirstSubmit(
            command_runner_from_config(gateway_config.slurm), session_factory, second
        ),
        SubmitterSettings(
            worker_id="sgw-jobs-one-slot",
            lease_s=30,
            max_backoff_s=1,
            job_root=gateway_config.slurm.job_root,
            batch_size=2,
            # One slot: the second job waits for the first sbatch, then must renew its lease.
            concurrency=1,
        ),
        on_jobs_changed=changed.extend,
    )
    try:
        outcome = submitter.run_once()
        with session_factory() as session:
            rows = session.execute(
                select(Job.id, Job.state, Job.slurm_job_id, Job.lease_owner).where(
                    Job.id.in_([first, second])
                )
            ).all()
    finally:
        engine.dispose()
    stored = {row.id: (row.state, row.slurm_job_id, row.lease_owner) for row in rows}
    assert outcome.submitted == 1
    assert stored[second] == ("submitting", None, "sgw-jobs-thief")
    assert stored[first][0] == "pending"
    assert slurm_jobs_for(first) == {stored[first][1]}
    assert slurm_jobs_for(second) == set()
    # Both claims were announced, then the one recorded outcome.
    assert changed == [first, second, first]


def _wait_for_slurm_jobs(job_id: str, timeout_s: float = 30) -> set[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = slurm_jobs_for(job_id)
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no Slurm job with comment sgw:{job_id} after {timeout_s} s")
