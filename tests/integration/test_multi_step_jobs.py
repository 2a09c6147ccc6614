"""Multi-step jobs, checkpoints and hang detection end to end: real app, database and Slurm.

Steps run as Slurm jobs chained with --dependency=afterok; each publishes its outputs atomically
under outputs/<step>; the job's state is derived from its steps'. A failed middle step leaves
its dependents unrun; a retry by hand re-runs only it and its dependents (the completed first
step, whose outputs still verify, is skipped) unless the first step's outputs were tampered
with. An automatic retry of a middle step resubmits the dependent that waited for the dead
attempt. A step that stops beating is cancelled as hung and retried by its policy.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    gateway_client,
    gateway_config,
    migrated_database,
    token_for,
)
from tests.integration.job_api_helpers import HttpClient, create_tenant, drain_accounts, wait_for_job

__all__ = ["gateway_client", "gateway_config", "migrated_database", "token_for"]

pytestmark = [pytest.mark.integration, pytest.mark.slurm]
# The chain and the retry by hand run on both databases (claims with dependencies are SQL);
# the rest on SQLite only, to keep the suite short.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

TENANT = "sgw_steps_a"
FAST_WORKERS = WorkerConfig(
    enabled=True,
    submit_interval_s=0.2,
    poll_interval_s=0.5,
    max_backoff_s=2,
    submit_lease_s=10,
    heartbeat_stale_s=10,
)
ENDED = ("completed", "failed", "cancelled", "timeout", "node_fail", "out_of_memory", "preempted", "hung")
PREPARE = 'echo "raw data" > "$SGW_OUTPUT_DIR/data.txt"\n'
# Reads the first step's published output; fails once (marker in the shared working dir).
TRAIN_FAILS_ONCE = (
    'tr a-z A-Z < "$SGW_OUTPUTS_DIR/prepare/data.txt" > "$SGW_OUTPUT_DIR/model.txt"\n'
    "if [ ! -e train-failed-once ]; then touch train-failed-once; exit {code}; fi\n"
)
REPORT = 'cp "$SGW_OUTPUTS_DIR/train/model.txt" "$SGW_OUTPUT_DIR/report.txt"\n'


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
def alice(client: TestClient[Litestar], token_for: TokenFactory) -> str:
    create_tenant(client, token_for("sgw-steps-admin", None, ["admin"]), TENANT, {"alice": "alice"})
    return token_for("alice", TENANT, ["user"])


def step(name: str, script: str, *after: str, **fields: object) -> dict[str, object]:
    return {
        "name": name,
        "script": script,
        "after": list(after),
        "partition": "cpu",
        "time_limit": "2",
        **fields,
    }


def pipeline(train_exit: int, **train_fields: object) -> dict[str, object]:
    return {
        "name": "sgw-pipeline",
        "labels": {"suite": "steps"},
        "steps": [
            step("prepare", PREPARE),
            step("train", TRAIN_FAILS_ONCE.format(code=train_exit), "prepare", **train_fields),
            step("report", REPORT, "train"),
        ],
    }


def submit(client: HttpClient, token: str, body: dict[str, object]) -> dict[str, Any]:
    response = client.request("POST", "/v1/jobs", json=body, headers=bearer_headers(token))
    assert response.status_code == 202, response.text
    return dict(response.json())


def wait_ended(client: HttpClient, token: str, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
    return wait_for_job(client, token, job_id, lambda view: view["state"] in ENDED, timeout_s=timeout_s)


def steps_of(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in view["steps"]}


def attempts(entry: dict[str, Any]) -> list[tuple[str, int | None]]:
    return [(attempt["state"], attempt["exit_code"]) for attempt in entry["attempts"]]


def working_dir(config: GatewayConfig, view: dict[str, Any]) -> Path:
    return Path(job_working_dir(config.slurm.job_root, view["tenant_id"], view["id"]))


def published(config: GatewayConfig, view: dict[str, Any], step_name: str, file: str) -> Path:
    return working_dir(config, view) / "outputs" / step_name / file


def test_steps_run_in_order_and_each_publishes_checksummed_outputs(
    client: TestClient[Litestar], alice: str, config: GatewayConfig
) -> None:
    accepted = submit(client, alice, pipeline(train_exit=0))
    assert accepted["state"] == "accepted"
    assert [entry["name"] for entry in accepted["steps"]] == ["prepare", "train", "report"]
    assert steps_of(accepted)["train"]["after"] == ["prepare"]

    done = wait_ended(client, alice, accepted["id"])
    steps = steps_of(done)
    assert done["state"] == "completed", done
    assert done["state_reason"] is None
    assert {name: entry["state"] for name, entry in steps.items()} == dict.fromkeys(steps, "completed")
    # afterok: each step started only once the one it runs after had ended.
    assert steps["prepare"]["ended_at"] <= steps["train"]["started_at"]
    assert steps["train"]["ended_at"] <= steps["report"]["started_at"]
    assert len({entry["slurm_job_id"] for entry in steps.values()}) == 3

    report = published(config, done, "report", "report.txt")
    assert report.read_text() == "RAW DATA\n"
    [recorded] = steps["report"]["outputs"]
    assert recorded == {
        "path": "report.txt",
        "sha256": hashlib.sha256(b"RAW DATA\n").hexdigest(),
        "size": len("RAW DATA\n"),
    }
    assert os.readlink(report.parent) == "../.attempts/report/a1/out"
    listed = client.get("/v1/jobs?label=suite=steps", headers=bearer_headers(alice)).json()["items"]
    # Steps show inside their job only, never as jobs of their own.
    assert [item["id"] for item in listed] == [done["id"]]


def test_a_failed_middle_step_is_retried_by_hand_with_only_its_dependents(
    client: TestClient[Litestar], alice: str, config: GatewayConfig
) -> None:
    accepted = submit(client, alice, pipeline(train_exit=5))
    failed = wait_ended(client, alice, accepted["id"])
    steps = steps_of(failed)
    assert (failed["state"], failed["exit_code"]) == ("failed", 5), failed
    assert failed["state_reason"].startswith("step train ended failed (exit code 5)")
    assert steps["prepare"]["state"] == "completed"
    assert (steps["report"]["state"], steps["report"]["state_reason"]) == (
        "cancelled",
        "not run: step train ended failed",
    )
    # A failed attempt publishes nothing.
    assert not (working_dir(config, failed) / "outputs" / "train").exists()

    retried = client.post(f"/v1/jobs/{failed['id']}/retry", headers=bearer_headers(alice))
    assert retried.status_code == 202, retried.text
    assert "re-running report, train; skipping prepare (outputs verified)" in retried.json()["state_reason"]
    done = wait_ended(client, alice, failed["id"])
    steps = steps_of(done)
    assert done["state"] == "completed", done
    assert attempts(steps["prepare"]) == [("completed", 0)]
    assert attempts(steps["train"]) == [("failed", 5), ("completed", 0)]
    assert attempts(steps["report"]) == [("cancelled", None), ("completed", 0)]
    assert published(config, done, "report", "report.txt").read_text() == "RAW DATA\n"


@SQLITE_ONLY
def test_a_retry_reruns_a_completed_step_whose_outputs_no_longer_verify(
    client: TestClient[Litestar], alice: str, config: GatewayConfig
) -> None:
    failed = wait_ended(client, alice, submit(client, alice, pipeline(train_exit=5))["id"])
    assert failed["state"] == "failed"
    published(config, failed, "prepare", "data.txt").write_text("tampered\n")

    retried = client.post(f"/v1/jobs/{failed['id']}/retry", headers=bearer_headers(alice))
    assert retried.status_code == 202, retried.text
    assert "re-running prepare, report, train" in retried.json()["state_reason"]
    done = wait_ended(client, alice, failed["id"])
    steps = steps_of(done)
    assert done["state"] == "completed", done
    assert attempts(steps["prepare"]) == [("completed", 0), ("completed", 0)]
    assert published(config, done, "prepare", "data.txt").read_text() == "raw data\n"
    assert os.readlink(published(config, done, "prepare", "data.txt").parent) == "../.attempts/prepare/a2/out"


@SQLITE_ONLY
def test_an_automatic_retry_of_a_middle_step_resubmits_the_step_waiting_for_it(
    client: TestClient[Litestar], alice: str
) -> None:
    policy = {"max_attempts": 2, "backoff_s": 1, "on_exit_codes": [4]}
    done = wait_ended(client, alice, submit(client, alice, pipeline(train_exit=4, retry=policy))["id"])
    steps = steps_of(done)
    assert done["state"] == "completed", done
    assert attempts(steps["train"]) == [("failed", 4), ("completed", 0)]
    # report waited (afterok) for train's dead attempt 1; it was resubmitted after attempt 2.
    report_attempts = steps["report"]["attempts"]
    assert [(entry["state"], entry["started_at"]) for entry in report_attempts[:1]] == [("cancelled", None)]
    assert report_attempts[0]["state_reason"].startswith("resubmitted: step train was retried")
    assert report_attempts[1]["state"] == "completed"
    assert steps["report"]["max_attempts"] == 1


@SQLITE_ONLY
def test_a_program_that_stops_beating_is_cancelled_as_hung_and_retried(
    client: TestClient[Litestar], alice: str
) -> None:
    # Attempt 1 beats once and hangs; attempt 2 beats and finishes.
    script = (
        'touch "$SGW_HEARTBEAT_FILE"\n'
        "if [ ! -e hung-once ]; then touch hung-once; sleep 300; fi\n"
        'touch "$SGW_HEARTBEAT_FILE"\n'
    )
    body = {
        "name": "sgw-hang",
        "script": script,
        "partition": "cpu",
        "time_limit": "3",
        "heartbeat": {"source": "program", "stale_after_s": 5},
        "retry": {"max_attempts": 2, "backoff_s": 0, "on_states": ["HUNG"]},
    }
    job_id = submit(client, alice, body)["id"]
    done = wait_for_job(
        client, alice, job_id, lambda view: view["attempt"] == 2 and view["state"] in ENDED, timeout_s=120
    )
    assert done["state"] == "completed", done
    first, second = done["attempts"]
    assert first["state"] == "hung"
    assert first["state_reason"] == "no heartbeat for over 5 s; cancelled by the gateway"
    assert second["state"] == "completed"


@SQLITE_ONLY
def test_a_job_array_is_reported_task_by_task(client: TestClient[Litestar], alice: str) -> None:
    body = {
        "name": "sgw-array",
        "script": 'if [ "$SLURM_ARRAY_TASK_ID" = 2 ]; then exit 3; fi\n',
        "partition": "cpu",
        "time_limit": "1",
        "array": "0-3",
    }
    done = wait_ended(client, alice, submit(client, alice, body)["id"])
    assert done["state"] == "failed"
    tasks = {task["task_id"]: (task["state"], task["exit_code"]) for task in done["array_tasks"]}
    assert tasks == {0: ("completed", 0), 1: ("completed", 0), 2: ("failed", 3), 3: ("completed", 0)}


@SQLITE_ONLY
def test_cancelling_a_job_cancels_every_step_that_has_not_ended(
    client: TestClient[Litestar], alice: str
) -> None:
    body = pipeline(train_exit=0)
    body["steps"][0]["script"] = "sleep 120\n"  # type: ignore[index]
    job_id = submit(client, alice, body)["id"]
    wait_for_job(client, alice, job_id, lambda view: steps_of(view)["prepare"]["state"] == "running")
    cancelled = client.delete(f"/v1/jobs/{job_id}", headers=bearer_headers(alice))
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["desired_state"] == "cancel"
    done = wait_ended(client, alice, job_id)
    assert (done["state"], done["state_reason"]) == ("cancelled", "cancelled; 0 of 3 steps completed")
    assert {name: entry["state"] for name, entry in steps_of(done).items()} == dict.fromkeys(
        ("prepare", "train", "report"), "cancelled"
    )
