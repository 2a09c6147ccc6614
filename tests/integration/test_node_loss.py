"""A node dies under a running 2-node step: the gateway runs attempt 2 elsewhere, outputs once.

The node is killed for real (its slurmd and every process of its UTS namespace, SIGKILL). Either
Slurm notices within SlurmdTimeout and ends the step NODE_FAIL, or the gateway sees the step's
heartbeat go stale first and cancels it as hung; the step's retry policy retries both, and
attempt 2 must not land on the dead node. Attempt 1 had written a partial output: it is never
published, so the job ends with exactly one set of outputs, attempt 2's. The step before it is
not run again. The node is always restored afterwards.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.config import GatewayConfig, WorkerConfig
from gateway.job_admission import job_working_dir
from tests.integration.gateway_fixtures import (
    TokenFactory,
    bearer_headers,
    gateway_config,
    migrated_database,
    token_for,
)
from tests.integration.job_api_helpers import create_tenant, drain_accounts, wait_for_job
from tests.integration.node_loss import job_nodes, kill_node, restore_node

__all__ = ["gateway_config", "migrated_database", "token_for"]

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

TENANT = "sgw_nodeloss_a"
FAST_WORKERS = WorkerConfig(
    enabled=True, submit_interval_s=0.2, poll_interval_s=0.5, max_backoff_s=2, submit_lease_s=10
)
# Attempt 1 writes a partial output, leaves a marker in the job's directory (shared by every
# attempt) and outlives the test; attempt 2 records where it ran, writes its output and ends.
SLEEPS_ON_ATTEMPT_1 = (
    'if [ -e attempt1 ]; then scontrol show hostnames "$SLURM_JOB_NODELIST" > attempt2.nodes\n'
    '  cp "$SGW_OUTPUTS_DIR/prepare/input.txt" "$SGW_OUTPUT_DIR/result.txt"; exit 0; fi\n'
    'echo partial > "$SGW_OUTPUT_DIR/partial.txt"\n'
    "touch attempt1\n"
    "sleep 120\n"
)
NODE_FAIL_RETRY = {"max_attempts": 2, "backoff_s": 1, "on_states": ["NODE_FAIL", "HUNG"]}
ENDED = ("completed", "failed", "cancelled", "timeout", "node_fail", "out_of_memory", "preempted", "hung")


@pytest.fixture(autouse=True)
def idle_node_loss_account() -> Iterator[None]:
    """Leave this module's Slurm account without active jobs."""
    yield
    drain_accounts([TENANT])


@pytest.fixture
def working_client(gateway_config: GatewayConfig, migrated_database: str) -> Iterator[TestClient[Litestar]]:
    """The app with its submitter and reconciler running at test speed."""
    config = msgspec.structs.replace(gateway_config, workers=FAST_WORKERS)
    with TestClient(create_app(config)) as client:
        yield client


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_job_that_loses_a_node_is_retried_on_healthy_nodes_and_completes(
    working_client: TestClient[Litestar], gateway_config: GatewayConfig, token_for: TokenFactory
) -> None:
    create_tenant(
        working_client, token_for("sgw-nodeloss-admin", None, ["admin"]), TENANT, {"alice": "alice"}
    )
    alice = token_for("alice", TENANT, ["user"])
    body = {
        "name": "sgw-nodeloss-test",
        "steps": [
            {"name": "prepare", "script": 'echo input > "$SGW_OUTPUT_DIR/input.txt"\n', "partition": "cpu"},
            {
                "name": "train",
                "after": ["prepare"],
                "script": SLEEPS_ON_ATTEMPT_1,
                "partition": "gpu",
                "nodes": 2,
                "time_limit": "5",
                "retry": NODE_FAIL_RETRY,
            },
        ],
    }
    response = working_client.post("/v1/jobs", json=body, headers=bearer_headers(alice))
    assert response.status_code == 202, response.text
    job_id = str(response.json()["id"])
    working_dir = Path(job_working_dir(gateway_config.slurm.job_root, TENANT, job_id))

    running = wait_for_job(
        working_client, alice, job_id, lambda view: view["steps"][1]["state"] == "running", timeout_s=60
    )
    first_slurm_job = running["steps"][1]["slurm_job_id"]
    nodes = job_nodes(first_slurm_job)
    assert len(nodes) == 2, nodes
    # The batch host: the script dies with it, not only a remote share of the allocation.
    lost = nodes[0]
    _wait_for_file(working_dir / "attempt1")
    try:
        assert kill_node(lost)
        done = wait_for_job(
            working_client,
            alice,
            job_id,
            lambda view: (
                view["state"] in ENDED
                or (view["steps"][1]["attempt"] == 1 and view["steps"][1]["state"] == "pending")
            ),
            timeout_s=75,
        )
    finally:
        restore_node(lost)
    prepare, train = done["steps"]

    # Slurm's JobRequeue=1 puts a NODE_FAIL batch job back in the queue under the same Slurm id,
    # unless it was submitted with --no-requeue: then the retry policy never sees the failure.
    assert (train["attempt"], train["state"]) != (1, "pending"), f"Slurm requeued attempt 1 itself: {done}"

    assert (done["state"], done["exit_code"]) == ("completed", 0), done
    assert [entry["state"] for entry in prepare["attempts"]] == ["completed"]
    first, second = train["attempts"]
    assert (first["state"], second["state"]) in {("node_fail", "completed"), ("hung", "completed")}, train
    assert first["slurm_job_id"] == first_slurm_job != second["slurm_job_id"]
    second_nodes = (working_dir / "attempt2.nodes").read_text().split()
    assert len(second_nodes) == 2 and lost not in second_nodes, second_nodes
    # Exactly one set of outputs: attempt 2's, published; attempt 1's partial file never was.
    assert [output["path"] for output in train["outputs"]] == ["result.txt"]
    assert sorted(path.name for path in (working_dir / "outputs" / "train").iterdir()) == ["result.txt"]
    assert os.readlink(working_dir / "outputs" / "train") == "../.attempts/train/a2/out"
    assert not (working_dir / ".attempts" / "train" / "a1" / "manifest.sha256").exists()


def _wait_for_file(path: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear in {timeout_s} s")
        time.sleep(0.1)
