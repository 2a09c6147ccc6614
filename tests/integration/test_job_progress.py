"""Progress reported from inside a job shows in GET /v1/jobs/{id}: real app, database and Slurm.

The job runs on a compute node as alice and reports through the wrapper's `sgw-progress`
command, then by appending a JSON line to $SGW_PROGRESS_FILE from Python; the reconciler reads
the file's last line each cycle and the job's view shows the latest report, while the job runs
and after it ended.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.config import GatewayConfig, WorkerConfig
from tests.integration.gateway_fixtures import (
    TokenFactory,
    bearer_headers,
    gateway_config,
    migrated_database,
    token_for,
)
from tests.integration.job_api_helpers import HttpClient, create_tenant, drain_accounts, wait_for_job
from tests.integration.storage_fixtures import storage_config

__all__ = ["gateway_config", "migrated_database", "storage_config", "token_for"]

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

TENANT = "sgw_progress_a"
FAST_WORKERS = WorkerConfig(enabled=True, submit_interval_s=0.2, poll_interval_s=0.5, max_backoff_s=2)
ENDED = ("completed", "failed", "cancelled", "timeout", "node_fail", "out_of_memory", "preempted", "hung")
JOB_SCRIPT = """
sgw-progress 0.5 "half" loss=1.5
sleep 8
python3 -c 'import json, os
report = {"fraction": 1.0, "message": "done", "metrics": {"loss": 0.25, "epochs": 10}}
open(os.environ["SGW_PROGRESS_FILE"], "a").write(json.dumps(report) + "\\n")'
"""


@pytest.fixture(autouse=True)
def idle_accounts() -> Iterator[None]:
    yield
    drain_accounts([TENANT])


@pytest.fixture
def config(gateway_config: GatewayConfig) -> GatewayConfig:
    return msgspec.structs.replace(gateway_config, workers=FAST_WORKERS)


@pytest.fixture
def client(config: GatewayConfig, migrated_database: str) -> Iterator[TestClient[Litestar]]:
    with TestClient(create_app(config)) as client:
        yield client


@pytest.fixture
def alice(client: HttpClient, token_for: TokenFactory) -> str:
    create_tenant(client, token_for("root-admin", None, ["admin"]), TENANT, {"alice": "alice"})
    return token_for("alice", TENANT, ["user"])


def submit(client: HttpClient, token: str, **fields: Any) -> dict[str, Any]:
    body = {"name": "progress", "partition": "cpu", "time_limit": "2", **fields}
    response = client.request("POST", "/v1/jobs", json=body, headers=bearer_headers(token))
    assert response.status_code == 202, response.text
    return response.json()


def without_time(progress: dict[str, Any]) -> dict[str, Any]:
    datetime.fromisoformat(progress["reported_at"])
    return {key: value for key, value in progress.items() if key != "reported_at"}


def test_progress_from_inside_the_job_shows_while_it_runs_and_after(client: HttpClient, alice: str) -> None:
    job = submit(client, alice, script=JOB_SCRIPT)
    assert job["progress"] is None

    running = wait_for_job(
        client, alice, job["id"], lambda view: view["progress"] is not None or view["state"] in ENDED
    )
    assert running["state"] == "running", running
    first = running["progress"]
    assert without_time(first) == {"fraction": 0.5, "message": "half", "metrics": {"loss": 1.5}}

    view = wait_for_job(client, alice, job["id"], lambda view: view["state"] in ENDED)
    assert view["state"] == "completed", view
    last = view["progress"]
    assert without_time(last) == {
        "fraction": 1.0,
        "message": "done",
        "metrics": {"loss": 0.25, "epochs": 10.0},
    }
    assert last["reported_at"] > first["reported_at"]
