"""Stage-in and stage-out end to end: real app, database, object storage (local and SeaweedFS S3)
and Slurm.

A user uploads an input, submits a job that reads it on a compute node and writes outputs to
$SGW_OUTPUT_DIR, and downloads the outputs, verified against the digests the job's own manifest
recorded, from jobs/<job id>/ in their namespace. Bad inputs are refused at submission; a
wrong digest, an output pattern that matches nothing or a full quota fail the job with a clear
reason and store nothing.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import uuid
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
    gateway_config,
    migrated_database,
    token_for,
)
from tests.integration.job_api_helpers import HttpClient, create_tenant, drain_accounts, wait_for_job
from tests.integration.storage_fixtures import storage_config

__all__ = ["gateway_config", "migrated_database", "storage_config", "token_for"]

pytestmark = [pytest.mark.integration, pytest.mark.slurm]
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
FILE_ONLY = pytest.mark.parametrize("storage_config", ["file"], indirect=True)

TENANT = "sgw_stage_a"
FAST_WORKERS = WorkerConfig(enabled=True, submit_interval_s=0.2, poll_interval_s=0.5, max_backoff_s=2)
ENDED = ("completed", "failed", "cancelled", "timeout", "node_fail", "out_of_memory", "preempted", "hung")
INPUT = b"alpha\nbeta\ngamma\n" * 1000
# Runs on a compute node as alice: reads the staged input, writes two outputs and a scratch file.
JOB_SCRIPT = (
    'test -f data/in.txt || { echo "input missing" >&2; exit 3; }\n'
    'tr a-z A-Z < data/in.txt > "$SGW_OUTPUT_DIR/result.txt"\n'
    'mkdir -p "$SGW_OUTPUT_DIR/logs"\n'
    'wc -l < data/in.txt > "$SGW_OUTPUT_DIR/logs/count.log"\n'
    'echo scratch > "$SGW_OUTPUT_DIR/scratch.tmp"\n'
)


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
def admin(token_for: TokenFactory) -> str:
    return token_for("root-admin", None, ["admin"])


@pytest.fixture
def alice(client: HttpClient, admin: str, token_for: TokenFactory) -> str:
    create_tenant(client, admin, TENANT, {"alice": "alice"})
    return token_for("alice", TENANT, ["user"])


def upload(client: HttpClient, token: str, path: str, body: bytes) -> dict[str, Any]:
    response = client.request("PUT", f"/v1/files/{path}", content=body, headers=bearer_headers(token))
    assert response.status_code in (200, 201), response.text
    return response.json()


def submit(client: HttpClient, token: str, **fields: Any) -> dict[str, Any]:
    defaults = {} if "steps" in fields else {"partition": "cpu", "time_limit": "2"}
    body = {"name": "stage", **defaults, **fields}
    response = client.request("POST", "/v1/jobs", json=body, headers=bearer_headers(token))
    assert response.status_code == 202, response.text
    return response.json()


def ended(view: dict[str, Any]) -> bool:
    return view["state"] in ENDED


def usage(client: HttpClient, token: str) -> dict[str, Any]:
    response = client.request("GET", "/v1/storage", headers=bearer_headers(token))
    assert response.status_code == 200, response.text
    return response.json()


def test_inputs_are_staged_and_verified_outputs_come_back(
    client: HttpClient, alice: str, config: GatewayConfig
) -> None:
    stored = upload(client, alice, "datasets/in.txt", INPUT)
    job = submit(
        client,
        alice,
        script=JOB_SCRIPT,
        inputs=[{"path": "data/in.txt", "source": "datasets/in.txt", "sha256": stored["sha256"]}],
        outputs=["result.txt", "logs/*.log"],
    )
    assert job["state"] == "staging_in"
    seen: list[str] = []
    view = wait_for_job(client, alice, job["id"], ended, seen_states=seen)

    assert view["state"] == "completed", view
    assert seen[0] == "staging_in"
    staging = view["staging"]
    assert staging["stage_in"] == "done"
    assert staging["inputs"] == [
        {
            "path": "data/in.txt",
            "sha256": hashlib.sha256(INPUT).hexdigest(),
            "size": len(INPUT),
            "source": "datasets/in.txt",
        }
    ]
    # Staged as the job's user, inside its working directory.
    staged = Path(job_working_dir(config.slurm.job_root, TENANT, job["id"])) / "data" / "in.txt"
    assert staged.stat().st_uid == pwd.getpwnam("alice").pw_uid
    assert staged.read_bytes() == INPUT

    expected = {"result.txt": INPUT.upper(), "logs/count.log": b"3000\n"}
    manifest = {item["path"]: item["sha256"] for item in view["outputs"]}
    assert staging["stage_out"] == "done"
    assert sorted(item["path"] for item in staging["outputs"]) == [
        f"jobs/{job['id']}/logs/count.log",
        f"jobs/{job['id']}/result.txt",
    ]
    for relative, content in expected.items():
        response = client.request(
            "GET", f"/v1/files/jobs/{job['id']}/{relative}", headers=bearer_headers(alice)
        )
        assert response.status_code == 200, response.text
        assert response.content == content
        # The digest the compute node's manifest recorded is the one storage holds.
        assert hashlib.sha256(response.content).hexdigest() == manifest[relative]
    listed = client.request(
        "GET", f"/v1/files?prefix=jobs/{job['id']}/", headers=bearer_headers(alice)
    ).json()
    # scratch.tmp matched no pattern: it stays in the working directory only.
    assert sorted(item["path"] for item in listed["items"]) == sorted(
        f"jobs/{job['id']}/{name}" for name in expected
    )
    assert usage(client, alice)["used_bytes"] == len(INPUT) + sum(len(body) for body in expected.values())


@SQLITE_ONLY
@FILE_ONLY
def test_bad_inputs_and_outputs_are_refused_at_submission(client: HttpClient, alice: str) -> None:
    upload(client, alice, "datasets/in.txt", INPUT)
    cases = [
        ({"inputs": [{"path": "x", "source": "datasets/missing.txt"}]}, "inputs[0].source"),
        ({"inputs": [{"path": "../escape", "source": "datasets/in.txt"}]}, "inputs[0].path"),
        ({"inputs": [{"path": "/etc/passwd", "source": "datasets/in.txt"}]}, "inputs[0].path"),
        ({"inputs": [{"path": "outputs/x", "source": "datasets/in.txt"}]}, "inputs[0].path"),
        ({"inputs": [{"path": "a\nb", "source": "datasets/in.txt"}]}, "inputs[0].path"),
        ({"inputs": [{"path": "x", "source": "../other_tenant/in.txt"}]}, "inputs[0].source"),
        ({"inputs": [{"path": "x", "source": "s3://somebody-else/data.bin"}]}, "inputs[0].source"),
        (
            {
                "inputs": [
                    {"path": "x", "source": "datasets/in.txt"},
                    {"path": "x", "source": "datasets/in.txt"},
                ]
            },
            "inputs[1].path",
        ),
        ({"outputs": ["../up/*"]}, "outputs[0]"),
        ({"outputs": ["/abs/path"]}, "outputs[0]"),
    ]
    for fields, field in cases:
        body = {"name": "bad", "command": ["true"], "partition": "cpu", **fields}
        response = client.request("POST", "/v1/jobs", json=body, headers=bearer_headers(alice))
        assert response.status_code == 422, (fields, response.text)
        problem = response.json()
        assert problem["errors"][0]["field"] == field, (fields, problem)
    listed = client.request("GET", "/v1/jobs", headers=bearer_headers(alice)).json()
    assert listed["items"] == []


@SQLITE_ONLY
@FILE_ONLY
def test_an_input_with_the_wrong_digest_fails_the_job_before_slurm(client: HttpClient, alice: str) -> None:
    upload(client, alice, "datasets/in.txt", INPUT)
    job = submit(
        client,
        alice,
        command=["true"],
        inputs=[{"path": "in.txt", "source": "datasets/in.txt", "sha256": "0" * 64}],
    )
    view = wait_for_job(client, alice, job["id"], ended)
    assert view["state"] == "failed"
    assert view["state_reason"].startswith("stage-in failed: input 'datasets/in.txt' has sha256")
    assert view["slurm_job_id"] is None
    assert view["staging"]["stage_in"] == "failed"


@SQLITE_ONLY
def test_outputs_that_match_nothing_or_exceed_the_quota_store_nothing(
    client: HttpClient, alice: str, admin: str
) -> None:
    before = usage(client, alice)
    missing = submit(
        client,
        alice,
        script=JOB_SCRIPT.replace("test -f data/in.txt || ", "true || "),
        outputs=["nothing-*.csv"],
    )
    view = wait_for_job(client, alice, missing["id"], ended)
    assert view["state"] == "failed"
    assert "`nothing-*.csv` matched no file" in view["state_reason"]
    assert view["staging"]["stage_out"] == "failed"

    response = client.request(
        "PATCH", f"/v1/tenants/{TENANT}", json={"storage_quota_bytes": 10}, headers=bearer_headers(admin)
    )
    assert response.status_code == 200, response.text
    big = submit(
        client,
        alice,
        script='head -c 4096 /dev/zero > "$SGW_OUTPUT_DIR/big.bin"\n',
        outputs=["*.bin"],
    )
    view = wait_for_job(client, alice, big["id"], ended)
    assert view["state"] == "failed"
    assert "exceed the storage quota" in view["state_reason"]
    after = usage(client, alice)
    assert (after["used_bytes"], after["reserved_bytes"]) == (before["used_bytes"], before["reserved_bytes"])
    listed = client.request("GET", "/v1/files?prefix=jobs/", headers=bearer_headers(alice)).json()
    assert listed["items"] == []


@SQLITE_ONLY
@pytest.mark.parametrize("storage_config", ["s3"], indirect=True)
def test_a_tenant_s3_object_is_staged_in(
    client: HttpClient, admin: str, alice: str, config: GatewayConfig, s3_storage: Any
) -> None:
    # The tenant's own bucket area: beside (not inside) the gateway's storage root.
    own_prefix = f"{s3_storage.root}-own-{uuid.uuid4().hex[:8]}/"
    body = os.urandom(300_000)
    s3_storage.fs.pipe(f"{own_prefix}raw/data.bin", body)
    try:
        response = client.request(
            "PATCH",
            f"/v1/tenants/{TENANT}",
            json={"s3_input_prefixes": [f"s3://{own_prefix}"]},
            headers=bearer_headers(admin),
        )
        assert response.status_code == 200, response.text
        digest = hashlib.sha256(body).hexdigest()
        job = submit(
            client,
            alice,
            script='sha256sum data.bin | cut -d" " -f1 > "$SGW_OUTPUT_DIR/digest.txt"\n',
            inputs=[{"path": "data.bin", "source": f"s3://{own_prefix}raw/data.bin", "sha256": digest}],
            outputs=["digest.txt"],
        )
        view = wait_for_job(client, alice, job["id"], ended)
        assert view["state"] == "completed", view
        response = client.request(
            "GET", f"/v1/files/jobs/{job['id']}/digest.txt", headers=bearer_headers(alice)
        )
        # Computed on the compute node from the staged copy.
        assert response.content.decode().strip() == digest
    finally:
        s3_storage.fs.rm(own_prefix, recursive=True)


@SQLITE_ONLY
@FILE_ONLY
def test_steps_stage_their_own_outputs(client: HttpClient, alice: str) -> None:
    upload(client, alice, "datasets/in.txt", INPUT)
    job = submit(
        client,
        alice,
        steps=[
            {
                "name": "prepare",
                "partition": "cpu",
                "time_limit": "2",
                "script": 'tr a-z A-Z < in.txt > "$SGW_OUTPUT_DIR/upper.txt"\n',
                "inputs": [{"path": "in.txt", "source": "datasets/in.txt"}],
                "outputs": ["upper.txt"],
            },
            {
                "name": "count",
                "after": ["prepare"],
                "partition": "cpu",
                "time_limit": "2",
                "script": 'wc -c < "$SGW_OUTPUTS_DIR/prepare/upper.txt" > "$SGW_OUTPUT_DIR/bytes.txt"\n',
                "outputs": ["bytes.txt"],
            },
        ],
    )
    view = wait_for_job(client, alice, job["id"], ended)
    assert view["state"] == "completed", view
    prepare, count = view["steps"]
    assert prepare["staging"]["stage_in"] == "done"
    assert (count["staging"]["stage_in"], count["staging"]["stage_out"]) == (None, "done")
    assert [item["path"] for item in prepare["staging"]["outputs"]] == [f"jobs/{job['id']}/prepare/upper.txt"]
    response = client.request(
        "GET", f"/v1/files/jobs/{job['id']}/count/bytes.txt", headers=bearer_headers(alice)
    )
    assert response.content.decode().strip() == str(len(INPUT))
