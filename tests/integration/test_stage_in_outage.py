"""S3 going away while a job's inputs wait to be staged: the job waits, says why, and runs once
S3 is back (a private SeaweedFS is killed and restarted; the shared one is never touched)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.config import GatewayConfig, StorageConfig, WorkerConfig
from tests.integration.gateway_fixtures import (
    TokenFactory,
    bearer_headers,
    gateway_config,
    migrated_database,
    token_for,
)
from tests.integration.job_api_helpers import create_tenant, drain_accounts, wait_for_job
from tests.integration.private_seaweed import BUCKET, PrivateSeaweed, kill_seaweed, start_seaweed
from tests.integration.storage_fixtures import s3_storage_config

__all__ = ["gateway_config", "migrated_database", "token_for"]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slurm,
    pytest.mark.s3,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]

TENANT = "sgw_stage_outage"
WORKERS = WorkerConfig(enabled=True, submit_interval_s=0.2, poll_interval_s=0.5, max_backoff_s=2)
INPUT = b"staged after the outage\n" * 4096


@pytest.fixture(autouse=True)
def idle_accounts() -> Iterator[None]:
    yield
    drain_accounts([TENANT])


@pytest.fixture
def seaweed(tmp_path: Path) -> Iterator[list[PrivateSeaweed]]:
    """The running instance, in a list so the test can swap in the restarted one."""
    running = [start_seaweed(tmp_path / "seaweed")]
    yield running
    kill_seaweed(running[-1])


@pytest.fixture
def storage_config(seaweed: list[PrivateSeaweed], tmp_path: Path) -> StorageConfig:
    return s3_storage_config(f"{BUCKET}/gw-{uuid.uuid4().hex[:8]}", seaweed[0], tmp_path)


@pytest.fixture
def client(gateway_config: GatewayConfig, migrated_database: str) -> Iterator[TestClient[Litestar]]:
    with TestClient(create_app(msgspec.structs.replace(gateway_config, workers=WORKERS))) as client:
        yield client


def test_stage_in_waits_out_a_storage_outage_and_then_runs_the_job(
    client: TestClient[Litestar], seaweed: list[PrivateSeaweed], token_for: TokenFactory, tmp_path: Path
) -> None:
    create_tenant(client, token_for("root-admin", None, ["admin"]), TENANT, {"alice": "alice"})
    alice = token_for("alice", TENANT, ["user"])
    headers = bearer_headers(alice)
    assert client.put("/v1/files/in.txt", content=INPUT, headers=headers).status_code == 201

    kill_seaweed(seaweed[0])
    body = {
        "name": "after-outage",
        "partition": "cpu",
        "time_limit": "2",
        "script": 'sha256sum in.txt | cut -d" " -f1 > "$SGW_OUTPUT_DIR/digest.txt"\n',
        "inputs": [{"path": "in.txt", "source": "in.txt"}],
        "outputs": ["digest.txt"],
    }
    response = client.post("/v1/jobs", json=body, headers=headers)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]

    def waiting_for_storage(view: dict[str, Any]) -> bool:
        return (view["staging"]["error"] or "").startswith("waiting for object storage")

    view = wait_for_job(client, alice, job_id, waiting_for_storage, timeout_s=60)
    assert view["state"] == "staging_in"
    assert view["slurm_job_id"] is None

    seaweed.append(start_seaweed(tmp_path / "seaweed", ports=seaweed[0].ports))
    view = wait_for_job(
        client, alice, job_id, lambda view: view["state"] in ("completed", "failed"), timeout_s=120
    )
    assert view["state"] == "completed", view
    assert view["staging"]["error"] is None
    staged = client.get(f"/v1/files/jobs/{job_id}/digest.txt", headers=headers)
    assert staged.text.strip() == hashlib.sha256(INPUT).hexdigest()
